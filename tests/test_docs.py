"""Docs stay true: the README's configuration table is generated from the Config fields."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_is_current():
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from config_table import table

    readme = (ROOT / "README.md").read_text()
    start, end = readme.index("<!-- config:start -->"), readme.index("<!-- config:end -->")
    assert readme[start:end].strip().removeprefix("<!-- config:start -->").strip() == table().strip(), (
        "README configuration table is stale: regenerate with python scripts/config_table.py"
    )


def test_readme_setup_is_make_serve_and_make_test():
    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_python_application_runs():
    """The README's "Python applications" example: exec it, then answer a Connect, a
    subscribe and a perform with it (no network: the broadcast goes to a recorder)."""
    import importlib
    import json
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python applications") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    app = namespace["app"]

    sent: list[bytes] = []

    class Recorder:
        def publish(self, payload: bytes) -> None:
            sent.append(payload)

        async def apublish(self, payload: bytes) -> None:
            sent.append(payload)

    broadcasting = importlib.import_module("pycable.sdk.broadcast")
    previous, broadcasting._default = broadcasting._default, Recorder()
    try:

        def call(method: str, body: dict) -> dict:
            coro = app.handle(method, body, "sid1")
            try:
                coro.send(None)
            except StopIteration as stop:
                return stop.value
            raise AssertionError("the example waited on something")

        env = {"url": "http://h/cable", "headers": {"cookie": "user=ann"}}
        assert call("connect", {"env": env})["identifiers"] == '{"user":"ann"}'
        ident = json.dumps({"channel": "ChatChannel", "room": "1"})
        sub = {"command": "subscribe", "identifier": ident, "connection_identifiers": '{"user":"ann"}', "env": env}
        assert call("command", sub)["streams"] == ["chat/1"]
        data = json.dumps({"action": "speak", "text": "hi"})
        assert call("command", {**sub, "command": "message", "data": data})["status"] == 1
        namespace["notify"]("1", "sync")
        assert [json.loads(p) for p in sent] == [
            {"stream": "chat/1", "data": '{"user":"ann","text":"hi"}'},
            {"stream": "chat/1", "data": '{"text":"sync"}'},
        ]
    finally:
        broadcasting._default = previous

