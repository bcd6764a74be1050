"""A FastAPI application with pycable: a notes board whose pages see new notes live.

Run it (two terminals; ``make install`` installed both)::

    ANYCABLE_SECRET=dev .venv/bin/uvicorn examples.fastapi_app.app:api --port 8000
    ANYCABLE_SECRET=dev .venv/bin/pycable --rpc_host http://127.0.0.1:8000/_anycable

- ``POST /tokens`` ``{"user": "ann"}`` → ``{"token": …}``: a signed token (a stand-in for your login).
- WebSocket ``ws://127.0.0.1:8080/cable?token=…``; subscribe to ``BoardChannel`` with ``{"board": "b1"}``.
- ``POST /boards/b1/notes`` ``{"text": …}`` with ``Authorization: Bearer <token>`` stores a note and
  broadcasts ``{"note": {"id", "user", "text"}}`` to ``board/b1``; an ``X-Socket-ID`` header
  (the client's session id) leaves that client out.
- ``GET /boards/b1/notes``: the board's notes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections import defaultdict, deque
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

from pycable.contrib.fastapi import Broadcast, lifespan, mount
from pycable.sdk import Application, Channel, Connection

BOARD = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_NOTES = 200  # per board, oldest dropped first


def _key() -> bytes:
    secret = os.environ.get("ANYCABLE_SECRET", "")
    if not secret:
        raise RuntimeError("set ANYCABLE_SECRET (the same value pycable gets)")
    return hmac.new(secret.encode(), b"notes-token", hashlib.sha256).digest()


def issue_token(user: str) -> str:
    return f"{user}.{hmac.new(_key(), user.encode(), hashlib.sha256).hexdigest()}"


def token_user(token: str | None) -> str | None:
    """The user a token was issued to, or None for a missing or forged token."""
    user, _, mac = (token or "").rpartition(".")
    if user and hmac.compare_digest(mac, hmac.new(_key(), user.encode(), hashlib.sha256).hexdigest()):
        return user
    return None


# --- the cable side -------------------------------------------------------------------------


class NotesConnection(Connection):
    async def connect(self) -> None:
        user = token_user(self.request.query.get("token"))
        if user is None:
            self.reject()
        else:
            self.identified_by(user=user)


class BoardChannel(Channel):
    async def subscribed(self) -> None:
        board = self.params.get("board")
        if not isinstance(board, str) or not BOARD.fullmatch(board):
            self.reject()
            return
        self.stream_from(f"board/{board}")


cable = Application(connection=NotesConnection, channels=[BoardChannel])


# --- the HTTP API ---------------------------------------------------------------------------


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=1000)


class TokenIn(BaseModel):
    user: str = Field(min_length=1, max_length=32, pattern=r"^[^.]+$")


notes: defaultdict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=MAX_NOTES))
next_id = 0


def current_user(authorization: Annotated[str | None, Header()] = None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    user = token_user(token) if scheme.lower() == "bearer" else None
    if user is None:
        raise HTTPException(401, "a valid bearer token is required (POST /tokens)")
    return user


def board_name(board: str) -> str:
    if not BOARD.fullmatch(board):
        raise HTTPException(404, "no such board")
    return board


api = FastAPI(title="pycable notes", lifespan=lifespan)
mount(api, cable)  # pycable: --rpc_host http://<this app>/_anycable


@api.post("/tokens")
def create_token(body: TokenIn) -> dict[str, str]:
    return {"token": issue_token(body.user)}


@api.get("/boards/{board}/notes")
def list_notes(board: Annotated[str, Depends(board_name)]) -> list[dict[str, Any]]:
    return list(notes[board])


@api.post("/boards/{board}/notes", status_code=201)
async def add_note(
    body: NoteIn,
    board: Annotated[str, Depends(board_name)],
    user: Annotated[str, Depends(current_user)],
    broadcast: Annotated[Broadcast, Depends()],
) -> dict[str, Any]:
    global next_id
    next_id += 1
    note = {"id": next_id, "user": user, "text": body.text}
    notes[board].append(note)
    await broadcast(f"board/{board}", {"note": note}, to_others=True)
    return note


_key()  # fail at start-up without a secret
