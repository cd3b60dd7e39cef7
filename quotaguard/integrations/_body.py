"""Reading a request body before the app does, and handing it on untouched."""

from __future__ import annotations

from collections import deque

from ._types import Message, Receive, Scope, header


async def read_body(
    scope: Scope, receive: Receive, limit: int
) -> tuple[bytes | None, list[Message]] | None:
    """Read the request body, up to ``limit`` bytes: (body or None when larger, messages).

    None when the client disconnected first. The messages read are kept to be replayed.
    """
    declared = header(scope, b"content-length")
    if (
        declared is not None
        and declared.isdigit()
        and (len(declared) > 18 or int(declared) > limit)
    ):
        return None, []  # too large: leave it for the app, unread
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, messages
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), messages


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``messages`` first, untouched, then reads on."""
    if not messages:
        return receive
    pending = deque(messages)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay
