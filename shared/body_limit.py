"""A cap on request bodies, enforced before the application reads any of it (pure ASGI).

A body is refused with 413 from its `Content-Length` when that is over the cap, before a byte
of it is read; a body without one (chunked), or longer than it said, is refused as soon as
what arrived passes the cap. Nothing above the cap is ever buffered, parsed or checked for a
signature. The 413 closes the connection: the rest of the body is not read and thrown away.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = 413


class BodyTooLarge(HTTPException):
    """Raised from the application's `receive`: FastAPI passes an HTTPException through its
    body parsing (any other error there becomes a 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            TOO_LARGE,
            f"request body over {max_bytes} bytes",
            headers={"Connection": "close"},
        )


def declared_too_large(content_length: bytes | None, max_bytes: int) -> bool:
    """Whether a `Content-Length` header alone refuses the request: over the cap, or not a
    length at all."""
    if content_length is None:
        return False
    text = content_length.decode("latin-1").strip()
    return not text.isdigit() or int(text) > max_bytes


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        content_length = dict(scope["headers"]).get(b"content-length")
        if declared_too_large(content_length, self._max_bytes):
            await self._refuse(scope, receive, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_bytes:
                    raise BodyTooLarge(self._max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if response_started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLarge(self._max_bytes)
        response = PlainTextResponse(error.detail, error.status_code, headers=error.headers)
        await response(scope, receive, send)
