"""End-to-end tests: the real ``@anycable/core`` JS client (Node, ``ws``) against a real pycable process.

Each test starts ``python -m pycable`` on free ports, runs one or more Node scenario scripts
(``client.mjs``: an interactive driver, ``jitter.mjs``: many clients with random socket cuts) and
synchronises on the newline-delimited JSON events they print. Broadcasts go through the HTTP
broadcaster. See ``/work/shared/spec/js-client.md`` for what the client expects of the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.js

JS_DIR = Path(__file__).resolve().parent
REPO_ROOT = JS_DIR.parent.parent
EXT_PROTOCOL = "actioncable-v1-ext-json"
BROKER_FLAGS = ("--presets", "broker", "--public", "--sessions_ttl", "300")

Event = dict[str, Any]
Pred = Callable[[Event], bool] | dict[str, Any]


# --------------------------------------------------------------------------------------------
# helpers


def _require_node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` is not on PATH: the JS client tests need Node 20 (do not skip them)")
    if (
        not (JS_DIR / "node_modules" / "@anycable" / "core" / "package.json").is_file()
        or not (JS_DIR / "node_modules" / "ws" / "package.json").is_file()
    ):
        pytest.fail(
            "tests/js/node_modules is missing @anycable/core or ws: run `cd tests/js && npm install` "
            "(`make test` does it before pytest)"
        )
    return node


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_jwt(secret: str, identifiers: dict[str, Any], exp: int) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"ext": json.dumps(identifiers, separators=(",", ":")), "exp": exp}
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def sign_stream(secret: str, name: str, *, urlsafe: bool) -> str:
    raw = json.dumps(name).encode()
    encoded = (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()
    digest = hmac.new(secret.encode(), encoded.encode(), hashlib.sha256).hexdigest()
    return f"{encoded}--{digest}"


def _match(ev: Event, pred: Pred) -> bool:
    if callable(pred):
        return bool(pred(ev))
    return all(ev.get(k) == v for k, v in pred.items())


def _tail(path: Path, lines: int = 150) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class Server:
    """A pycable process on fixed ports (so it can be restarted on the same ones)."""

    def __init__(self, flags: tuple[str, ...], log_dir: Path, name: str) -> None:
        self.flags = flags
        self.port = free_port()
        self.broadcast_port = free_port()
        self.log_path = log_dir / f"server-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.starts = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/cable"

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pycable",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http_broadcast_port",
            str(self.broadcast_port),
            *self.flags,
        ]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANYCABLE_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.starts += 1
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"=== start #{self.starts}: {' '.join(self.argv())}\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            self.argv(),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"pycable exited with code {self.proc.returncode} before /health answered\n"
                    f"argv: {self.argv()}\n--- server log ---\n{_tail(self.log_path)}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                try:
                    conn.request("GET", "/health")
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status == 200:
                        return
                    last_error = f"status {resp.status}"
                finally:
                    conn.close()
            except OSError as exc:
                last_error = repr(exc)
            time.sleep(0.1)
        pytest.fail(
            f"pycable /health did not answer 200 within {timeout}s ({last_error})\n"
            f"--- server log ---\n{_tail(self.log_path)}"
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def post_broadcast(self, body: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.broadcast_port, timeout=10)
        try:
            conn.request(
                "POST", "/_broadcast", body=raw, headers={"Content-Type": "application/json", **(headers or {})}
            )
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def broadcast(self, stream: str, data: Any) -> None:
        status, body = self.post_broadcast({"stream": stream, "data": json.dumps(data)})
        assert status == 201, f"broadcast answered {status}: {body!r}"

    def broadcast_paced(self, stream: str, total: int, every: float) -> None:
        """Broadcast ``{"seq": 1..total}`` on *stream*, one every *every* seconds."""
        start = time.monotonic()
        for n in range(1, total + 1):
            self.broadcast(stream, {"seq": n})
            delay = start + n * every - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def broadcast_batch(self, items: list[tuple[str, Any]]) -> None:
        status, body = self.post_broadcast([{"stream": s, "data": json.dumps(d)} for s, d in items])
        assert status == 201, f"batch broadcast answered {status}: {body!r}"


class NodeProc:
    """A Node scenario script; events are read from its stdout by a thread."""

    FATAL = ("uncaught", "unhandled", "error")

    def __init__(self, node: str, script: str, config: dict[str, Any], log_dir: Path, name: str) -> None:
        self.name = name
        self.stderr_path = log_dir / f"node-{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [node, str(JS_DIR / script), json.dumps(config)],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.events: list[Event] = []
        self.eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"node-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "raw", "line": line}
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def _diag(self) -> str:
        with self._cond:
            recent = self.events[-40:]
        lines = "\n".join(json.dumps(e)[:400] for e in recent)
        return (
            f"--- last events of node '{self.name}' ({len(self.events)} total) ---\n{lines}\n"
            f"--- node stderr ---\n{_tail(self.stderr_path, 40)}"
        )

    def find(self, pred: Pred, start: int = 0) -> list[Event]:
        with self._cond:
            return [e for e in self.events[start:] if _match(e, pred)]

    def wait_for(self, pred: Pred, *, timeout: float = 10.0, start: int = 0, what: str = "") -> Event:
        return self.wait_count(pred, 1, timeout=timeout, start=start, what=what)[0]

    def wait_count(self, pred: Pred, n: int, *, timeout: float = 10.0, start: int = 0, what: str = "") -> list[Event]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                fatal = [e for e in self.events if e.get("event") in self.FATAL]
                if fatal:
                    raise AssertionError(f"node '{self.name}' reported {fatal[0]}\n{self._diag()}")
                found = [e for e in self.events[start:] if _match(e, pred)]
                if len(found) >= n:
                    return found
                if self.eof:
                    raise AssertionError(
                        f"node '{self.name}' exited (rc={self.proc.poll()}) while waiting for "
                        f"{n} x {what or pred}; got {len(found)}\n{self._diag()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timeout ({timeout}s) waiting for {n} x {what or pred} from node '{self.name}'; "
                        f"got {len(found)}\n{self._diag()}"
                    )
                self._cond.wait(left)

    def messages(self, sub_id: str, start: int = 0) -> list[Event]:
        return self.find({"event": "message", "id": sub_id}, start)

    def wait_messages(self, sub_id: str, n: int, *, timeout: float = 10.0, start: int = 0) -> list[Event]:
        return self.wait_count(
            {"event": "message", "id": sub_id}, n, timeout=timeout, start=start, what=f"messages on {sub_id}"
        )

    def sent(self, command: str, start: int = 0) -> list[dict[str, Any]]:
        return [
            e["msg"]
            for e in self.find(lambda e: e.get("event") == "sent" and e["msg"].get("command") == command, start)
        ]

    def frames(self, ftype: str, start: int = 0) -> list[dict[str, Any]]:
        return [
            e["frame"]
            for e in self.find(lambda e: e.get("event") == "frame" and e["frame"].get("type") == ftype, start)
        ]

    def error_logs(self) -> list[Event]:
        return self.find(lambda e: e.get("event") == "log" and e.get("level") == "error")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="exit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._reader.join(timeout=5)
        self._stderr.close()


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.node = _require_node()
        self.dir = tmp_path
        self.servers: list[Server] = []
        self.procs: list[NodeProc] = []

    def server(self, *flags: str) -> Server:
        srv = Server(tuple(flags), self.dir, str(len(self.servers)))
        self.servers.append(srv)
        srv.start()
        return srv

    def client(self, url: str, name: str = "c", **config: Any) -> NodeProc:
        proc = NodeProc(self.node, "client.mjs", {"url": url, "name": name, **config}, self.dir, name)
        self.procs.append(proc)
        proc.wait_for({"event": "started"}, what="started")
        return proc

    def jitter(self, url: str, **config: Any) -> NodeProc:
        proc = NodeProc(self.node, "jitter.mjs", {"url": url, **config}, self.dir, "jitter")
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.close()
        for srv in self.servers:
            srv.stop()
        # Shown by pytest only when the test failed.
        for srv in self.servers:
            print(f"--- server log {srv.log_path.name} ---\n{_tail(srv.log_path, 200)}")
        for proc in self.procs:
            print(f"--- node stderr {proc.name} ---\n{_tail(proc.stderr_path, 50)}")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def seqs(events: list[Event]) -> list[Any]:
    return [e["data"].get("seq") if isinstance(e["data"], dict) else e["data"] for e in events]


def assert_exactly_once_in_order(events: list[Event], expected: list[int]) -> None:
    got = seqs(events)
    dups = sorted({s for s in got if got.count(s) > 1})
    missing = [s for s in expected if s not in got]
    assert got == expected, f"delivery mismatch: duplicates={dups} missing={missing} got={got}"


def assert_offsets_consecutive(events: list[Event], stream: str) -> str:
    metas = [e["meta"] for e in events]
    assert all(m is not None for m in metas), f"messages without stream metadata: {metas}"
    assert {m["stream"] for m in metas} == {stream}, metas
    epochs = {m["epoch"] for m in metas}
    assert len(epochs) == 1 and all(epochs), f"epoch changed or empty: {epochs}"
    offsets = [m["offset"] for m in metas]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"offsets not consecutive: {offsets}"
    return epochs.pop()


# --------------------------------------------------------------------------------------------
# 1. public stream, HTTP broadcasts


def test_public_stream_receives_http_broadcasts_in_order(env: Harness) -> None:
    srv = env.server("--public")
    c = env.client(srv.ws_url, subscribe=[{"id": "chat", "stream": "chat"}])
    c.wait_for({"event": "subscribed", "id": "chat"})

    opened = c.wait_for({"event": "ws_open"})
    assert opened["protocol"] == EXT_PROTOCOL, "server did not select the ext sub-protocol"
    welcome = c.frames("welcome")
    assert len(welcome) == 1 and isinstance(welcome[0].get("sid"), str) and welcome[0]["sid"], welcome
    assert c.frames("confirm_subscription") == [
        {"type": "confirm_subscription", "identifier": '{"channel":"$pubsub","stream_name":"chat"}'}
    ]

    payloads = [
        {
            "n": i,
            "text": f"message {i}",
            "unicode": 'héllo ✓ 😀 "quoted" \\ back',
            "nested": {"list": [i, i * 2, None], "flag": i % 2 == 0, "f": i / 4},
        }
        for i in range(1, 21)
    ]
    for p in payloads[0:5]:
        srv.broadcast("chat", p)
    # A batch, with a message for another stream in the middle that must not arrive.
    srv.broadcast_batch(
        [("chat", p) for p in payloads[5:8]] + [("other", {"nope": 1})] + [("chat", p) for p in payloads[8:10]]
    )
    srv.broadcast("chat", payloads[10])
    srv.broadcast_batch([("chat", p) for p in payloads[11:17]])
    for p in payloads[17:20]:
        srv.broadcast("chat", p)
    sentinel = {"sentinel": True}
    srv.broadcast("chat", sentinel)

    got = c.wait_messages("chat", 21)
    assert [e["data"] for e in got] == [*payloads, sentinel]
    assert c.error_logs() == []


# --------------------------------------------------------------------------------------------
# 2. signed streams


@pytest.mark.parametrize("urlsafe", [False, True], ids=["std-base64", "urlsafe-base64"])
def test_signed_stream_good_and_bad_signatures(env: Harness, urlsafe: bool) -> None:
    secret = "streams-s3cr3t"
    name = "stream-?>"  # its JSON's base64 has '/' (standard) or '_' (urlsafe)
    srv = env.server("--noauth", "--streams_secret", secret)
    good = sign_stream(secret, name, urlsafe=urlsafe)
    assert ("/" in good.split("--")[0]) != urlsafe and ("_" in good.split("--")[0]) == urlsafe

    c = env.client(srv.ws_url, subscribe=[{"id": "good", "signed": good}])
    c.wait_for({"event": "subscribed", "id": "good"})

    srv.broadcast(name, {"hello": "signed"})
    assert [e["data"] for e in c.wait_messages("good", 1)] == [{"hello": "signed"}]

    tampered = good[:-1] + ("0" if good[-1] != "0" else "1")
    other_secret = sign_stream("another-secret", name, urlsafe=urlsafe)
    c.send(cmd="subscribe", id="tampered", signed=tampered)
    c.send(cmd="subscribe", id="wrong_secret", signed=other_secret)
    c.send(cmd="subscribe", id="unsigned", stream=name)  # no --public_streams: rejected
    for sub_id in ("tampered", "wrong_secret", "unsigned"):
        failed = c.wait_for({"event": "subscribe_failed", "id": sub_id})
        assert failed["error"] == "SubscriptionRejectedError", failed
    rejected = {f["identifier"] for f in c.frames("reject_subscription")}
    assert len(rejected) == 3, rejected
    assert c.find({"event": "subscribed", "id": "tampered"}) == []

    # The good subscription still works after the rejections; the rejected ones get nothing.
    srv.broadcast(name, {"after": "rejections"})
    got = c.wait_messages("good", 2)
    assert [e["data"] for e in got] == [{"hello": "signed"}, {"after": "rejections"}]
    assert [e for e in c.find({"event": "message"}) if e["id"] != "good"] == []


# --------------------------------------------------------------------------------------------
# 3. whisper


def test_whisper_reaches_others_but_not_the_sender(env: Harness) -> None:
    srv = env.server("--public")
    a = env.client(srv.ws_url, name="a", subscribe=[{"id": "room", "stream": "room"}])
    b = env.client(srv.ws_url, name="b", subscribe=[{"id": "room", "stream": "room"}])
    a.wait_for({"event": "subscribed", "id": "room"})
    b.wait_for({"event": "subscribed", "id": "room"})

    a.send(cmd="whisper", id="room", data={"typing": True})
    a.wait_for({"event": "whispered"})
    assert a.sent("whisper") == [
        {"command": "whisper", "identifier": '{"channel":"$pubsub","stream_name":"room"}', "data": {"typing": True}}
    ]
    b.wait_messages("room", 1)

    srv.broadcast("room", {"after": 1})
    a_msgs = a.wait_messages("room", 1)
    b_msgs = b.wait_messages("room", 2)
    assert [e["data"] for e in a_msgs] == [{"after": 1}], "the sender received its own whisper"
    assert [e["data"] for e in b_msgs] == [{"typing": True}, {"after": 1}]


# --------------------------------------------------------------------------------------------
# 4. JWT


JWT_SECRET = "jwt-s3cr3t"


def _jwt_flags() -> tuple[str, ...]:
    return ("--jwt_secret", JWT_SECRET, "--enforce_jwt", "--public_streams")


@pytest.mark.parametrize("strategy", ["url", "param", "header", "sub-protocol"])
def test_jwt_valid_token_connects(env: Harness, strategy: str) -> None:
    srv = env.server(*_jwt_flags())
    token = make_jwt(JWT_SECRET, {"user_id": "u-42"}, int(time.time()) + 3600)
    config: dict[str, Any] = {"connect": True, "subscribe": [{"id": "s", "stream": "jwt-stream"}]}
    url = srv.ws_url
    if strategy == "url":
        url = f"{url}?jid={token}"
    else:
        config["auth"] = {"token": token}
        config["websocketAuthStrategy"] = strategy
    c = env.client(url, **config)

    ev = c.wait_for(lambda e: e.get("event") in ("connect", "close"), what="connect or close")
    assert ev["event"] == "connect", f"valid JWT ({strategy}) was refused: {ev}"
    assert c.wait_for({"event": "ws_open"})["protocol"] == EXT_PROTOCOL
    c.wait_for({"event": "subscribed", "id": "s"})
    srv.broadcast("jwt-stream", {"for": "u-42"})
    assert [e["data"] for e in c.wait_messages("s", 1)] == [{"for": "u-42"}]


@pytest.mark.parametrize(
    ("case", "reason"),
    [("expired", "token_expired"), ("missing", "unauthorized"), ("bad-signature", "unauthorized")],
)
def test_jwt_refused(env: Harness, case: str, reason: str) -> None:
    srv = env.server(*_jwt_flags())
    url = srv.ws_url
    if case == "expired":
        url += "?jid=" + make_jwt(JWT_SECRET, {"user_id": "u-42"}, int(time.time()) - 60)
    elif case == "bad-signature":
        url += "?jid=" + make_jwt("not-the-secret", {"user_id": "u-42"}, int(time.time()) + 3600)
    c = env.client(url, connect=True)

    closed = c.wait_for(lambda e: e.get("event") in ("connect", "close"), what="connect or close")
    assert closed == {"event": "close", "client": "c", "reason": reason}
    assert c.frames("disconnect") == [{"type": "disconnect", "reason": reason, "reconnect": False}]
    assert c.find({"event": "connect"}) == [] and c.frames("welcome") == []


# --------------------------------------------------------------------------------------------
# 5. reliable streams and session restore (memory broker)


FEED_ID = '{"channel":"$pubsub","stream_name":"feed"}'


def _subscribed_feed(env: Harness, srv: Server, **config: Any) -> NodeProc:
    c = env.client(srv.ws_url, subscribe=[{"id": "feed", "stream": "feed"}], **config)
    c.wait_for({"event": "subscribed", "id": "feed"})
    return c


def test_restore_after_socket_cut_delivers_missed_messages_once(env: Harness) -> None:
    srv = env.server(*BROKER_FLAGS)
    c = _subscribed_feed(env, srv)
    for n in range(1, 6):
        srv.broadcast("feed", {"seq": n})
    first = c.wait_messages("feed", 5)
    assert [e["meta"]["offset"] for e in first] == [1, 2, 3, 4, 5]

    mark = c.mark()
    c.send(cmd="terminate", delay=600)
    c.wait_for({"event": "disconnect"}, start=mark)
    for n in range(6, 11):  # published while the client is offline
        srv.broadcast("feed", {"seq": n})
    reconnected = c.wait_for({"event": "connect"}, start=mark, what="reconnect")
    assert reconnected["reconnect"] is True
    assert reconnected["restored"] is True, "session was not restored after a socket cut"
    c.wait_messages("feed", 10)
    for n in range(11, 16):
        srv.broadcast("feed", {"seq": n})
    got = c.wait_messages("feed", 15)
    c.wait_for({"event": "info", "id": "feed", "type": "history_received"}, start=mark)

    assert_exactly_once_in_order(c.messages("feed"), list(range(1, 16)))
    assert_offsets_consecutive(got, "feed")
    assert len(c.sent("subscribe")) == 1, f"client re-subscribed: {c.sent('subscribe')}"
    history = c.sent("history", mark)
    assert len(history) == 1 and history[0]["identifier"] == FEED_ID, history
    assert history[0]["history"]["streams"]["feed"]["offset"] == 5
    assert len(c.frames("confirm_subscription")) == 1, "server confirmed the restored subscription again"
    welcome = c.frames("welcome", mark)
    assert len(welcome) == 1 and welcome[0].get("restored") is True and welcome[0].get("restored_ids") == [FEED_ID]
    assert c.error_logs() == []


@pytest.mark.parametrize("history_delay", [0, 300], ids=["fast-uplink", "history-delayed-300ms"])
def test_restore_while_broadcasts_keep_flowing(env: Harness, history_delay: int) -> None:
    """Broadcasts at ~50 msg/s while the client's socket is cut three times.

    With ``history-delayed-300ms`` the client's ``history`` command reaches the server 300 ms after
    the restored welcome, so ~15 live messages fall into the restore window: a server that sends
    them live and then replays them from history duplicates them (js-client.md section 6).
    """
    srv = env.server(*BROKER_FLAGS)
    c = _subscribed_feed(env, srv, delayHistoryMs=history_delay)
    total = 200  # ~4 s at 50 msg/s
    errors: list[BaseException] = []

    def broadcaster() -> None:
        try:
            start = time.monotonic()
            for n in range(1, total + 1):
                srv.broadcast("feed", {"seq": n})
                delay = start + n * 0.02 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=broadcaster, name="broadcaster", daemon=True)
    thread.start()
    try:
        for cut, (at, delay) in enumerate(((25, 100), (75, 20), (125, 300)), start=1):
            c.wait_messages("feed", at, timeout=15)
            mark = c.mark()
            c.send(cmd="terminate", delay=delay)
            c.wait_for({"event": "disconnect"}, start=mark)
            ev = c.wait_for({"event": "connect"}, start=mark, what="reconnect")
            assert ev["restored"] is True, f"cut #{cut}: session not restored: {ev}"
    finally:
        thread.join(timeout=30)
    assert not errors, errors
    srv.broadcast("feed", {"seq": total + 1})
    got = c.wait_messages("feed", total + 1, timeout=15)

    assert_exactly_once_in_order(c.messages("feed"), list(range(1, total + 2)))
    assert_offsets_consecutive(got, "feed")
    assert len(c.sent("subscribe")) == 1, "client re-subscribed instead of restoring"
    assert len(c.sent("history")) == 3
    assert len(c.frames("confirm_subscription")) == 1
    assert c.error_logs() == []


def test_expired_session_resubscribes_with_history(env: Harness) -> None:
    srv = env.server("--presets", "broker", "--public", "--sessions_ttl", "1")
    c = _subscribed_feed(env, srv)
    for n in range(1, 6):
        srv.broadcast("feed", {"seq": n})
    first = c.wait_messages("feed", 5)
    epoch = first[0]["meta"]["epoch"]

    mark = c.mark()
    c.send(cmd="terminate", delay=2500)  # offline for longer than sessions_ttl
    c.wait_for({"event": "disconnect"}, start=mark)
    for n in range(6, 11):
        srv.broadcast("feed", {"seq": n})
    reconnected = c.wait_for({"event": "connect"}, start=mark, timeout=15, what="reconnect")
    assert reconnected["restored"] is False, "session restored although sessions_ttl had passed"
    assert all(not w.get("restored") for w in c.frames("welcome", mark))
    c.wait_for({"event": "info", "id": "feed", "type": "history_received"}, start=mark)
    c.wait_messages("feed", 10)
    for n in range(11, 16):
        srv.broadcast("feed", {"seq": n})
    got = c.wait_messages("feed", 15)

    assert_exactly_once_in_order(c.messages("feed"), list(range(1, 16)))
    assert_offsets_consecutive(got, "feed")
    subs = c.sent("subscribe")
    assert len(subs) == 2, subs
    assert subs[1]["history"]["streams"] == {"feed": {"epoch": epoch, "offset": 5}}
    assert c.error_logs() == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_server_restart_rejects_history_and_live_delivery_continues(env: Harness, sig: int) -> None:
    srv = env.server(*BROKER_FLAGS)
    c = _subscribed_feed(env, srv)
    for n in range(1, 4):
        srv.broadcast("feed", {"seq": n})
    first = c.wait_messages("feed", 3)
    old_epoch = first[0]["meta"]["epoch"]

    mark = c.mark()
    srv.restart(sig)
    info = c.wait_for({"event": "info", "id": "feed"}, start=mark, timeout=15, what="history info")
    assert info["type"] == "history_not_found", f"history from an earlier server run was not rejected: {info}"
    assert c.frames("reject_history", mark) == [{"type": "reject_history", "identifier": FEED_ID}]
    reconnected = c.find({"event": "connect"}, mark)
    assert reconnected and reconnected[-1]["restored"] is False
    assert c.messages("feed", mark) == [], "messages replayed from a foreign epoch"

    for n in range(101, 104):
        srv.broadcast("feed", {"seq": n})
    after = c.wait_messages("feed", 3, start=mark)
    assert seqs(after) == [101, 102, 103]
    new_epoch = assert_offsets_consecutive(after, "feed")
    assert new_epoch != old_epoch, "epoch did not change across a restart"
    assert [e["meta"]["offset"] for e in after] == [1, 2, 3]
    assert c.find({"event": "channel_close"}) == []


# --------------------------------------------------------------------------------------------
# 6. jitter


def assert_delivered_exactly_once(result: Event, clients: int) -> dict[str, int]:
    """A jitter.mjs ``result``: every client got every message once, in order, with
    consecutive offsets, and logged no error. Returns the totals."""
    totals: dict[str, int] = result["totals"]
    detail = json.dumps(result["bad"][:3])[:3000]
    assert totals["missing"] == 0, f"messages lost: {totals} {detail}"
    assert totals["dups"] == 0, f"duplicates: {totals} {detail}"
    assert totals["outOfOrder"] == 0, f"reordering: {totals} {detail}"
    assert totals["offsetViolations"] == 0, f"offset gaps: {totals} {detail}"
    assert totals["complete"] == clients, totals
    assert totals["errors"] == 0, f"client logged errors: {detail}"
    return totals


def run_jitter(env: Harness, srv: Server, clients: int = 200, finish_timeout_ms: int = 10000) -> None:
    """The jitter scenario: *clients* cables cut their sockets at random for 30 s while
    60 messages are broadcast; every one arrives exactly once, sessions are restored."""
    j = env.jitter(
        srv.ws_url,
        stream="jitter",
        clients=clients,
        batch=25,
        cutEveryMs=[2000, 5000],
        outageMs=[800, 1200],
        finishTimeoutMs=finish_timeout_ms,
    )
    ready = j.wait_for({"event": "ready"}, timeout=90)
    assert ready["subscribed"] == clients, ready

    j.send(cmd="start_jitter")
    j.wait_for({"event": "jitter_started"})
    total = 60  # 2 per second for 30 s
    srv.broadcast_paced("jitter", total, every=0.5)
    j.send(cmd="finish", expected=total)
    result = j.wait_for({"event": "result"}, timeout=40)
    print("jitter totals:", json.dumps(result["totals"]))
    totals = assert_delivered_exactly_once(result, clients)
    assert totals["cuts"] >= clients * 3, f"jitter did not happen: {totals}"
    assert totals["restored"] >= totals["cuts"] * 0.9, f"too few restored sessions: {totals}"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_jitter_200_clients_exactly_once(env: Harness) -> None:
    run_jitter(env, env.server(*BROKER_FLAGS))
