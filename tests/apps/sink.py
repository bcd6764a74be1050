"""A stand-in pycable broadcast endpoint for in-process tests of applications: it records every
POST (path, headers, JSON body) and answers 201, so a test can check what an app broadcast."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any


class BroadcastSink:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with sink._cond:
                    sink.posts.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                    sink._cond.notify_all()
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/_broadcast"

    def messages(self) -> list[dict[str, Any]]:
        """Every broadcast received so far, batches flattened, as ``{"stream", "data"}``."""
        out: list[dict[str, Any]] = []
        with self._cond:
            for post in self.posts:
                body = post["body"]
                out.extend(body if isinstance(body, list) else [body])
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
