"""The real ``@anycable/core`` client, driven through tests/sdk/cable_client.mjs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers.jsonlines import Event, JsonLinesProcess

HERE = Path(__file__).resolve().parent
JS_DIR = HERE.parent / "js"


def require_node() -> None:
    if shutil.which("node") is None:
        pytest.fail("`node` is not on PATH: these tests drive the real @anycable/core client (do not skip them)")
    if not (JS_DIR / "node_modules" / "@anycable" / "core").is_dir():
        pytest.fail("tests/js/node_modules lacks @anycable/core: run `make test` (it runs npm install)")


class JsCable(JsonLinesProcess):
    """One cable in a Node process; ``events`` collects what it reports."""

    def __init__(self, url: str, name: str = "c", subscribe: list[dict[str, Any]] | None = None) -> None:
        require_node()
        config = {"url": url, "name": name, "subscribe": subscribe or []}
        super().__init__(["node", str(HERE / "cable_client.mjs"), json.dumps(config)], HERE, name)

    def subscribe(self, id: str, **sub: Any) -> None:
        self.send(cmd="subscribe", id=id, **sub)

    def perform(self, id: str, action: str, **data: Any) -> None:
        self.send(cmd="perform", id=id, action=action, data=data)

    async def message(self, id: str, data: Any, after: int = 0) -> Event:
        return await self.wait(lambda e: e["event"] == "message" and e["id"] == id and e["data"] == data, after=after)

    def messages(self, id: str) -> list[Any]:
        return [e["data"] for e in list(self.events) if e["event"] == "message" and e["id"] == id]

    def errors(self) -> list[Event]:
        return [e for e in list(self.events) if e["event"] in ("uncaught", "unhandled", "error")]
