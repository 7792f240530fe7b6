"""The body cap (shared/body_limit.py) as the player wears it, and on its own: a body over the
cap, declared or streamed, is refused with 413 before the application reads it; a body
within it reaches the application whole. (The ingress over a real socket:
tests/integration/ingress/test_body_limit.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from callpipe.bootstrap import player_app
from shared.body_limit import BodyLimit
from shared.settings import Settings

CAP = 1024


async def streamed(total: int, chunk: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, total, chunk):
        yield b"a" * min(chunk, total - start)


async def test_the_player_refuses_an_oversized_login_form_before_reading_it(
    tmp_path: Path,
) -> None:
    app = player_app(Settings(data_dir=tmp_path, player={"max_body_bytes": CAP}))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://player"
    ) as client:
        declared = await client.post("/login", data={"api_key": "k" * (CAP + 1)})
        chunked = await client.post(
            "/login",
            content=streamed(CAP * 4),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert declared.status_code == 413
    assert chunked.status_code == 413
    assert declared.headers["connection"] == "close"


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = await Request(scope, receive).body()
    await PlainTextResponse(str(len(body)))(scope, receive, send)


async def test_a_body_within_the_cap_reaches_the_application_whole() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=BodyLimit(echo, max_bytes=CAP)), base_url="http://app"
    ) as client:
        declared = await client.post("/", content=b"a" * CAP)
        chunked = await client.post("/", content=streamed(CAP))
        over = await client.post("/", content=streamed(CAP + 1))
    assert (declared.status_code, declared.text) == (200, str(CAP))
    assert (chunked.status_code, chunked.text) == (200, str(CAP))
    assert over.status_code == 413


async def test_a_content_length_that_is_not_a_length_is_refused() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=BodyLimit(echo, max_bytes=CAP)), base_url="http://app"
    ) as client:
        answer = await client.post("/", content=b"a", headers={"Content-Length": "-1"})
    assert answer.status_code == 413
