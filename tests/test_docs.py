"""Docs stay true: the README's configuration table is generated from the Config fields, the
docs cite nothing outside the repository, every shell command in them runs as written, and
the README's JavaScript clients work against a real server."""

import http.client
import os
import re
import signal
import subprocess
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.server import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_is_current():
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from config_table import table

    readme = (ROOT / "README.md").read_text()
    start, end = readme.index("<!-- config:start -->"), readme.index("<!-- config:end -->")
    assert readme[start:end].strip().removeprefix("<!-- config:start -->").strip() == table().strip(), (
        "README configuration table is stale: regenerate with python scripts/config_table.py"
    )


def test_readme_setup_is_make_serve_and_make_test():
    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_python_application_runs():
    """The README's "Python applications" example: exec it, then answer a Connect, a
    subscribe and a perform with it (no network: the broadcast goes to a recorder)."""
    import importlib
    import json
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python applications") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    app = namespace["app"]

    sent: list[bytes] = []

    class Recorder:
        def publish(self, payload: bytes) -> None:
            sent.append(payload)

        async def apublish(self, payload: bytes) -> None:
            sent.append(payload)

    broadcasting = importlib.import_module("pycable.sdk.broadcast")
    previous, broadcasting._default = broadcasting._default, Recorder()
    try:

        def call(method: str, body: dict) -> dict:
            coro = app.handle(method, body, "sid1")
            try:
                coro.send(None)
            except StopIteration as stop:
                return stop.value
            raise AssertionError("the example waited on something")

        env = {"url": "http://h/cable", "headers": {"cookie": "user=ann"}}
        assert call("connect", {"env": env})["identifiers"] == '{"user":"ann"}'
        ident = json.dumps({"channel": "ChatChannel", "room": "1"})
        sub = {"command": "subscribe", "identifier": ident, "connection_identifiers": '{"user":"ann"}', "env": env}
        assert call("command", sub)["streams"] == ["chat/1"]
        data = json.dumps({"action": "speak", "text": "hi"})
        assert call("command", {**sub, "command": "message", "data": data})["status"] == 1
        namespace["notify"]("1", "sync")
        assert [json.loads(p) for p in sent] == [
            {"stream": "chat/1", "data": '{"user":"ann","text":"hi"}'},
            {"stream": "chat/1", "data": '{"text":"sync"}'},
        ]
    finally:
        broadcasting._default = previous



# -- the docs stand alone ----------------------------------------------------------------------

#: References to material outside the repository (the docs must stand alone).
OUTSIDE = re.compile(r"\.\./shared|shared/spec|spec §|§\s*\d|preface decision|style rule", re.IGNORECASE)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_docs_cite_nothing_outside_the_repository():
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in doc_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert hits == []


# -- every shell command in the docs runs as written -------------------------------------------
#
# Each ```sh block of README.md and docs/*.md runs with bash (-e: every line must succeed),
# from the repository root, with .venv/bin first on PATH (what `. .venv/bin/activate` does).
# An HTML comment right above a block changes that:
#   <!-- doc-test: server -->        the block starts a server: it runs in the background, the
#                                     test waits for /health, and the file's next blocks run
#                                     against it (it stops at the next server block or the end);
#   <!-- doc-test: skip (reason) --> the block is not run; the reason is required.
# The docs' well-known ports become free ports (8080 main, 8090 broadcasts, 9090 metrics,
# 4222/5222 embedded NATS), Redis URLs and redis-cli point at the tests' Redis, and servers get
# their own Redis key prefix and channels (env vars, which command-line flags override).

BLOCK = re.compile(r"(?:<!-- doc-test: (?P<note>[^\n]*?) -->\n)?```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)```", re.S)
PORTS = ("8080", "8090", "9090", "4222", "5222")


@dataclass
class Block:
    note: str
    body: str


def shell_blocks(path: Path) -> list[Block]:
    return [Block(m["note"] or "", m["body"]) for m in BLOCK.finditer(path.read_text()) if m["lang"] == "sh"]


def _with_shell_blocks() -> list[str]:
    return [str(p.relative_to(ROOT)) for p in doc_files() if shell_blocks(p)]


class DocServer:
    def __init__(self, script: str, env: dict[str, str], port: int) -> None:
        self.log = tempfile.TemporaryFile()
        self.port = port
        self.proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # another process: poll, bounded
            assert self.proc.poll() is None, f"the server exited ({self.proc.returncode}):\n{self.output()}"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        raise AssertionError(f"the server did not get healthy:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.mark.parametrize("doc", _with_shell_blocks())
def test_shell_commands_run_as_written(doc):
    from helpers.redis_server import redis_url

    ports = {p: free_port() for p in PORTS}
    redis = redis_url()
    tag = f"pycable-doc-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANYCABLE_REDIS_PREFIX": f"{tag}:",
        "ANYCABLE_REDIS_CHANNEL": tag,
        "ANYCABLE_REDIS_PUBSUB_CHANNEL": f"{tag}:internal",
        "ANYCABLE_REDISX_STREAM": tag,
        "ANYCABLE_NATS_PREFIX": f"{tag}.",
        "ANYCABLE_PORT": str(ports["8080"]),
        "ANYCABLE_HTTP_BROADCAST_PORT": str(ports["8090"]),
        "ANYCABLE_ENATS_ADDR": f"nats://127.0.0.1:{ports['4222']}",
    }

    def adapt(script: str) -> str:
        for port, free in ports.items():
            script = re.sub(rf"(?<=[:=\s]){port}\b", str(free), script)
        script = script.replace("redis://localhost:6379", redis).replace("redis-cli ", f"redis-cli -u {redis} ")
        return script

    server: DocServer | None = None
    try:
        for block in shell_blocks(ROOT / doc):
            if block.note.startswith("skip"):
                assert re.match(r"skip \(.+\)", block.note), f"{doc}: a skipped block needs a reason: {block.note!r}"
                continue
            script = adapt(block.body)
            if block.note == "server":
                if server is not None:
                    server.stop()
                server = DocServer(script, env, ports["8080"])
                server.wait_healthy()
                continue
            assert block.note == "", f"{doc}: unknown annotation {block.note!r}"
            done = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=120)  # fmt: skip
            assert done.returncode == 0, f"{doc}: {block.body}\n{done.stdout}\n{done.stderr}"
    finally:
        if server is not None:
            server.stop()


# -- the README's JavaScript clients -----------------------------------------------------------


def _js_block(tag: str) -> str:
    (body,) = re.findall(rf"```js {tag}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return body


WEB_SHIM = """\
// Test stand-in for @anycable/web in Node: @anycable/core with ws as the browser's WebSocket.
import { createCable as create } from '@anycable/core'
import WebSocket from 'ws'
export const createCable = (url, opts = {}) => create(url, { websocketImplementation: WebSocket, ...opts })
"""


def _run_js(script: str, tmp_path: Path, srv: ServerProcess, until: str, web_shim: bool = False) -> str:
    """Run a client module against *srv*, broadcasting until it prints *until*."""
    modules = tmp_path / "node_modules"
    real = ROOT / "tests" / "js" / "node_modules"
    (modules / "@anycable").mkdir(parents=True)
    (modules / "@anycable" / "core").symlink_to(real / "@anycable" / "core")
    (modules / "ws").symlink_to(real / "ws")
    if web_shim:
        web = modules / "@anycable" / "web"
        web.mkdir()
        (web / "package.json").write_text('{"name": "@anycable/web", "type": "module", "main": "index.js"}')
        (web / "index.js").write_text(WEB_SHIM)
    client = tmp_path / "client.mjs"
    client.write_text(script.replace("localhost:8080", f"127.0.0.1:{srv.port}"))
    out = tempfile.TemporaryFile()
    proc = subprocess.Popen(["node", str(client)], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:  # a message broadcast before the client subscribed is not delivered: repeat
            out.seek(0)
            text = out.read().decode(errors="replace")
            if until in text or proc.poll() is not None:
                break
            assert time.monotonic() < deadline, f"no message reached the client:\n{text}"
            srv.broadcast('{"stream":"chat","data":"{\\"text\\":\\"hi\\"}"}')
            time.sleep(0.2)
        if not web_shim:
            assert proc.wait(15) == 0, text  # the Node snippet disconnects, and node exits by itself
        return text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        out.close()


def test_readme_node_client_runs_against_a_real_server(tmp_path):
    with ServerProcess("--presets=broker", "--public") as srv:
        text = _run_js(_js_block("node"), tmp_path, srv, "hi")
    assert "{ text: 'hi' }" in text, text


def test_readme_browser_client_runs_with_a_browser_websocket(tmp_path):
    """The browser snippet, unchanged, in Node: ``@anycable/web`` is stood in for by
    ``@anycable/core`` given ``ws`` as the browser's WebSocket (Node 20 has none)."""
    with ServerProcess("--presets=broker", "--public") as srv:
        text = _run_js(_js_block("browser"), tmp_path, srv, "hi", web_shim=True)
    assert "{ text: 'hi' }" in text, text


# -- hygiene -------------------------------------------------------------------------------------


def test_repository_hygiene():
    ignored = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert ignored == "", f".gitignore lists tracked files:\n{ignored}"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and meta["license-files"] == ["LICENSE"]
    assert meta["authors"] and "Programming Language :: Python :: 3.11" in meta["classifiers"]
    assert meta["requires-python"] == ">=3.11"
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
