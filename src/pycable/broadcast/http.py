"""``http`` broadcaster (spec §4.2, preface decision 3): ``POST /_broadcast``.

The request handling is pure (headers and body in, status and body out); the transport
mounts it on the broadcast port (8090, or the main port when a key is set).
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

import orjson

from pycable.broadcast.base import Broadcaster, BroadcastHandler
from pycable.exceptions import BroadcastError, BroadcastFormatError, BrokerError
from pycable.protocol.broadcast import parse_broadcast

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["HttpBroadcaster", "from_config"]

log = logging.getLogger("pycable.broadcast")


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


class HttpBroadcaster:
    """Validates and hands HTTP broadcasts to the node.

    Responses: 201 published; 400 unparsable JSON; 422 wrong shape or not a POST;
    401 missing or wrong ``Authorization: Bearer <key>``; 503 broker failure. A batch is
    validated whole first: nothing is published on a 400/422/401; on a 503 the publications
    before the failing one were.
    """

    is_fanout = False

    def __init__(self, key: str = "", path: str = "/_broadcast", url: str = "") -> None:
        self.key = key
        self.path = path
        self.url = url
        self.handler: BroadcastHandler | None = None

    async def start(self, handler: BroadcastHandler) -> None:
        self.handler = handler

    async def shutdown(self) -> None:
        self.handler = None

    def health(self) -> str:
        return ""

    def describe(self) -> str:
        auth = "authorization required" if self.key else "no authorization"
        return f"Accept broadcast requests at {self.url}{self.path} ({auth})"

    def authorized(self, authorization: str | None) -> bool:
        if not self.key:
            return True
        if not authorization or not authorization.startswith("Bearer "):
            return False
        return hmac.compare_digest(authorization[7:].strip().encode(), self.key.encode())

    async def handle(self, method: str, authorization: str | None, body: bytes) -> tuple[int, bytes]:
        """Handle one request; returns ``(status, body)``."""
        if method != "POST":
            return 422, _error("use POST")
        if not self.authorized(authorization):
            return 401, _error("missing or invalid broadcast key (Authorization: Bearer <key>)")
        try:
            publications = parse_broadcast(body)
        except BroadcastFormatError as exc:
            log.info("rejected broadcast (422): %s", exc)
            return 422, _error(str(exc))
        except BroadcastError as exc:
            log.info("rejected broadcast (400): %s", exc)
            return 400, _error(str(exc))
        if self.handler is None:
            return 503, _error("server is shutting down")
        try:
            await self.handler.handle_broadcast(publications)
        except BrokerError as exc:
            log.error("broadcast failed: %s", exc)
            return 503, _error(f"broker unavailable: {exc}")
        return 201, b""


def from_config(config: Config) -> HttpBroadcaster:
    """Mounted by the app on the main port when a key is set, else on its own port."""
    return HttpBroadcaster(config.effective_broadcast_key, config.http_broadcast_path)


if TYPE_CHECKING:
    _: type[Broadcaster] = HttpBroadcaster
