"""`GET` and `PUT /api/settings`, a business's data settings, and the page that shows them:
in-process (the player's app on a SQLite file, no broker), as an API client with its key
and as a browser signed in with one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from callpipe.bootstrap import player_app
from services.player.repository import CallRepository, migrate
from shared.db import create_engine
from shared.settings import Settings

OWN = "http://player.example"
EVIL = "https://evil.example"
MAX_BODY_BYTES = 4096
DEFAULTS = {
    "redact": ["card"],
    "audio_retention_days": None,
    "call_retention_days": None,
    "delete_from_twilio": False,
}
CHOSEN = {
    "redact": ["card", "phone", "email"],
    "audio_retention_days": 30,
    "call_retention_days": 90,
    "delete_from_twilio": True,
}


@dataclass
class Player:
    app: Any
    keys: dict[str, str]  # business → its API key

    def client(self, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=OWN, headers=headers
        )

    def api(self, business: str) -> httpx.AsyncClient:
        return self.client(Authorization=f"Bearer {self.keys[business]}")

    @asynccontextmanager
    async def browser(self, business: str) -> AsyncIterator[httpx.AsyncClient]:
        """A browser signed in to `business`'s page; its requests carry the page's Origin."""
        async with self.client(Origin=OWN) as browser:
            signed_in = await browser.post("/login", data={"api_key": self.keys[business]})
            assert signed_in.headers["location"] == "/"
            yield browser


@pytest.fixture
async def player(tmp_path: Path) -> AsyncIterator[Player]:
    settings = Settings(
        data_dir=tmp_path,
        player={"public_url": OWN, "max_body_bytes": MAX_BODY_BYTES},
        kafka={"bootstrap": "127.0.0.1:1"},
    )
    await asyncio.to_thread(migrate, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        repository = CallRepository(engine)
        keys = {b: await repository.create_api_key(b, "test") for b in ("acme", "other")}
    finally:
        await engine.dispose()
    app = player_app(settings)
    async with app.router.lifespan_context(app):
        yield Player(app, keys)


async def test_a_business_that_saved_nothing_gets_the_defaults(player: Player) -> None:
    async with player.api("acme") as api:
        answer = await api.get("/api/settings")
    assert answer.status_code == 200
    assert answer.json() == DEFAULTS


async def test_what_is_put_is_what_is_got(player: Player) -> None:
    async with player.api("acme") as api:
        saved = await api.put("/api/settings", json=CHOSEN)
        assert (saved.status_code, saved.json()) == (200, CHOSEN)
        assert (await api.get("/api/settings")).json() == CHOSEN
        reordered = {**CHOSEN, "redact": ["email", "card"], "audio_retention_days": None}
        reordered["call_retention_days"] = None
        reordered["delete_from_twilio"] = False
        assert (await api.put("/api/settings", json=reordered)).json()["redact"] == [
            "card",
            "email",
        ]
        assert (await api.get("/api/settings")).json() == {**DEFAULTS, "redact": ["card", "email"]}


@pytest.mark.parametrize(
    ("body", "location", "message"),
    [
        ({**CHOSEN, "redact": ["phone"]}, ["body", "redact"], "card numbers are always redacted"),
        ({**CHOSEN, "redact": ["card", "number"]}, ["body", "redact"], "always redacted"),
        ({**CHOSEN, "redact": ["card", "passport"]}, ["body", "redact", 1], "Input should be"),
        ({**CHOSEN, "redact": ["card", "phone", "phone"]}, ["body", "redact"], "at most once"),
        ({**CHOSEN, "audio_retention_days": 0}, ["body", "audio_retention_days"], "or equal to 1"),
        ({**CHOSEN, "audio_retention_days": "30"}, ["body", "audio_retention_days"], "integer"),
        (
            {**CHOSEN, "call_retention_days": 36501},
            ["body", "call_retention_days"],
            "or equal to 36500",
        ),
        (
            {**CHOSEN, "audio_retention_days": 90, "call_retention_days": 30},
            ["body", "call_retention_days"],
            "calls cannot be kept for less time than their audio",
        ),
        ({**CHOSEN, "keep_forever": True}, ["body", "keep_forever"], "not permitted"),
        ({"redact": ["card"]}, ["body", "audio_retention_days"], "required"),
        ({**CHOSEN, "delete_from_twilio": "true"}, ["body", "delete_from_twilio"], "boolean"),
        (["card"], ["body"], "valid dictionary"),
    ],
)
async def test_an_invalid_document_is_refused_with_422_and_changes_nothing(
    player: Player, body: Any, location: list[str | int], message: str
) -> None:
    async with player.api("acme") as api:
        await api.put("/api/settings", json=CHOSEN)
        refused = await api.put("/api/settings", json=body)
        after = await api.get("/api/settings")
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail[0]["loc"] == location
    assert message in detail[0]["msg"], detail
    assert after.json() == CHOSEN


async def test_a_body_that_is_not_json_or_too_large_is_refused(player: Player) -> None:
    async with player.api("acme") as api:
        broken = await api.put(
            "/api/settings", content=b'{"redact": [', headers={"Content-Type": "application/json"}
        )
        huge = await api.put("/api/settings", json={**CHOSEN, "pad": "x" * MAX_BODY_BYTES})
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_invalid"
    assert huge.status_code == 413


async def test_each_business_sees_and_changes_its_own_settings_only(player: Player) -> None:
    async with player.api("acme") as acme, player.api("other") as other:
        assert (await acme.put("/api/settings", json=CHOSEN)).status_code == 200
        assert (await other.get("/api/settings")).json() == DEFAULTS
        others = {**DEFAULTS, "redact": ["card", "iban"]}
        assert (await other.put("/api/settings", json=others)).status_code == 200
        assert (await acme.get("/api/settings")).json() == CHOSEN
        assert (await other.get("/api/settings")).json() == others


async def test_without_a_valid_key_or_login_the_settings_are_refused(player: Player) -> None:
    anonymous, from_the_page = player.client(), player.client(Origin=OWN)
    wrong_key = player.client(Authorization="Bearer cp_unknown")
    async with anonymous, from_the_page, wrong_key:
        for client in (anonymous, from_the_page, wrong_key):
            assert (await client.get("/api/settings")).status_code == 401
        assert (await from_the_page.put("/api/settings", json=CHOSEN)).status_code == 401
        assert (await wrong_key.put("/api/settings", json=CHOSEN)).status_code == 401
        # Without a Bearer key a write needs the page's Origin before anything else.
        assert (await anonymous.put("/api/settings", json=CHOSEN)).status_code == 403
    async with player.api("acme") as api:
        assert (await api.get("/api/settings")).json() == DEFAULTS


async def test_a_signed_in_page_reads_and_saves_its_businesss_settings(player: Player) -> None:
    async with player.browser("acme") as browser, player.api("acme") as api:
        assert (await browser.get("/api/settings")).json() == DEFAULTS
        assert (await browser.put("/api/settings", json=CHOSEN)).status_code == 200
        assert (await api.get("/api/settings")).json() == CHOSEN


@pytest.mark.parametrize(
    "forged",
    [
        {"Origin": EVIL},
        {"Origin": EVIL, "Referer": f"{OWN}/settings"},
        {"Origin": "null"},
        {"Referer": f"{EVIL}/attack.html"},
        {},  # neither Origin nor Referer
    ],
)
async def test_a_cookie_write_from_another_site_is_refused(
    player: Player, forged: dict[str, str]
) -> None:
    async with player.browser("acme") as browser:
        cookies = browser.cookies
    async with player.client(**forged) as attacker, player.api("acme") as api:
        attacker.cookies = cookies
        assert (await attacker.get("/api/settings")).status_code == 200  # reading is no write
        refused = await attacker.put("/api/settings", json=CHOSEN)
        assert refused.status_code == 403
        assert (await api.get("/api/settings")).json() == DEFAULTS


async def test_the_settings_page_needs_a_login(player: Player) -> None:
    async with player.client() as anonymous:
        assert (await anonymous.get("/settings")).headers["location"] == "/login"
    async with player.browser("acme") as browser:
        page = await browser.get("/settings")
    assert page.status_code == 200
    assert '<form id="data-settings"' in page.text


async def test_the_openapi_document_describes_the_settings(player: Player) -> None:
    async with player.client() as client:
        document = (await client.get("/openapi.json")).json()
    operations = document["paths"]["/api/settings"]
    assert set(operations) == {"get", "put"}
    schema_ref = {"$ref": "#/components/schemas/DataSettings"}
    assert operations["put"]["requestBody"]["content"]["application/json"]["schema"] == schema_ref
    for operation in operations.values():
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == schema_ref
        assert operation["description"]
    assert "422" in operations["put"]["responses"]
    schema = document["components"]["schemas"]["DataSettings"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["redact"]["items"]["enum"] == [
        "card",
        "phone",
        "email",
        "national_id",
        "iban",
    ]
    assert all(field["description"] for field in schema["properties"].values())
