"""The SDK's dispatch, request in, answer out, with no event loop and no network: the
callbacks here never wait on anything, so each call completes on its first step."""

from __future__ import annotations

import importlib
import json
import logging
from typing import Any

import pytest

from pycable.sdk import Application, Channel, Connection, current_socket
from pycable.sdk.application import Request, encode_identifiers
from pycable.sdk.dispatch import ERROR, FAILURE, SUCCESS, UnknownMethod, dispatch, state_changes

# The module (the package's ``broadcast`` attribute is the function of that name).
broadcast_module = importlib.import_module("pycable.sdk.broadcast")


def run(coro: Any) -> Any:
    """Drive a coroutine that must not suspend (no event loop here)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the dispatch waited on something")


seen: list[tuple[str, Any]] = []


class UserConnection(Connection):
    async def connect(self) -> None:
        user = self.request.query.get("user")
        if user is None:
            self.reject()
            return
        if user == "boom":
            raise RuntimeError("connect exploded")
        self.identified_by(user=user, org=self.request.cookies.get("org", "none"))
        self.state["user"] = user
        self.state.pop("old", None)
        seen.append(("connect", current_socket()))

    def disconnect(self) -> None:  # sync override
        seen.append(("disconnect", dict(self.identifiers), dict(self.state)))

    async def restored(self) -> None:
        seen.append(("restored", self.sid, self.restored_sid, self.user))


class Room(Channel):
    async def subscribed(self) -> None:
        if "room" not in self.params:
            self.reject()
            return
        self.stream_from(f"room:{self.params['room']}")
        self.state["n"] = "0"
        self.transmit({"hi": self.connection.user})

    async def unsubscribed(self) -> None:
        seen.append(("unsubscribed", self.identifier, dict(self.state)))
        if self.params.get("room") == "bad":
            raise KeyError("unsubscribe failed")

    async def restored(self) -> None:
        seen.append(("channel_restored", self.identifier, dict(self.state)))

    async def bump(self, data: dict[str, Any]) -> None:
        self.state["n"] = str(int(self.state["n"]) + data.get("by", 1))
        self.transmit({"n": self.state["n"], "action": data["action"]})

    def sync_action(self, data: dict[str, Any]) -> None:
        self.transmit({"sync": data["x"], "socket": current_socket()})

    async def no_data(self) -> None:
        self.transmit("plain string")

    async def streams(self, data: dict[str, Any]) -> None:
        self.stop_stream_from("room:1")
        self.stream_from("a")
        self.stream_from("a")
        self.stream_from("w", whisper=True)

    async def reset(self, data: dict[str, Any]) -> None:
        self.stop_all_streams()
        self.stream_from("fresh")

    async def forget(self, data: dict[str, Any]) -> None:
        del self.state["n"]
        self.connection.state["theme"] = "dark"
        self.connection.state.pop("user")

    async def bad_state(self, data: dict[str, Any]) -> None:
        self.state["n"] = 5  # type: ignore[assignment]

    async def fail(self, data: dict[str, Any]) -> None:
        self.transmit("lost")
        self.stream_from("lost")
        self.state["n"] = "99"
        raise ValueError("action failed")

    async def bye(self, data: dict[str, Any]) -> None:
        self.transmit({"bye": True})
        self.connection.close()

    async def present(self, data: dict[str, Any]) -> None:
        self.stream_from("room:1", presence=True)
        self.join_presence(data["id"], data.get("info"))

    async def absent(self, data: dict[str, Any]) -> None:
        self.leave_presence()

    def _private(self, data: dict[str, Any]) -> None:
        raise AssertionError("a private method was called")

    @property
    def prop(self) -> str:
        return "not an action"

    @staticmethod
    def helper(data: dict[str, Any]) -> None:
        raise AssertionError("a static method was called")


class Named(Channel):
    channel_name = "named"


@pytest.fixture
def app() -> Application:
    seen.clear()
    return Application(UserConnection, [Room, Named], sync_callbacks="inline")


def ident(**params: Any) -> str:
    return json.dumps({"channel": "Room", **params})


def command(app: Application, name: str, identifier: str, *, data: Any = None, istate=None, cstate=None, sid="s1"):
    body: dict[str, Any] = {
        "command": name,
        "identifier": identifier,
        "connection_identifiers": encode_identifiers({"user": "ann"}),
        "env": {"url": "http://h/cable", "cstate": cstate or {"user": "ann"}, "istate": istate or {}},
    }
    if data is not None:
        body["data"] = json.dumps(data)
    return run(dispatch(app, "command", body, sid))


def decoded(answer: dict[str, Any]) -> list[Any]:
    return [json.loads(t) for t in answer.get("transmissions", [])]


class TestRequest:
    def test_url_query_headers_cookies_and_remote_addr(self):
        r = Request(
            "https://h.example/cable?user=ann&x=1&x=2&empty=",
            {"Cookie": 'a=1; b="two words"; c=%C3%A9; junk', "X-Api": "t", "REMOTE_ADDR": "10.0.0.1"},
        )
        assert r.path == "/cable"
        assert r.query == {"user": "ann", "x": "2", "empty": ""}
        assert r.headers == {"cookie": 'a=1; b="two words"; c=%C3%A9; junk', "x-api": "t"}
        assert r.cookies == {"a": "1", "b": "two words", "c": "é"}
        assert r.remote_addr == "10.0.0.1"

    def test_empty(self):
        r = Request()
        assert (r.url, r.path, r.query, r.headers, r.cookies, r.remote_addr) == ("", "", {}, {}, {}, "")


class TestConnect:
    def test_success(self, app):
        env = {"url": "http://h/cable?user=ann", "headers": {"cookie": "org=acme"}, "cstate": {"old": "x"}}
        answer = run(dispatch(app, "connect", {"env": env}, "sid-1"))
        assert answer["status"] == SUCCESS
        assert answer["identifiers"] == '{"org":"acme","user":"ann"}', "compact JSON, sorted keys"
        assert decoded(answer) == [{"type": "welcome", "sid": "sid-1"}]
        assert answer["env"] == {"cstate": {"user": "ann", "old": ""}}, "changes only; a removed key is ''"
        assert seen == [("connect", "sid-1")], "current_socket() is the call's sid"
        assert current_socket() is None

    def test_reject(self, app):
        answer = run(dispatch(app, "connect", {"env": {"url": "http://h/cable"}}, "s"))
        assert answer["status"] == FAILURE
        assert decoded(answer) == [{"type": "disconnect", "reason": "unauthorized", "reconnect": False}]
        assert "identifiers" not in answer

    def test_an_exception_is_an_error_answer_logged_with_its_traceback(self, app, caplog):
        with caplog.at_level(logging.ERROR, "pycable.sdk"):
            answer = run(dispatch(app, "connect", {"env": {"url": "http://h/cable?user=boom"}}, "s"))
        assert answer == {"status": ERROR, "error_msg": "RuntimeError: connect exploded"}
        record = next(r for r in caplog.records if "connect failed" in r.getMessage())
        assert record.exc_info is not None and "connect exploded" in caplog.text

    def test_default_connection_accepts_anonymously(self):
        answer = run(dispatch(Application(), "connect", {}, "s"))
        assert answer["status"] == SUCCESS and answer["identifiers"] == "{}"

    def test_malformed_request_fields_are_read_as_empty(self, app):
        answer = run(dispatch(app, "connect", {"env": {"url": 5, "headers": [1], "cstate": "x"}}, "s"))
        assert answer["status"] == FAILURE

    def test_identifiers_as_attributes(self):
        conn = Connection(Request(), identifiers={"user": "ann"})
        assert conn.user == "ann"
        with pytest.raises(AttributeError, match="nobody"):
            _ = conn.nobody


class TestSubscribe:
    def test_confirm_first_then_transmissions_streams_and_state(self, app):
        answer = command(app, "subscribe", ident(room="1"))
        assert answer["status"] == SUCCESS
        assert decoded(answer) == [
            {"identifier": ident(room="1"), "type": "confirm_subscription"},
            {"identifier": ident(room="1"), "message": {"hi": "ann"}},
        ]
        assert answer["streams"] == ["room:1"]
        assert answer["env"] == {"istate": {"n": "0"}}
        assert "disconnect" not in answer and "stop_streams" not in answer

    def test_reject(self, app):
        answer = command(app, "subscribe", ident())
        assert answer["status"] == FAILURE
        assert decoded(answer) == [{"identifier": ident(), "type": "reject_subscription"}]
        assert "streams" not in answer and "env" not in answer

    @pytest.mark.parametrize("identifier", ['{"channel":"Nope"}', "not json", "[1]", '{"room":"1"}'])
    def test_unknown_channel_or_bad_identifier_is_rejected(self, app, identifier):
        answer = command(app, "subscribe", identifier)
        assert answer["status"] == FAILURE
        assert decoded(answer) == [{"identifier": identifier, "type": "reject_subscription"}]

    def test_channel_names(self, app):
        assert Room.channel_name == "Room" and Named.channel_name == "named"
        answer = command(app, "subscribe", json.dumps({"channel": "named"}))
        assert answer["status"] == SUCCESS, "the default subscribed() accepts"
        with pytest.raises(ValueError, match="two channels named"):
            Application(channels=[Named, type("Other", (Channel,), {"channel_name": "named"})])
        with pytest.raises(ValueError):
            Application(channels=[dict])  # type: ignore[list-item]


class TestPerform:
    def test_actions_are_the_public_methods_declared_on_the_subclass(self):
        assert Room.actions() == {"bump", "sync_action", "no_data", "streams", "reset", "forget", "bad_state",
                                  "fail", "bye", "present", "absent"}  # fmt: skip

    def test_action_gets_the_whole_data_and_state(self, app):
        answer = command(app, "message", ident(room="1"), data={"action": "bump", "by": 2}, istate={"n": "3"})
        assert decoded(answer) == [{"identifier": ident(room="1"), "message": {"n": "5", "action": "bump"}}]
        assert answer["env"] == {"istate": {"n": "5"}}

    def test_sync_action_and_action_without_data(self, app):
        answer = command(app, "message", ident(room="1"), data={"action": "sync_action", "x": 1}, sid="s9")
        assert decoded(answer)[0]["message"] == {"sync": 1, "socket": "s9"}
        answer = command(app, "message", ident(room="1"), data={"action": "no_data"})
        assert decoded(answer)[0]["message"] == "plain string"

    @pytest.mark.parametrize(
        "action", ["_private", "__init__", "transmit", "stream_from", "subscribed", "prop", "helper", "nope", 5, None]
    )
    def test_anything_else_is_an_error_answer(self, app, action):
        answer = command(app, "message", ident(room="1"), data={"action": action})
        assert answer["status"] == ERROR and "has no action" in answer["error_msg"]

    @pytest.mark.parametrize("data", ["not json", "[1,2]"])
    def test_bad_data_is_an_error_answer(self, app, data):
        body = {"command": "message", "identifier": ident(room="1"), "data": data}
        answer = run(dispatch(app, "command", body, "s"))
        assert answer["status"] == ERROR

    def test_unknown_channel_on_perform_is_an_error(self, app):
        assert command(app, "message", '{"channel":"Nope"}', data={"action": "x"})["status"] == ERROR

    def test_streams_stopped_streams_whisper(self, app):
        answer = command(app, "message", ident(room="1"), data={"action": "streams"}, istate={"n": "1"})
        assert answer["streams"] == ["a", "w"], "deduplicated, in order"
        assert answer["stopped_streams"] == ["room:1"]
        assert answer["env"] == {"istate": {"$w": "w"}}, "whisper: the $w channel state"

    def test_stop_all_streams(self, app):
        answer = command(app, "message", ident(room="1"), data={"action": "reset"})
        assert answer["stop_streams"] is True and answer["streams"] == ["fresh"]

    def test_state_deletions(self, app):
        answer = command(app, "message", ident(room="1"), data={"action": "forget"}, istate={"n": "1", "k": "v"})
        assert answer["env"] == {"istate": {"n": ""}, "cstate": {"theme": "dark", "user": ""}}

    def test_non_string_state_is_an_error(self, app):
        answer = command(app, "message", ident(room="1"), data={"action": "bad_state"}, istate={"n": "1"})
        assert answer["status"] == ERROR and "must be strings" in answer["error_msg"]

    def test_an_exception_answers_error_and_nothing_else(self, app, caplog):
        with caplog.at_level(logging.ERROR, "pycable.sdk"):
            answer = command(app, "message", ident(room="1"), data={"action": "fail"}, istate={"n": "1"})
        assert answer == {"status": ERROR, "error_msg": "ValueError: action failed"}
        assert any(r.exc_info for r in caplog.records)

    def test_presence(self, app):
        answer = command(app, "message", ident(room="1"), data={"action": "present", "id": 7, "info": {"n": "a"}})
        assert answer["presence"] == {"type": "join", "id": "7", "info": '{"n":"a"}'}
        assert answer["env"] == {"istate": {"$p": "room:1"}}, "the presence stream, in the same answer"
        answer = command(
            app, "message", ident(room="1"), data={"action": "present", "id": "x"}, istate={"$p": "room:1"}
        )
        assert answer["presence"] == {"type": "join", "id": "x"}, "no info"
        answer = command(app, "message", ident(room="1"), data={"action": "absent"}, istate={"$p": "room:1"})
        assert answer["presence"] == {"type": "leave"}

    @pytest.mark.parametrize("pid", ["", "x" * 257, True, None, 1.5])
    def test_bad_presence_ids(self, app, pid):
        answer = command(app, "message", ident(room="1"), data={"action": "present", "id": pid})
        assert answer["status"] == ERROR and "presence id" in answer["error_msg"]

    def test_join_presence_needs_a_presence_stream(self):
        class Lonely(Channel):
            async def subscribed(self) -> None:
                self.stream_from("s")
                self.join_presence("me")

        answer = run(dispatch(Application(channels=[Lonely]), "command",
                              {"command": "subscribe", "identifier": '{"channel":"Lonely"}'}, "s"))  # fmt: skip
        assert answer["status"] == ERROR and "presence stream" in answer["error_msg"]

    def test_close(self, app):
        answer = command(app, "message", ident(room="1"), data={"action": "bye"})
        assert answer["disconnect"] is True and decoded(answer)[0]["message"] == {"bye": True}

    def test_unknown_command(self, app):
        assert command(app, "whatever", ident(room="1"))["status"] == ERROR


class TestUnsubscribeDisconnectRestore:
    def test_unsubscribe_stops_every_stream(self, app):
        answer = command(app, "unsubscribe", ident(room="1"), istate={"n": "4"})
        assert answer == {"status": SUCCESS, "stop_streams": True}
        assert seen == [("unsubscribed", ident(room="1"), {"n": "4"})]

    def test_disconnect_unsubscribes_each_channel_with_its_state_then_disconnects(self, app):
        one, two = ident(room="1"), ident(room="2")
        body = {
            "identifiers": encode_identifiers({"user": "ann"}),
            "subscriptions": [one, two, '{"channel":"Gone"}'],
            "env": {"cstate": {"user": "ann"}, "istate": {one: json.dumps({"n": "1"}), two: "not json"}},
        }
        assert run(dispatch(app, "disconnect", body, "s")) == {"status": SUCCESS}
        assert seen == [
            ("unsubscribed", one, {"n": "1"}),
            ("unsubscribed", two, {}),
            ("disconnect", {"user": "ann"}, {"user": "ann"}),
        ]

    def test_a_failing_unsubscribe_still_runs_the_others(self, app):
        bad, good = ident(room="bad"), ident(room="2")
        body = {"identifiers": '{"user":"ann"}', "subscriptions": [bad, good], "env": {}}
        answer = run(dispatch(app, "disconnect", body, "s"))
        assert answer["status"] == ERROR and "unsubscribe failed" in answer["error_msg"]
        assert [s[0] for s in seen] == ["unsubscribed", "unsubscribed", "disconnect"]

    def test_restore(self, app):
        one = ident(room="1")
        body = {
            "identifiers": '{"user":"max"}',
            "subscriptions": [one],
            "sid": "new",
            "restored_sid": "old",
            "env": {"cstate": {"user": "max"}, "istate": {one: '{"n":"2"}'}},
        }
        assert run(dispatch(app, "restore", body, "header-sid")) == {"status": SUCCESS}
        assert seen == [("channel_restored", one, {"n": "2"}), ("restored", "new", "old", "max")]

    def test_unknown_method(self, app):
        with pytest.raises(UnknownMethod):
            run(dispatch(app, "explode", {}, "s"))


class TestToOthers:
    def test_broadcast_to_others_uses_the_current_socket(self, app, monkeypatch):
        sent: list[bytes] = []

        class Recorder:
            def publish(self, payload: bytes) -> None:
                sent.append(payload)

        monkeypatch.setattr(broadcast_module, "_default", Recorder())

        class Speaker(Channel):
            def speak(self, data: dict[str, Any]) -> None:
                broadcast_module.broadcast("room", {"t": data["t"]}, to_others=True)

        speaking = Application(channels=[Speaker], sync_callbacks="inline")
        body = {"command": "message", "identifier": '{"channel":"Speaker"}', "data": '{"action":"speak","t":1}'}
        assert run(dispatch(speaking, "command", body, "me"))["status"] == SUCCESS
        assert [json.loads(p) for p in sent] == [
            {"stream": "room", "data": '{"t":1}', "meta": {"exclude_socket": "me"}}
        ]
        with pytest.raises(RuntimeError, match="to_others"):
            broadcast_module.broadcast("room", "x", to_others=True)


def test_state_changes():
    assert state_changes({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}, "s") == {"b": "3", "c": "4"}
    assert state_changes({"a": "1"}, {}, "s") == {"a": ""}
    with pytest.raises(TypeError):
        state_changes({}, {"a": None}, "s")  # type: ignore[dict-item]
