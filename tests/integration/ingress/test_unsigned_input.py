"""What an attacker controls around a signed webhook cannot break what the ingress stores: an
unsigned header of any length never fails the shared transaction of concurrent webhooks, a
malformed direction or business in the callback URL is a 400 (never a 500, nor an event the
player cannot store), and a party as long as Twilio may send (a SIP URI) is stored up to
the player's status table on PostgreSQL, while a longer one is refused whole.

PostgreSQL (127.0.0.1:5432, trust auth): each test gets a database of its own."""

from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest
from sqlalchemy import select

from callpipe.bootstrap import ingress_app
from services.ingress.deliveries import deliveries
from services.player.repository import CallRepository, migrate
from shared import twilio_callbacks
from shared.db import create_engine
from shared.events import AnyEvent, CallStarted
from shared.settings import Settings
from tests.support.ingress import (
    ACCOUNT_SID,
    INGRESS_PORT,
    published,
    published_once_there,
    serving,
    signed_headers,
    stored_event_ids,
)

INGRESS = f"http://127.0.0.1:{INGRESS_PORT}"
RECORDING_SID = "RE" + "fedcba9876543210" * 2


@pytest.fixture
def pg_settings(settings: Settings, postgres_database_url: str) -> Settings:
    return settings.updated(database={"url": postgres_database_url})


def voice(**fields: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + secrets.token_hex(16),
        "From": "+15005550006",
        "To": "+15005550001",
        "CallStatus": "ringing",
        "Direction": "inbound",
        **fields,
    }


async def post(
    client: httpx.AsyncClient, path: str, params: dict[str, str], token: str | None = "tok-1"
) -> httpx.Response:
    url = INGRESS + path
    return await client.post(url, data=params, headers=signed_headers(url, params, token))


async def genuine_callback_on_kafka(
    client: httpx.AsyncClient, settings: Settings
) -> list[AnyEvent]:
    """A genuine recording callback of a call of its own, sent after a refused webhook: once
    it is on Kafka, the relay has published whatever was stored before it too."""
    callback = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + secrets.token_hex(16),
        "RecordingSid": "RE" + secrets.token_hex(16),
        "RecordingStatus": "completed",
        "RecordingUrl": "https://api.twilio.com/Recordings/" + RECORDING_SID,
    }
    answer = await post(client, "/twilio/recording-status?business=demo", callback, "genuine")
    assert answer.status_code == 204, answer.text
    events = await published_once_there(settings, callback["CallSid"])
    assert [e.call_sid for e in events] == [callback["CallSid"]]
    return events


@pytest.mark.postgres
async def test_an_overlong_idempotency_token_fails_no_webhook_stored_beside_it(
    pg_settings: Settings,
) -> None:
    webhooks = [voice() for _ in range(12)]
    tokens = ["T" * 300 if i == 5 else f"tok-{i}" for i in range(len(webhooks))]
    async with (
        serving(ingress_app(pg_settings), INGRESS_PORT),
        httpx.AsyncClient(timeout=30) as client,
    ):
        answers = await asyncio.gather(
            *(
                post(client, "/twilio/voice", form, token)
                for form, token in zip(webhooks, tokens, strict=True)
            )
        )
    assert [a.status_code for a in answers] == [200] * len(webhooks)
    expected = {str(twilio_callbacks.call_started(form, "demo").event_id) for form in webhooks}
    engine = create_engine(pg_settings.ingress_database_url)
    try:
        async with engine.connect() as connection:
            stored = await connection.execute(
                select(deliveries.c.event_id, deliveries.c.idempotency_token)
            )
            tokens_by_event = dict(stored.tuples().all())
    finally:
        await engine.dispose()
    assert set(tokens_by_event) == expected
    assert sorted(filter(None, tokens_by_event.values())) == sorted(
        t for t in tokens if len(t) < 300
    )


@pytest.mark.parametrize(
    "query",
    [
        "business=demo&direction=" + "outbound-" * 10,
        "business=demo&direction=inbound%0Aforged",
        "business=" + "b" * 65 + "&direction=inbound",
    ],
)
async def test_a_malformed_callback_url_parameter_is_a_400_and_nothing_is_stored(
    settings: Settings, query: str
) -> None:
    callback = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + secrets.token_hex(16),
        "RecordingSid": RECORDING_SID,
        "RecordingStatus": "completed",
        "RecordingUrl": "https://api.twilio.com/Recordings/" + RECORDING_SID,
    }
    async with serving(ingress_app(settings), INGRESS_PORT), httpx.AsyncClient() as client:
        answer = await post(client, f"/twilio/recording-status?{query}", callback)
        [genuine] = await genuine_callback_on_kafka(client, settings)
    assert answer.status_code == 400, answer.text
    assert await stored_event_ids(settings) == {str(genuine.event_id)}


@pytest.mark.parametrize("path", ["/twilio/voice", "/twilio/call-status"])
async def test_a_direction_twilio_never_sends_is_a_400(settings: Settings, path: str) -> None:
    settings = settings.updated(ingress={"recording_mode": "rest"})
    form = voice(Direction="outbound-" * 10, CallStatus="in-progress")
    async with serving(ingress_app(settings), INGRESS_PORT), httpx.AsyncClient() as client:
        answer = await post(client, path, form)
        [genuine] = await genuine_callback_on_kafka(client, settings)
    assert answer.status_code == 400, answer.text
    assert await stored_event_ids(settings) == {str(genuine.event_id)}


@pytest.mark.postgres
async def test_a_sip_uri_caller_and_a_client_callee_reach_the_status_table(
    pg_settings: Settings,
) -> None:
    sip_from = "sip:" + "caller." * 40 + "x@pbx.example.com;transport=tls"
    assert len(sip_from) >= 300
    long_party = voice(From=sip_from, To="client:alice", Direction="outbound-dial")
    too_long = voice(From="sip:" + "a" * 1021)
    async with (
        serving(ingress_app(pg_settings), INGRESS_PORT),
        httpx.AsyncClient() as client,
    ):
        stored = await post(client, "/twilio/voice", long_party)
        refused = await post(client, "/twilio/voice", too_long)
    assert stored.status_code == 200, stored.text
    assert refused.status_code == 400
    events = await published(pg_settings)
    assert [e.call_sid for e in events] == [long_party["CallSid"]]
    [event] = events
    assert isinstance(event, CallStarted)

    await asyncio.to_thread(migrate, pg_settings.database_url)
    engine = create_engine(pg_settings.database_url)
    repository = CallRepository(engine)
    try:
        assert await repository.apply(event)
        call = await repository.get(event.call_sid)
    finally:
        repository.close()
        await engine.dispose()
    assert call is not None
    assert (call.from_number, call.to_number, call.direction) == (
        sip_from,
        "client:alice",
        "outbound-dial",
    )
