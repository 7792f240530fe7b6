"""The status page's cookie is Secure exactly when the player's own public URL is https
(CALLPIPE_PLAYER_PUBLIC_URL), whatever the ingress's public URL is; in-process, no stack."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from callpipe.bootstrap import player_app
from services.player.repository import CallRepository, migrate
from shared.db import create_engine
from shared.settings import Settings


@pytest.mark.parametrize(
    ("ingress_url", "player_url", "secure"),
    [
        ("https://calls.example.com", "http://127.0.0.1:8080", False),
        ("http://127.0.0.1:8000", "https://player.example.com", True),
    ],
)
async def test_the_cookie_is_secure_when_the_players_own_url_is_https(
    tmp_path: Path, ingress_url: str, player_url: str, secure: bool
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        ingress={"public_base_url": ingress_url},
        player={"public_url": player_url},
        kafka={"bootstrap": "127.0.0.1:1"},
    )
    await asyncio.to_thread(migrate, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        key = await CallRepository(engine).create_api_key("acme", "test")
    finally:
        await engine.dispose()
    app = player_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=player_url) as browser,
    ):
        signed_in = await browser.post(
            "/login", data={"api_key": key}, headers={"Origin": player_url}
        )
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"].lower()
    assert cookie.startswith("callpipe_session=")
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert ("; secure" in cookie) is secure
