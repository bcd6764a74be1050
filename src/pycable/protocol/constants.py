"""Wire strings, spelled exactly as on the wire (anycable-go ``common/common.go``)."""

from __future__ import annotations

from typing import Final

# Subprotocols (spec §1.1).
ACTIONCABLE_V1_JSON: Final = "actioncable-v1-json"
ACTIONCABLE_V1_EXT_JSON: Final = "actioncable-v1-ext-json"
SUBPROTOCOLS: Final = (ACTIONCABLE_V1_JSON, ACTIONCABLE_V1_EXT_JSON)
TOKEN_SUBPROTOCOL_PREFIX: Final = "anycable-token."

# Server -> client message types (spec §1.3, §2).
WELCOME: Final = "welcome"
PING: Final = "ping"
PONG: Final = "pong"
DISCONNECT: Final = "disconnect"
CONFIRM_SUBSCRIPTION: Final = "confirm_subscription"
REJECT_SUBSCRIPTION: Final = "reject_subscription"
CONFIRM_HISTORY: Final = "confirm_history"
REJECT_HISTORY: Final = "reject_history"
PRESENCE: Final = "presence"

# Client -> server commands (spec §1.2).
SUBSCRIBE: Final = "subscribe"
UNSUBSCRIBE: Final = "unsubscribe"
MESSAGE: Final = "message"
HISTORY: Final = "history"
WHISPER: Final = "whisper"
JOIN: Final = "join"
LEAVE: Final = "leave"
COMMANDS: Final = frozenset(
    {SUBSCRIBE, UNSUBSCRIBE, MESSAGE, HISTORY, PONG, PING, WHISPER, JOIN, LEAVE, PRESENCE}
)

# Disconnect reasons (spec §1.6).
UNAUTHORIZED: Final = "unauthorized"
TOKEN_EXPIRED: Final = "token_expired"
SERVER_RESTART: Final = "server_restart"
REMOTE: Final = "remote"
NO_PONG: Final = "no_pong"
TOO_SLOW: Final = "too_slow"
INVALID_REQUEST: Final = "invalid_request"
IDLE_TIMEOUT: Final = "idle_timeout"

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011

# Reserved channel-state keys (spec §2.7, §2.8).
WHISPER_STREAM_STATE: Final = "$w"
PRESENCE_STREAM_STATE: Final = "$p"

PUBSUB_CHANNEL: Final = "$pubsub"
TURBO_CHANNEL: Final = "Turbo::StreamsChannel"
HEALTH_BODY: Final = b"Ah, ha, ha, ha, stayin' alive, stayin' alive."
