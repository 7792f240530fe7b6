"""Thousands of malformed webhooks, signed and unsigned, against the ingress with a real
broker behind it: never a 5xx, never a crash, nothing published."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callpipe.bootstrap import ingress_app
from shared.settings import Settings
from shared.twilio_callbacks import SID_PATTERNS
from tests.support.ingress import (
    ACCOUNT_SID,
    BROKER_PORT,
    INGRESS_PORT,
    Broker,
    ingress_settings,
    published_once_there,
    signed_headers,
    stored_event_ids,
)

PATHS = ["/twilio/voice", "/twilio/call-status", "/twilio/recording-status"]
PUBLIC = f"http://127.0.0.1:{INGRESS_PORT}"
VALID = {
    "AccountSid": ACCOUNT_SID,
    "CallSid": "CA" + "ab" * 16,
    "RecordingSid": "RE" + "cd" * 16,
    "RecordingStatus": "completed",
    "RecordingUrl": "https://api.twilio.com/x",
    "CallStatus": "completed",
    "From": "+15005550006",
    "To": "+15005550001",
}
REQUIRED = ["AccountSid", "CallSid"]
junk = st.text(max_size=80)
forms = st.dictionaries(st.text(max_size=30), junk, max_size=12)


@st.composite
def broken_valid_forms(draw: st.DrawFn) -> dict[str, str]:
    """A real-looking webhook with at least one required parameter missing or garbled, and
    any other parameter replaced or added at random."""
    form = {**VALID, **draw(forms)}
    for name in draw(st.lists(st.sampled_from(list(VALID)), max_size=4)):
        form[name] = draw(junk)
    broken = draw(st.sampled_from(REQUIRED))
    if draw(st.booleans()):
        form.pop(broken)
    else:
        form[broken] = draw(junk.filter(lambda v: not SID_PATTERNS[broken].fullmatch(v.strip())))
    return form


@pytest.fixture(scope="module")
def fuzz_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One broker for the whole module: the last test reads what every other one published."""
    broker = Broker(BROKER_PORT)
    broker.start()
    yield ingress_settings(tmp_path_factory.mktemp("fuzz"), broker)
    broker.stop()


@pytest.fixture(scope="module")
def client(fuzz_settings: Settings) -> Iterator[TestClient]:
    app = ingress_app(fuzz_settings)
    with TestClient(app, base_url=PUBLIC, raise_server_exceptions=True) as test:
        yield test


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(PATHS), form=st.one_of(forms, broken_valid_forms()))
def test_malformed_signed_webhooks_get_400(
    client: TestClient, path: str, form: dict[str, str]
) -> None:
    answer = client.post(path, data=form, headers=signed_headers(PUBLIC + path, form))
    assert answer.status_code == 400, answer.text


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(PATHS),
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "application/json",
            "text/plain",
        ]
    ),
    signature=st.one_of(st.none(), st.text(max_size=40)),
)
def test_arbitrary_bodies_never_get_a_5xx(
    client: TestClient, path: str, body: bytes, content_type: str, signature: str | None
) -> None:
    headers = {"Content-Type": content_type}
    if signature is not None and signature.isascii() and signature.isprintable():
        headers["X-Twilio-Signature"] = signature
    answer = client.post(path, content=body, headers=headers)
    assert answer.status_code in (400, 403), answer.text


def test_nothing_was_published_by_malformed_webhooks(
    client: TestClient, fuzz_settings: Settings
) -> None:
    # One valid webhook after the thousands of malformed ones: once it is on Kafka, the relay
    # has published whatever was stored before it, and it is the only event stored or sent.
    path = "/twilio/recording-status"
    answer = client.post(path, data=VALID, headers=signed_headers(PUBLIC + path, VALID))
    assert answer.status_code == 204
    events = asyncio.run(published_once_there(fuzz_settings, VALID["CallSid"]))
    assert [(e.event_type, e.call_sid) for e in events] == [
        ("recording.completed", VALID["CallSid"])
    ]
    assert asyncio.run(stored_event_ids(fuzz_settings)) == {str(events[0].event_id)}
