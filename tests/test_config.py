"""Configuration: one declaration → CLI, env, TOML; precedence TOML < env < CLI (spec §8)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pycable.cli import build_parser
from pycable.config import Config, load_config, parse_stream_rules
from pycable.exceptions import ConfigError


def cli(*argv: str) -> dict:
    return vars(build_parser().parse_args(list(argv)))


def test_defaults_match_anycable():
    c = load_config({}, environ={})
    assert (c.host, c.port, c.path, c.health_path) == ("localhost", 8080, ["/cable"], "/health")
    assert (c.history_limit, c.history_ttl, c.sessions_ttl) == (100, 300, 300)
    assert (c.ping_interval, c.max_message_size, c.ws_max_pending_size) == (3, 65536, 1 << 20)
    assert c.effective_broadcast_port == 8090 and c.effective_broadcast_key == ""


def test_precedence_toml_env_cli(tmp_path):
    toml = tmp_path / "anycable.toml"
    toml.write_text('port = 1000\nhistory_limit = 5\n[broker]\nsessions_ttl = 7\n')
    env = {"ANYCABLE_PORT": "2000", "ANYCABLE_HISTORY_LIMIT": "6"}
    c = load_config(cli("--config-path", str(toml), "--port", "3000"), environ=env)
    assert c.port == 3000 and c.history_limit == 6 and c.sessions_ttl == 7
    assert c.loaded_from == str(toml)
    assert {"port", "history_limit", "sessions_ttl"} <= c.explicit


def test_port_alias_and_hyphenated_flags():
    c = load_config(cli("--health-path", "/hz", "--max-conn", "5", "--health_path", "/h2"), environ={"PORT": "9"})
    assert c.port == 9 and c.health_path == "/h2" and c.max_conn == 5


def test_booleans_and_lists():
    c = load_config(cli("--public", "--enforce_jwt", "false", "--allowed_origins", "a.com, *.b.com"), environ={})
    assert c.public and not c.enforce_jwt and c.allowed_origins == ["a.com", "*.b.com"]
    c = load_config({}, environ={"ANYCABLE_NOAUTH": "yes", "ANYCABLE_HEADERS": "cookie,x-api-token"})
    assert c.noauth and c.headers == ["cookie", "x-api-token"]


@pytest.mark.parametrize(
    "bad",
    [{"port": "eighty"}, {"log_format": "xml"}, {"public": "maybe"}],
)
def test_bad_values_are_config_errors(bad):
    with pytest.raises(ConfigError):
        load_config(bad, environ={})


def test_unknown_toml_key_and_missing_file(tmp_path):
    toml = tmp_path / "x.toml"
    toml.write_text("nonsense = 1\n")
    with pytest.raises(ConfigError, match="unknown option"):
        load_config({"config_path": str(toml)}, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config({"config_path": str(tmp_path / "none.toml")}, environ={})


def test_presets_change_only_unset_values():
    c = load_config(cli("--presets", "broker"), environ={})
    c.apply_presets()
    assert c.broker == "memory"
    c = load_config(cli("--presets", "broker", "--broker", "none"), environ={})
    c.apply_presets()
    assert c.broker == "none"
    c = load_config(cli("--presets", "nope"), environ={})
    with pytest.raises(ConfigError):
        c.apply_presets()


def test_validation():
    for field, value in (("history_limit", 0), ("history_ttl", 0), ("sessions_ttl", -1), ("ping_interval", 0)):
        c = Config()
        c.public = True
        setattr(c, field, value)
        with pytest.raises(ConfigError):
            c.validate()
    c = Config()
    c.public = True
    c.broadcast_adapter = ["carrier-pigeon"]
    with pytest.raises(ConfigError, match="unknown broadcast adapter"):
        c.validate()


def test_stream_rules():
    rules = parse_stream_rules(["chat/*=limit:1000,ttl:3600", "tmp.*=ttl:5"])
    assert [(r.pattern, r.limit, r.ttl) for r in rules] == [("chat/*", 1000, 3600.0), ("tmp.*", None, 5.0)]
    for bad in ["nopattern", "x=limit:0", "x=ttl:-1", "x=colour:red", "x=limit:many"]:
        with pytest.raises(ConfigError):
            parse_stream_rules([bad])
    c = load_config({}, environ={"ANYCABLE_STREAM_HISTORY": "a/*=limit:3;b=ttl:9"})
    assert len(c.stream_rules()) == 2


def test_secret_derives_broadcast_key_and_port():
    c = load_config(cli("--secret", "s3Krit"), environ={})
    assert c.effective_broadcast_key and c.effective_broadcast_port == c.port
    c = load_config(cli("--secret", "s3Krit", "--public"), environ={})
    assert c.effective_broadcast_key == "" and c.effective_broadcast_port == 8090


def test_help_is_grouped_by_component():
    out = subprocess.run([sys.executable, "-m", "pycable", "--help"], capture_output=True, text=True, check=True).stdout
    for group in ("SERVER:", "WEBSOCKET:", "AUTH:", "BROKER:", "BROADCAST:", "REDIS:", "NATS:", "RPC:", "LOG:"):
        assert group in out
    assert "ANYCABLE_HISTORY_LIMIT" in out


def test_config_error_exits_2_with_a_clear_message():
    proc = subprocess.run([sys.executable, "-m", "pycable", "--history_limit", "0", "--public"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "history_limit" in proc.stderr


def test_toml_stream_history_list_and_default_file(tmp_path, monkeypatch):
    (tmp_path / "anycable.toml").write_text('[broker]\nstream_history = ["chat/*=limit:1000,ttl:3600"]\n')
    monkeypatch.chdir(tmp_path)
    c = load_config({}, environ={})
    assert c.loaded_from == "anycable.toml"
    assert [(r.pattern, r.limit, r.ttl) for r in c.stream_rules()] == [("chat/*", 1000, 3600.0)]


def test_json_log_format_and_startup_lines(tmp_path):
    import json as _json

    from helpers.server import ServerProcess

    with ServerProcess("--public", "--log_format", "json", "--presets", "broker") as srv:
        lines = [_json.loads(line) for line in srv.log().splitlines() if line.startswith("{")]
    msgs = [entry["msg"] for entry in lines]
    assert any(m.startswith("Starting pycable") for m in msgs)
    assert any(m.startswith("Using in-memory broker (epoch: ") for m in msgs)
    assert any(m.startswith("Accept broadcast requests at http://127.0.0.1:") for m in msgs)
    assert any(m == "Server is running in the public mode" for m in msgs)
    assert all({"time", "level", "msg"} <= set(entry) for entry in lines)


def test_options_reach_the_components_they_configure():
    """Each flag is wired: the App built from a config carries its values (no sockets opened)."""
    from pycable.app import App

    c = load_config(
        cli(
            "--public", "--presets", "broker", "--sessions_ttl", "42", "--disconnect_rate", "7",
            "--disconnect_mode", "always", "--shutdown_timeout", "9", "--ping_interval", "4",
            "--pong_timeout", "6", "--ws_max_pending_size", "4096", "--max_message_size", "2048",
            "--max-conn", "11", "--headers", "cookie,x-api-token", "--history_limit", "5",
        ),
        environ={},
    )
    app = App(c)
    node = app.node
    assert node.disconnector.rate == 7
    assert (node.config.sessions_ttl, node.config.disconnect_mode, node.config.shutdown_timeout) == (42, "always", 9)
    assert node.broker.describe().startswith("Using in-memory broker") and "history limit: 5" in node.broker.describe()
    opts = app.server.options
    assert (opts.max_conn, opts.max_message_size) == (11, 2048)
    assert node.config.env_headers == ("cookie", "x-api-token")
    assert (opts.ws.ping_interval, opts.ws.pong_timeout, opts.ws.max_pending) == (4, 6, 4096)


@pytest.mark.parametrize(
    "argv, environ",
    [
        (("--broker", "redis"), {}),
        (("--broadcast_adapter", "http,redisx"), {}),
        (("--redis_url", "redis://10.0.0.1:6379/0"), {}),
        ((), {"REDIS_URL": "redis://10.0.0.1:6379/0"}),
    ],
)
def test_pubsub_follows_redis_when_not_set(argv, environ):
    """Spec §8.1: Redis in use and no --pubsub → Redis pub/sub; an explicit --pubsub wins."""
    c = load_config(cli(*argv), environ=environ)
    c.apply_presets()
    assert c.pubsub == "redis"
    c = load_config(cli(*argv, "--pubsub", "none"), environ=environ)
    c.apply_presets()
    assert c.pubsub == "none"


def test_pubsub_stays_none_without_redis():
    c = load_config(cli("--broker", "memory", "--broadcast_adapter", "http,redis"), environ={})
    c.apply_presets()
    assert c.pubsub == "none"


def test_presence_options():
    c = load_config(cli("--presence_ttl", "2", "--presence_max_per_stream", "50"), environ={})
    limits = c.presence_limits()
    assert (limits.ttl, limits.max_per_stream, limits.max_per_session, limits.max_info_size) == (2, 50, 100, 4096)
    c.presence_ttl = 0
    with pytest.raises(ConfigError, match="presence_ttl"):
        c.validate()
