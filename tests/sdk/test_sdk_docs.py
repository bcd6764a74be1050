"""docs/sdk.md stays runnable: its whole-application example answers pycable's calls."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def run(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the example waited on something")


def test_the_whole_application_example(monkeypatch):
    text = DOC.read_text()
    section = text[text.index("## A whole application") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict[str, Any] = {"__name__": "sdk_doc_example"}
    exec(compile(code, str(DOC), "exec"), namespace)
    app = namespace["app"]
    assert callable(namespace["rpc"])

    sent: list[bytes] = []

    class Recorder:
        async def apublish(self, payload: bytes) -> None:
            sent.append(payload)

    monkeypatch.setattr(importlib.import_module("pycable.sdk.broadcast"), "_default", Recorder())
    env = {"url": "http://h/cable", "headers": {"cookie": "user=ann"}}
    assert run(app.handle("connect", {"env": env}, "s1"))["status"] == 1
    assert run(app.handle("connect", {"env": {"url": "http://h/cable"}}, "s2"))["status"] == 2
    sub = {"command": "subscribe", "identifier": json.dumps({"channel": "chat", "room": "42"}),
           "connection_identifiers": '{"user":"ann"}', "env": env}  # fmt: skip
    assert run(app.handle("command", sub, "s1"))["streams"] == ["chat/42"]
    no_room = {**sub, "identifier": '{"channel":"chat"}'}
    assert run(app.handle("command", no_room, "s1"))["status"] == 2
    for text in ("hi", "  "):
        perform = {**sub, "command": "message", "data": json.dumps({"action": "speak", "text": text})}
        assert run(app.handle("command", perform, "s1"))["status"] == 1
    assert [json.loads(p) for p in sent] == [{"stream": "chat/42", "data": '{"user":"ann","text":"hi"}'}]
