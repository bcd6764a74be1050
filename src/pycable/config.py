"""Configuration: one declaration per option; the CLI flags, ``ANYCABLE_*`` env vars and
TOML keys are all generated from the fields of :class:`Config` (spec §8).

Precedence: defaults < TOML (``--config-path`` or ``./anycable.toml``) < env < CLI.
Presets (``--presets=broker``) then change only values that nobody set.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from pycable.broker.base import StreamRule
from pycable.exceptions import ConfigError

if TYPE_CHECKING:
    from pycable.presence.base import PresenceLimits

__all__ = ["Config", "option", "GROUPS", "load_config", "parse_stream_rules"]

GROUPS = ("server", "websocket", "sse", "auth", "streams", "broadcast", "broker", "pubsub", "redis", "nats", "rpc", "log")


def option(
    default: Any,
    help: str,
    group: str,
    *,
    flag: str | None = None,
    env: tuple[str, ...] = (),
    kind: str | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """Declare an option: its default, help text, ``--help`` group and flag spelling.

    ``flag`` overrides the flag name where AnyCable spells it with hyphens
    (``health-path``); both spellings are accepted. ``env`` adds aliases (``PORT``).
    ``kind="list"`` takes comma-separated values.
    """
    meta = {"help": help, "group": group, "flag": flag, "env": env, "kind": kind, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    # -- server ----------------------------------------------------------------------------
    host: str = option("localhost", "Server host", "server")
    port: int = option(8080, "Server port", "server", env=("PORT",))
    path: list[str] = option(["/cable"], "WebSocket endpoint path(s)", "server", kind="list")
    health_path: str = option("/health", "Health check endpoint path", "server", flag="health-path")
    allowed_origins: list[str] = option(
        [], "Accepted Origin hosts (comma-separated, '*suffix' wildcards); empty allows all", "server", kind="list"
    )
    max_conn: int = option(0, "Maximum concurrent WebSocket and SSE connections (0: unlimited)", "server", flag="max-conn")
    shutdown_timeout: float = option(30.0, "Graceful shutdown timeout (seconds)", "server")
    workers: str = option("1", "Worker processes sharing the ports (SO_REUSEPORT) and a broker: a number, or "
                               "auto (the CPU count); see docs/workers.md", "server")
    presets: list[str] = option([], "Configuration presets: broker, none", "server", kind="list")
    config_path: str = option("", "TOML configuration file (default: ./anycable.toml if present)", "server",
                              flag="config-path")
    # -- websocket -------------------------------------------------------------------------
    ping_interval: float = option(3.0, "Ping interval (seconds); per client: ?pi=", "websocket")
    ping_timestamp_precision: str = option("s", "Ping timestamp precision; per client: ?ptp=", "websocket",
                                           choices=("s", "ms", "ns"))
    pong_timeout: float = option(0.0, "Close ext-protocol clients that send nothing for this long after a ping "
                                      "(seconds, 0: off)", "websocket")
    enable_native_pings: bool = option(False, "Enforce the pong timeout on every protocol", "websocket")
    max_message_size: int = option(65536, "Maximum incoming frame size (bytes); larger closes with 1009", "websocket")
    ws_max_pending_size: int = option(1 << 20, "Per-connection outgoing buffer cap (bytes); a client over it "
                                               "is disconnected as too_slow", "websocket")
    ws_write_timeout: float = option(2.0, "Seconds a closing client may take before its socket is aborted",
                                     "websocket")
    # -- sse -------------------------------------------------------------------------------
    sse: bool = option(False, "Serve Server-Sent Events (EventSource) at --sse_path", "sse")
    sse_path: str = option("/events", "Server-Sent Events endpoint path", "sse")
    # -- auth ------------------------------------------------------------------------------
    secret: str = option("", "Application secret: fallback for the JWT and streams secrets, base of the "
                              "broadcast key", "auth")
    public: bool = option(False, "No authentication, public streams, no broadcast key (development)", "auth")
    noauth: bool = option(False, "Accept every connection without authentication", "auth")
    norpc: bool = option(False, "Run without the application RPC", "auth")
    jwt_secret: str = option("", "Secret for JWT identification (default: --secret)", "auth")
    jwt_param: str = option("jid", "Query parameter (and X-<param> header) with the JWT", "auth")
    enforce_jwt: bool = option(False, "Reject connections without a JWT", "auth")
    # -- streams ---------------------------------------------------------------------------
    public_streams: bool = option(False, "Allow unsigned $pubsub stream names", "streams")
    streams_secret: str = option("", "Secret for signed stream names (default: --secret)", "streams")
    streams_whisper: bool = option(False, "Allow whisper on signed streams", "streams")
    streams_presence: bool = option(True, "Allow presence on signed streams", "streams")
    turbo_streams: bool = option(False, "Route Turbo::StreamsChannel (signed names)", "streams")
    turbo_streams_secret: str = option("", "Secret for Turbo stream names (default: streams secret)", "streams")
    # -- broadcast -------------------------------------------------------------------------
    broadcast_adapter: list[str] = option(["http"], "Broadcast adapters (comma-separated): http, redisx, redis, "
                                                    "nats", "broadcast",
                                          kind="list")
    broadcast_key: str = option("", "Key for HTTP broadcasts (default: derived from --secret; 'none' disables)",
                                "broadcast")
    http_broadcast_port: int = option(0, "HTTP broadcast port (default: 8090, or the main port when a key is set)",
                                      "broadcast")
    http_broadcast_path: str = option("/_broadcast", "HTTP broadcast path", "broadcast")
    # -- broker ----------------------------------------------------------------------------
    broker: str = option("none", "Broker: none, memory, redis, nats", "broker", choices=("none", "", "memory", "redis", "nats"))
    history_limit: int = option(100, "Messages kept per stream", "broker")
    history_ttl: float = option(300.0, "Seconds a message is kept in a stream's history", "broker")
    sessions_ttl: float = option(300.0, "Seconds a disconnected session can be restored (0: never)", "broker")
    sessions_max_entry_size: int = option(256 * 1024, "Largest session cache entry (bytes; a session over it is "
                                                      "not restorable; 0: no limit)", "broker")
    sessions_max_cache_size: int = option(256 * 1024 * 1024, "Memory broker: bytes of session cache in all, the "
                                                             "oldest go first (0: no limit; Redis/NATS: bounded by "
                                                             "--sessions_ttl)", "broker")
    presence_ttl: float = option(15.0, "Seconds a disconnected session stays present", "broker")
    presence_max_per_stream: int = option(10_000, "Most presence members per stream (0: no cap)", "broker")
    presence_max_per_session: int = option(100, "Most streams a session may be present in (0: no cap)", "broker")
    presence_max_info_size: int = option(4096, "Largest presence info accepted (bytes of JSON)", "broker")
    stream_history: list[str] = option(
        [], "Per-stream history overrides: 'pattern=limit:N,ttl:S' entries separated by ';' (glob patterns)",
        "broker", kind="rules")
    # -- pubsub ----------------------------------------------------------------------------
    pubsub: str = option("none", "Pub/sub adapter for clusters: none, redis, nats (redis when Redis is in use and this is unset)",
                         "pubsub")
    # -- redis -----------------------------------------------------------------------------
    redis_url: str = option("redis://localhost:6379", "Redis URL (redis:// or rediss://)", "redis",
                            env=("REDIS_URL",))
    redis_sentinels: list[str] = option([], "Redis Sentinel addresses (host:port, comma-separated)", "redis",
                                        kind="list")
    redis_sentinel_master: str = option("mymaster", "Redis Sentinel master name", "redis")
    redis_tls_verify: bool = option(True, "Verify the server certificate of a rediss:// Redis (false: encrypt "
                                          "only, for self-signed managed Redis)", "redis")
    redis_channel: str = option("__anycable__", "Channel of the legacy redis broadcaster", "redis")
    redis_pubsub_channel: str = option("__anycable_internal__", "Channel for remote commands of the redis "
                                                                "pub/sub", "redis")
    redis_prefix: str = option("", "Prefix for every key the Redis broker writes (isolation)", "redis")
    redisx_stream: str = option("__anycable__", "Redis Stream read by the redisx broadcaster", "redis")
    redisx_group: str = option("bx", "Consumer group of the redisx broadcaster", "redis")
    redisx_read_block_milliseconds: int = option(2000, "Blocking read timeout of the redisx broadcaster (ms)",
                                                 "redis")
    # -- nats ------------------------------------------------------------------------------
    nats_servers: str = option("nats://127.0.0.1:4222", "NATS servers (comma-separated)", "nats",
                               env=("NATS_URL",))
    nats_channel: str = option("__anycable__", "Subject of the legacy nats broadcaster", "nats")
    nats_pubsub_channel: str = option("__anycable_internal__", "Subject for remote commands of the nats pub/sub",
                                      "nats")
    nats_prefix: str = option("", "Prefix for every NATS subject, stream and bucket (isolation)", "nats")
    embed_nats: bool = option(False, "Run an embedded NATS server (needs the nats extra)", "nats")
    enats_addr: str = option("nats://127.0.0.1:4222", "Embedded NATS client address", "nats")
    enats_cluster: str = option("", "Embedded NATS cluster address (e.g. nats://0.0.0.0:5222)", "nats")
    enats_cluster_name: str = option("anycable-cluster", "Embedded NATS cluster name", "nats")
    enats_cluster_routes: list[str] = option([], "Embedded NATS cluster routes (comma-separated)", "nats",
                                             kind="list")
    enats_gateway: str = option("", "Embedded NATS gateway address", "nats")
    enats_gateways: str = option("", "Embedded NATS gateways (name:url,url;name2:url)", "nats")
    enats_store_dir: str = option("", "Embedded NATS JetStream store directory", "nats")
    enats_server_name: str = option("", "Embedded NATS server name", "nats")
    # -- rpc -------------------------------------------------------------------------------
    rpc_host: str = option("localhost:50051", "Application RPC address: http(s)://… for HTTP RPC, else gRPC",
                           "rpc")
    rpc_impl: str = option("", "RPC implementation: grpc, http (default: from the --rpc_host scheme)", "rpc")
    rpc_concurrency: int = option(28, "Maximum RPC calls in flight", "rpc")
    rpc_request_timeout: int = option(0, "Per-attempt RPC deadline (ms, 0: none for gRPC, 3000 for HTTP)", "rpc")
    rpc_command_timeout: int = option(3000, "Total time for an RPC call with retries (ms)", "rpc")
    rpc_enable_tls: bool = option(False, "Use TLS for gRPC", "rpc")
    http_rpc_secret: str = option("", "Secret for HTTP RPC (default: derived from --secret)", "rpc")
    rpc_restore: bool = option(False, "Notify the application (Restore call) when a session is restored", "rpc")
    disconnect_rate: int = option(100, "Disconnect calls per second", "rpc")
    headers: list[str] = option(["cookie"], "Request headers passed to the application", "rpc", kind="list")
    proxy_cookies: list[str] = option([], "Cookies passed to the application (default: all)", "rpc",
                                      flag="proxy-cookies", kind="list")
    disconnect_mode: str = option("auto", "Disconnect calls: auto, always, never", "rpc",
                                  choices=("auto", "always", "never"))
    # -- log -------------------------------------------------------------------------------
    log_level: str = option("info", "Log level: debug, info, warn, error", "log",
                            choices=("debug", "info", "warn", "warning", "error"))
    log_format: str = option("text", "Log format: text, json", "log", choices=("text", "json"))
    debug: bool = option(False, "Debug mode (log level debug)", "log")

    #: Names of the options set by TOML, env or CLI (presets only touch the others).
    explicit: set[str] = field(default_factory=set, repr=False, metadata={"internal": True})
    #: The TOML file actually loaded, if any.
    loaded_from: str = field(default="", repr=False, metadata={"internal": True})

    # -- derived values --------------------------------------------------------------------

    @property
    def effective_broadcast_key(self) -> str:
        from pycable.identity import secrets

        return secrets.broadcast_key(self.secret, self.broadcast_key, public=self.public)

    @property
    def effective_broadcast_port(self) -> int:
        if self.http_broadcast_port:
            return self.http_broadcast_port
        return self.port if self.effective_broadcast_key else 8090

    @property
    def secret_or_empty(self) -> str:
        from pycable.identity.secrets import application_secret

        return application_secret(self.secret)

    def presence_limits(self) -> PresenceLimits:
        from pycable.presence.base import PresenceLimits

        return PresenceLimits(
            self.presence_ttl, self.presence_max_per_stream, self.presence_max_per_session, self.presence_max_info_size
        )

    def stream_rules(self) -> tuple[StreamRule, ...]:
        return parse_stream_rules(self.stream_history)

    def apply_presets(self) -> list[str]:
        """Apply ``--presets``; returns what was applied, for the log."""
        applied = []
        for preset in self.presets:
            if preset in ("", "none"):
                continue
            if preset != "broker":
                raise ConfigError(f"unknown preset {preset!r} (known: broker, none)")
            redis = not self.embed_nats and "redis_url" in self.explicit
            if "broker" not in self.explicit:
                self.broker = "nats" if self.embed_nats else "redis" if redis else "memory"
            if self.embed_nats:  # spec §8.2: eNATS → adapters http,nats and NATS pub/sub
                if "broadcast_adapter" not in self.explicit:
                    self.broadcast_adapter = ["http", "nats"]
                if "pubsub" not in self.explicit:
                    self.pubsub = "nats"
            elif redis:  # spec §8.2 with a Redis URL (broker=redis: ours is open, unlike Pro)
                if "broadcast_adapter" not in self.explicit:
                    self.broadcast_adapter = ["http", "redisx", "redis"]
                if "pubsub" not in self.explicit:
                    self.pubsub = "redis"
            applied.append(preset)
        # Spec §8.1: pub/sub follows Redis when it is in use and --pubsub was not set, so that
        # a second node sees the first one's broadcasts without another flag.
        uses_redis = "redis_url" in self.explicit or "redisx" in self.broadcast_adapter or self.broker == "redis"
        if "pubsub" not in self.explicit and self.pubsub in ("", "none") and uses_redis:
            self.pubsub = "redis"
        return applied

    def validate(self) -> None:
        if self.history_limit < 1:
            raise ConfigError("--history_limit must be at least 1")
        if self.history_ttl <= 0:
            raise ConfigError("--history_ttl must be positive")
        if self.sessions_ttl < 0:
            raise ConfigError("--sessions_ttl must not be negative")
        if self.sessions_max_entry_size < 0 or self.sessions_max_cache_size < 0:
            raise ConfigError("--sessions_max_entry_size and --sessions_max_cache_size must not be negative")
        if self.presence_ttl <= 0:
            raise ConfigError("--presence_ttl must be positive")
        if self.ping_interval <= 0:
            raise ConfigError("--ping_interval must be positive")
        if self.max_message_size < 128:
            raise ConfigError("--max_message_size is too small")
        if self.ws_max_pending_size < 1024:
            raise ConfigError("--ws_max_pending_size must be at least 1024 bytes")
        from pycable.supervisor import parse_workers

        parse_workers(self.workers, cpus=1)
        from pycable import registry

        for adapter in self.broadcast_adapter:
            registry.check("broadcast adapter", registry.BROADCASTERS, adapter)
        registry.check("broker", registry.BROKERS, self.broker or "none")
        registry.check("pubsub", registry.PUBSUBS, self.pubsub or "none")
        if self.uses_rpc:
            registry.check("rpc implementation", registry.CONTROLLERS, self.rpc_kind)
        self.stream_rules()

    @property
    def uses_rpc(self) -> bool:
        """RPC is off with --norpc, and in the RPC-less modes unless --rpc_host was given."""
        if self.norpc:
            return False
        rpc_less = self.public or self.noauth or self.enforce_jwt
        return bool(self.rpc_host) and (not rpc_less or "rpc_host" in self.explicit)

    @property
    def rpc_kind(self) -> str:
        if self.rpc_impl:
            return self.rpc_impl
        return "http" if self.rpc_host.startswith(("http://", "https://")) else "grpc"


def parse_stream_rules(entries: list[str]) -> tuple[StreamRule, ...]:
    """Parse ``pattern=limit:N,ttl:S`` entries (either key may be omitted).

    Example: ``chat/*=limit:1000,ttl:3600`` keeps up to 1,000 messages for an hour in
    every stream whose name matches ``chat/*``.
    """
    rules = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        pattern, sep, spec = entry.partition("=")
        if not sep or not pattern:
            raise ConfigError(f"bad stream history rule {entry!r}: expected 'pattern=limit:N,ttl:S'")
        limit: int | None = None
        ttl: float | None = None
        for part in spec.split(","):
            key, _, value = part.strip().partition(":")
            try:
                if key == "limit":
                    limit = int(value)
                    if limit < 1:
                        raise ValueError
                elif key == "ttl":
                    ttl = float(value)
                    if ttl <= 0:
                        raise ValueError
                else:
                    raise ConfigError(f"bad stream history rule {entry!r}: unknown key {key!r}")
            except ValueError:
                raise ConfigError(f"bad stream history rule {entry!r}: {key} must be positive") from None
        rules.append(StreamRule(pattern.strip(), limit, ttl))
    return tuple(rules)


# -- loading ------------------------------------------------------------------------------


def option_fields() -> list[Any]:
    return [f for f in fields(Config) if not f.metadata.get("internal")]


def flag_names(f: Any) -> list[str]:
    """Every accepted spelling: ``--health-path`` and ``--health_path``."""
    names = {f.name, f.name.replace("_", "-")}
    if f.metadata.get("flag"):
        names.add(f.metadata["flag"])
    primary = f.metadata.get("flag") or f.name
    return ["--" + primary, *sorted("--" + n for n in names if n != primary)]


def env_names(f: Any) -> list[str]:
    return ["ANYCABLE_" + f.name.upper(), *f.metadata.get("env", ())]


def default_of(f: Any) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def coerce(f: Any, value: Any, source: str) -> Any:
    """Convert a raw value (string from env/CLI, or a TOML value) to the field's type."""
    kind = f.metadata.get("kind")
    default = default_of(f)
    try:
        if kind == "rules":
            if isinstance(value, list):
                return [str(v) for v in value]
            return [p for p in str(value).split(";") if p.strip()]
        if isinstance(default, list):
            if isinstance(value, list):
                return [str(v) for v in value]
            return [p.strip() for p in str(value).split(",") if p.strip()]
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on", ""):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        result = str(value)
        choices = f.metadata.get("choices")
        if choices and result not in choices:
            raise ConfigError(f"{source}: {f.name} must be one of {', '.join(c for c in choices if c)}")
        return result
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: invalid value {value!r} for {f.name}") from None


def _flatten_toml(data: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in GROUPS:
            flat.update(value)
        else:
            flat[key] = value
    return flat


def load_config(cli_values: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    """Build the config from TOML, env and already-parsed CLI values (name → raw value)."""
    environ = dict(os.environ) if environ is None else environ
    cfg = Config()
    by_name = {f.name: f for f in option_fields()}
    # Where is the TOML file? CLI, then env, then ./anycable.toml.
    path = cli_values.get("config_path") or environ.get("ANYCABLE_CONFIG_PATH", "")
    if not path and os.path.exists("anycable.toml"):
        path = "anycable.toml"
    if path:
        try:
            with open(path, "rb") as fh:
                data = _flatten_toml(tomllib.load(fh))
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for key, value in data.items():
            f = by_name.get(key)
            if f is None:
                raise ConfigError(f"{path}: unknown option {key!r}")
            setattr(cfg, key, coerce(f, value, path))
            cfg.explicit.add(key)
        cfg.loaded_from = path
    for f in option_fields():
        for env in env_names(f):
            if env in environ:
                setattr(cfg, f.name, coerce(f, environ[env], env))
                cfg.explicit.add(f.name)
                break
    for name, value in cli_values.items():
        f = by_name[name]
        setattr(cfg, name, coerce(f, value, "--" + name))
        cfg.explicit.add(name)
    if cfg.debug:
        cfg.log_level = "debug"
    return cfg
