"""One RPC call in, its answer out: the application side of pycable's RPC (docs/rpc.md).

:func:`dispatch` takes the request as the HTTP RPC JSON (``anycable.proto`` messages with
snake_case names; the gRPC adapter converts to it) and returns the answer in the same
form. It does no I/O of its own: it only awaits the application's callbacks, so with
callbacks that do not wait on anything it completes without an event loop (the unit tests
drive it with ``coroutine.send(None)``).

Semantics (spec §6.2-6.4, the same as the Ruby and JS SDKs):

* **Connect**: ``connect()`` runs; ``SUCCESS`` with the encoded identifiers, a
  ``welcome`` transmission (then the callback's own) and the connection state changes;
  ``reject()`` gives ``FAILURE`` with ``disconnect/unauthorized``.
* **Command**: ``subscribe`` runs ``subscribed()`` and answers ``confirm_subscription``
  (then the channel's transmissions) or, rejected, ``FAILURE`` with
  ``reject_subscription``; ``unsubscribe`` runs ``unsubscribed()`` and stops every stream;
  ``message`` runs the action named by ``data["action"]``. Streams, stopped streams,
  ``stop_streams``, ``disconnect`` (``close()``), ``presence`` (``join_presence()`` /
  ``leave_presence()``) and the state changes (a removed key is sent as ``""``, which
  deletes it) are in the answer.
* **Disconnect**: ``unsubscribed()`` of every subscription (its state decoded from the
  JSON pycable sends), then ``disconnect()``.
* **Restore** (``--rpc_restore``): ``restored()`` of every subscription, then of the
  connection.
* An exception in a callback, an unknown channel or action: status ``ERROR`` with an
  ``error_msg``, logged with its traceback. Nothing is half-applied: the answer carries no
  streams, state or transmissions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from pycable.protocol import messages
from pycable.protocol.constants import MESSAGE, SUBSCRIBE, UNAUTHORIZED, UNSUBSCRIBE
from pycable.sdk.application import (
    Channel,
    Connection,
    Request,
    decode_identifiers,
    encode_identifiers,
    reset_current_socket,
    set_current_socket,
)

if TYPE_CHECKING:
    from pycable.sdk.application import Application

__all__ = ["dispatch", "METHODS", "ERROR", "SUCCESS", "FAILURE", "UnknownMethod"]

log = logging.getLogger("pycable.sdk")

ERROR = 0
SUCCESS = 1
FAILURE = 2

METHODS = ("connect", "command", "disconnect", "restore")


class UnknownMethod(LookupError):
    """Not an RPC method (the adapters answer 404 / UNIMPLEMENTED)."""


class CallFailed(Exception):
    """A call that cannot be answered (unknown channel or action, bad request)."""


# -- reading requests (lenient: missing or mistyped fields are empty) ------------------------


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _str_list(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _env(request: Mapping[str, Any]) -> dict[str, Any]:
    env = request.get("env")
    return env if isinstance(env, dict) else {}


def _request(env: Mapping[str, Any]) -> Request:
    return Request(_str(env.get("url")), _str_map(env.get("headers")))


def state_changes(before: Mapping[str, str], after: Mapping[str, str], what: str) -> dict[str, str]:
    """The changes from *before* to *after* as pycable merges them (``""`` deletes).

    Raises:
        TypeError: a state key or value is not a string.
    """
    changes: dict[str, str] = {}
    for key, value in after.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{what} keys and values must be strings, got {key!r}: {value!r}")
        if before.get(key) != value:
            changes[key] = value
    for key in before:
        if key not in after:
            changes[key] = ""
    return changes


def _error(exc: BaseException) -> dict[str, Any]:
    return {"status": ERROR, "error_msg": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__}


# -- calling user code ------------------------------------------------------------------------


async def _call(app: Application, fn: Any, is_async: bool, *args: Any) -> None:
    if is_async:
        await fn(*args)
        return
    result = await app.run_sync(fn, *args)
    if hasattr(result, "__await__"):  # a plain def that returned a coroutine
        await result


def _channel(app: Application, conn: Connection, identifier: str, state: Mapping[str, str]) -> Channel:
    try:
        params = orjson.loads(identifier)
    except orjson.JSONDecodeError:
        raise CallFailed(f"the channel identifier is not JSON: {identifier[:200]!r}") from None
    if not isinstance(params, dict):
        raise CallFailed(f"the channel identifier is not a JSON object: {identifier[:200]!r}")
    name = params.pop("channel", None)
    cls = app.channels.get(name) if isinstance(name, str) else None
    if cls is None:
        raise CallFailed(f"unknown channel {name!r} (known: {', '.join(sorted(app.channels)) or 'none'})")
    return cls(conn, identifier, params, state)


def _decoded_states(env: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Disconnect / Restore ``istate``: ``{identifier: JSON(state map)}``."""
    out: dict[str, dict[str, str]] = {}
    for identifier, raw in _str_map(env.get("istate")).items():
        try:
            state = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(state, dict):
            out[identifier] = {str(k): v for k, v in state.items() if isinstance(v, str)}
    return out


# -- the methods ------------------------------------------------------------------------------


async def connect(app: Application, request: Mapping[str, Any], sid: str) -> dict[str, Any]:
    env = _env(request)
    cstate = _str_map(env.get("cstate"))
    conn = app.connection_class(_request(env), sid=sid, state=cstate)
    try:
        await _call(app, conn.connect, app.connection_async["connect"])
        outcome = conn._outcome
        if outcome.rejected:
            return {
                "status": FAILURE,
                "transmissions": [*outcome.transmissions, messages.disconnect(UNAUTHORIZED, False).decode()],
                "error_msg": "Auth failed",
            }
        reply: dict[str, Any] = {
            "status": SUCCESS,
            "identifiers": encode_identifiers(conn.identifiers),
            "transmissions": [messages.welcome(sid).decode(), *outcome.transmissions],
        }
        changes = state_changes(cstate, conn.state, "connection state")
    except Exception as exc:
        log.exception("connect failed (sid=%s, url=%s)", sid, conn.request.url)
        return _error(exc)
    if changes:
        reply["env"] = {"cstate": changes}
    return reply


async def command(app: Application, request: Mapping[str, Any], sid: str) -> dict[str, Any]:
    env = _env(request)
    name = _str(request.get("command"))
    identifier = _str(request.get("identifier"))
    cstate, istate = _str_map(env.get("cstate")), _str_map(env.get("istate"))
    conn = app.connection_class(
        _request(env),
        sid=sid,
        identifiers=decode_identifiers(_str(request.get("connection_identifiers"))),
        state=cstate,
    )
    try:
        channel = _channel(app, conn, identifier, istate)
    except CallFailed as exc:
        if name == SUBSCRIBE:  # a clear rejection rather than a client retrying for ever
            log.warning("subscription rejected (sid=%s): %s", sid, exc)
            return {"status": FAILURE, "transmissions": [messages.reject_subscription(identifier).decode()]}
        log.error("%s failed (sid=%s): %s", name or "command", sid, exc)
        return _error(exc)
    cls = type(channel)
    try:
        if name == SUBSCRIBE:
            await _call(app, channel.subscribed, cls._async["subscribed"])
        elif name == UNSUBSCRIBE:
            await _call(app, channel.unsubscribed, cls._async["unsubscribed"])
            channel.stop_all_streams()
        elif name == MESSAGE:
            await _perform(app, channel, _str(request.get("data")))
        else:
            raise CallFailed(f"unknown command {name!r}")
        return _command_reply(conn, channel, name, cstate, istate)
    except CallFailed as exc:
        log.error("%s failed (sid=%s, identifier=%s): %s", name, sid, identifier, exc)
        return _error(exc)
    except Exception as exc:
        log.exception("%s failed (sid=%s, identifier=%s)", name, sid, identifier)
        return _error(exc)


async def _perform(app: Application, channel: Channel, raw: str) -> None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CallFailed(f"the message data is not JSON: {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise CallFailed("the message data is not a JSON object")
    action = data.get("action")
    spec = type(channel)._actions.get(action) if isinstance(action, str) else None
    if spec is None:
        raise CallFailed(f"{type(channel).__name__} has no action {action!r}")
    is_async, takes_data = spec
    fn = getattr(channel, action)  # type: ignore[arg-type]
    if takes_data:
        await _call(app, fn, is_async, data)
    else:
        await _call(app, fn, is_async)


def _command_reply(
    conn: Connection, channel: Channel, name: str, cstate: Mapping[str, str], istate: Mapping[str, str]
) -> dict[str, Any]:
    outcome = conn._outcome
    rejected = channel._rejected or outcome.rejected
    transmissions = outcome.transmissions
    if name == SUBSCRIBE:
        confirm = messages.reject_subscription if rejected else messages.confirm_subscription
        transmissions = [confirm(channel.identifier).decode(), *transmissions]
    reply: dict[str, Any] = {"status": FAILURE if rejected else SUCCESS}
    if outcome.closed:
        reply["disconnect"] = True
    if channel._stop_all:
        reply["stop_streams"] = True
    if channel._streams and not rejected:
        reply["streams"] = list(dict.fromkeys(channel._streams))
    if channel._stopped:
        reply["stopped_streams"] = list(dict.fromkeys(channel._stopped))
    if transmissions:
        reply["transmissions"] = transmissions
    if channel._presence is not None and not rejected and name != UNSUBSCRIBE:
        kind, pid, info = channel._presence
        reply["presence"] = {"type": kind, **({"id": pid} if pid else {}), **({"info": info} if info else {})}
    env: dict[str, dict[str, str]] = {}
    if name != UNSUBSCRIBE and not rejected and (ichanges := state_changes(istate, channel.state, "channel state")):
        env["istate"] = ichanges
    if cchanges := state_changes(cstate, conn.state, "connection state"):
        env["cstate"] = cchanges
    if env:
        reply["env"] = env
    return reply


async def _closing(app: Application, request: Mapping[str, Any], sid: str, restore: bool) -> dict[str, Any]:
    """Disconnect: every channel's ``unsubscribed``, then the connection's ``disconnect``.
    Restore: every channel's ``restored``, then the connection's. All run, even after a
    failure; the answer is ``ERROR`` with the first one."""
    env = _env(request)
    conn = app.connection_class(
        _request(env),
        sid=sid,
        identifiers=decode_identifiers(_str(request.get("identifiers"))),
        state=_str_map(env.get("cstate")),
    )
    conn.restored_sid = _str(request.get("restored_sid"))
    channel_hook, conn_hook = ("restored", "restored") if restore else ("unsubscribed", "disconnect")
    states = _decoded_states(env)
    errors: list[BaseException] = []
    for identifier in _str_list(request.get("subscriptions")):
        try:
            channel = _channel(app, conn, identifier, states.get(identifier, {}))
        except CallFailed as exc:
            log.warning("%s: skipping subscription %s (sid=%s): %s", channel_hook, identifier, sid, exc)
            continue
        try:
            await _call(app, getattr(channel, channel_hook), type(channel)._async[channel_hook])
        except Exception as exc:
            log.exception("%s failed (sid=%s, identifier=%s)", channel_hook, sid, identifier)
            errors.append(exc)
    try:
        await _call(app, getattr(conn, conn_hook), app.connection_async[conn_hook])
    except Exception as exc:
        log.exception("%s failed (sid=%s)", conn_hook, sid)
        errors.append(exc)
    return _error(errors[0]) if errors else {"status": SUCCESS}


async def dispatch(app: Application, method: str, request: Mapping[str, Any], sid: str = "") -> dict[str, Any]:
    """Answer one RPC call.

    Args:
        app: the application.
        method: ``connect``, ``command``, ``disconnect`` or ``restore``.
        request: the request as HTTP RPC JSON (a dict).
        sid: the session id (``x-anycable-meta-sid`` / gRPC metadata ``sid``); for Restore
            the request's own ``sid`` field wins.

    Returns:
        The answer as HTTP RPC JSON (empty fields left out). Never raises for what the
        application does: its exceptions become ``ERROR`` answers.

    Raises:
        UnknownMethod: *method* is not an RPC method.
    """
    if method == "restore":
        sid = _str(request.get("sid")) or sid
    token = set_current_socket(sid or None)
    try:
        if method == "command":
            return await command(app, request, sid)
        if method == "connect":
            return await connect(app, request, sid)
        if method in ("disconnect", "restore"):
            return await _closing(app, request, sid, restore=method == "restore")
        raise UnknownMethod(method)
    finally:
        reset_current_socket(token)
