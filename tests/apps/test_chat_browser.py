"""The chat demo in a real browser: Debian's headless Chromium driven by Playwright, against the
stack ``make demo`` starts (``python -m examples.chat.demo``: a real pycable process with the
broker preset and the app under uvicorn) on free ports.

Two pages log in and share a room, each showing both users as present; one goes offline (DevTools network emulation) while the other
sends 5 messages; back online it shows all 5 exactly once, in order, without a reload, and the
app saw a Restore, not a new Connect.

SETUP: ``make test`` installs Debian's ``chromium`` (``make chromium``) and bundles the page's
JavaScript (``make install``). Playwright drives ``/usr/bin/chromium``; it never downloads a
browser of its own. Set ``CHAT_SCREENSHOT=docs/img/chat.png`` to refresh the docs' screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.server import ROOT, free_port

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 30_000  # a failure bound, not a pace: every wait below awaits a condition on the page


def chromium_or_skip() -> str:
    if not os.path.exists(CHROMIUM):
        why = "needs root and apt-get" if os.geteuid() != 0 or not shutil.which("apt-get") else "its install failed"
        pytest.skip(f"Debian's chromium is not installed ({why}); make chromium installs it")
    return CHROMIUM


class Demo:
    """``python -m examples.chat.demo`` on free ports; its output is kept for failure messages."""

    def __init__(self) -> None:
        self.app_port, self.cable_port, broadcast_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "ANYCABLE_SECRET": "browser-test-secret",
            "ANYCABLE_BROADCAST_URL": f"http://127.0.0.1:{broadcast_port}/_broadcast",
            "CHAT_TEST_MODE": "1",
        }
        for name in (
            "ANYCABLE_HTTP_RPC_SECRET",
            "ANYCABLE_BROADCAST_KEY",
            "ANYCABLE_BROADCAST_ADAPTER",
            "CHAT_CABLE_URL",
        ):
            env.pop(name, None)
        argv = [sys.executable, "-m", "examples.chat.demo", "--app-port", str(self.app_port),
                "--cable-port", str(self.cable_port)]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output: list[str] = []
        self.url = ""
        self._started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.output.append(line)
                if line.startswith("Chat demo: open "):
                    self.url = line.split()[3]
                    self._started.set()
        self._started.set()  # it exited

    def wait_ready(self) -> str:
        if not self._started.wait(60) or not self.url:
            raise RuntimeError("the demo did not start:\n" + self.log())
        return self.url

    def log(self) -> str:
        return "\n".join(self.output)

    def rpc_calls(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}_test/rpc_calls", timeout=10) as resp:
            calls: dict[str, int] = json.load(resp)
        return calls

    def stop(self) -> int:
        """Ctrl-C, as a user stops ``make demo``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(30)
        self._reader.join(10)  # the children exited too: their end of the pipe is closed
        return code


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    chromium_or_skip()
    d = Demo()
    try:
        d.wait_ready()
        yield d
    finally:
        code = d.stop()
    assert code == 0, d.log()


def texts(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#messages li", "els => els.map(e => e.textContent)"))


def wait_text(page: Any, text: str) -> None:
    page.wait_for_function(
        "t => [...document.querySelectorAll('#messages li')].some(e => e.textContent === t)", arg=text, timeout=WAIT_MS
    )


def open_chat(browser: Any, url: str, name: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 720, "height": 560})
    page = context.new_page()
    page.goto(url)
    page.fill("#login input[name=name]", name)
    page.click("#login button")
    page.wait_for_selector("#chat[data-subscribed=true]", timeout=WAIT_MS)
    page.wait_for_selector("#state[data-state=connected]", timeout=WAIT_MS)
    return context, page


def say(page: Any, text: str) -> None:
    page.fill("#speak input[name=text]", text)
    page.click("#speak button")
    # The form clears the input once perform() resolved: the message is on its way.
    page.wait_for_function("() => document.querySelector('#speak input').value === ''", timeout=WAIT_MS)


def test_two_pages_chat_and_a_network_loss_is_restored_without_duplicates(demo: Demo) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="pycable-chat-") as tmp:
        # launch() runs the browser on a fresh temporary user-data-dir of its own.
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ann_ctx, ann = open_chat(browser, demo.url, "ann")
            _, bob = open_chat(browser, demo.url, "bob")

            ann.evaluate("window.loadedOnce = true")  # gone if the page were reloaded
            say(ann, "hello from ann")
            say(bob, "hi ann")
            for page in (ann, bob):
                wait_text(page, "bobhi ann")
                assert texts(page) == ["annhello from ann", "bobhi ann"]
            calls = demo.rpc_calls()
            assert calls["connect"] == 2
            for page in (ann, bob):  # presence: who is in the room
                page.wait_for_selector('#present[data-names=\'["ann","bob"]\']', timeout=WAIT_MS)

            # ann's network goes away: the socket stalls, her client notices (missed pings) and drops it.
            ann_ctx.set_offline(True)
            ann.wait_for_function("window.chatEvents.some(e => e.event === 'disconnect')", timeout=WAIT_MS)
            missed = [f"missed {i}" for i in range(1, 6)]
            for text in missed:
                say(bob, text)
            wait_text(bob, "bobmissed 5")
            assert texts(ann) == ["annhello from ann", "bobhi ann"]

            ann_ctx.set_offline(False)
            wait_text(ann, "bobmissed 5")
            ann.wait_for_function("window.chatEvents.at(-1).event === 'connect'", timeout=WAIT_MS)
            say(bob, "welcome back")  # whatever could still arrive late arrives before this
            wait_text(ann, "bobwelcome back")
            expected = ["annhello from ann", "bobhi ann", *[f"bob{t}" for t in missed], "bobwelcome back"]
            assert texts(ann) == expected
            assert texts(bob) == expected

            events = ann.evaluate("window.chatEvents")
            assert events[-1] == {"event": "connect", "restored": True, "reconnect": True}, events
            assert ann.evaluate("window.loadedOnce") is True  # no reload
            after = demo.rpc_calls()
            assert after["connect"] == 2, after  # no new Connect...
            assert after.get("restore", 0) == calls.get("restore", 0) + 1, after  # ...a Restore

            shot = Path(tmp) / "chat.png"
            ann.screenshot(path=str(shot))
            assert shot.read_bytes().startswith(b"\x89PNG")
            if target := os.environ.get("CHAT_SCREENSHOT"):
                shutil.copyfile(shot, ROOT / target)
        finally:
            browser.close()
