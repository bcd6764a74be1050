"""The SDK reads the server's environment and derives every key exactly as the server does:
each case builds the server's own configuration from the same environment and compares."""

from __future__ import annotations

import pytest

from pycable.app import build_controller
from pycable.config import load_config
from pycable.rpc.http import from_config as http_controller
from pycable.sdk import Settings
from pycable.sdk.config import DEFAULT_BROADCAST_URL

ENVS = [
    {},
    {"ANYCABLE_SECRET": "s3cret"},
    {"ANYCABLE_SECRET": "none"},
    {"ANYCABLE_SECRET": "s3cret", "ANYCABLE_BROADCAST_KEY": "bk", "ANYCABLE_HTTP_RPC_SECRET": "rk"},
    {"ANYCABLE_SECRET": "s3cret", "ANYCABLE_BROADCAST_KEY": "none"},
    {"ANYCABLE_SECRET": "s3cret", "ANYCABLE_PUBLIC": "true"},
    {"ANYCABLE_SECRET": "s3cret", "ANYCABLE_JWT_SECRET": "j", "ANYCABLE_STREAMS_SECRET": "st"},
    {"ANYCABLE_STREAMS_SECRET": "st", "ANYCABLE_TURBO_STREAMS_SECRET": "tu"},
    {"ANYCABLE_SECRET": "s3cret", "ANYCABLE_PORT": "9000"},
    {"ANYCABLE_HTTP_BROADCAST_PORT": "9100", "ANYCABLE_HTTP_BROADCAST_PATH": "/pub"},
]


@pytest.mark.parametrize("env", ENVS, ids=lambda e: ",".join(f"{k[9:]}={v}" for k, v in e.items()) or "empty")
def test_same_keys_as_the_server(env):
    server_env = {**env, "ANYCABLE_RPC_HOST": "http://app/_anycable", "ANYCABLE_TURBO_STREAMS": "true"}
    config = load_config({}, server_env)
    controller = build_controller(config)
    sdk = Settings.from_env(env)
    assert sdk.effective_broadcast_key == config.effective_broadcast_key
    assert sdk.effective_http_rpc_secret == http_controller(config).secret
    assert sdk.effective_jwt_secret == controller.jwt_secret
    assert sdk.effective_streams_secret == controller.streams_secret
    assert sdk.effective_turbo_streams_secret == controller.turbo_secret
    port = config.effective_broadcast_port
    assert sdk.effective_broadcast_url == f"http://127.0.0.1:{port}{config.http_broadcast_path}"


def test_defaults_and_overrides():
    assert Settings.from_env({}).effective_broadcast_url == DEFAULT_BROADCAST_URL == "http://127.0.0.1:8090/_broadcast"
    env = {
        "ANYCABLE_SECRET": "a",
        "ANYCABLE_BROADCAST_URL": "http://cable:8080/_broadcast",
        "ANYCABLE_BROADCAST_ADAPTER": "redisx,http",
        "ANYCABLE_REDIS_URL": "redis://r:1",
        "REDIS_URL": "redis://ignored",
    }
    s = Settings.from_env(env, secret="b")
    assert s.secret == "b", "explicit arguments override the environment"
    assert s.effective_broadcast_url == "http://cable:8080/_broadcast"
    assert s.broadcast_adapter == "redisx", "the first of a server-style list"
    assert s.redis_url == "redis://r:1"
    assert Settings.from_env({"REDIS_URL": "redis://x:2"}).redis_url == "redis://x:2"


@pytest.mark.parametrize("adapter", ["nats", "redis"])
def test_unsupported_adapter_is_a_clear_error(adapter):
    with pytest.raises(ValueError, match="not supported by the SDK"):
        Settings(broadcast_adapter=adapter)


def test_bad_numbers_name_the_variable():
    with pytest.raises(ValueError, match="ANYCABLE_PORT='x'"):
        Settings.from_env({"ANYCABLE_PORT": "x"})
