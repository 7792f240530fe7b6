"""Sealing an event's personal fields with its call's key, and opening them (decision 1204)."""

from __future__ import annotations

import base64
import json

import pytest

from shared.events import (
    CallStatusChanged,
    Evidence,
    Lead,
    RecordingStarted,
    Stage,
    decode,
    encode,
)
from shared.sealing import (
    PERSONAL_FIELDS,
    Unopenable,
    new_data_key,
    open_sealed,
    seal,
    strip,
)
from tests.support.events import (
    call_started,
    envelope,
    recording_completed,
    recording_downloaded,
    stage_failed,
    stage_started,
    summary_ready,
    transcript_ready,
)

CALLER = "+15551230000"
PARAMS = {"From": CALLER, "Caller": CALLER, "To": "+15559870000", "CallSid": "CA1"}
QUOTE = "this is Dana Whitfield, call me back on five five five"


def _lead() -> Lead:
    return Lead(
        service="plumbing",
        city="Denver",
        confidence=0.8,
        caller_name="Dana Whitfield",
        callback_number="+15557654321",
        kind="lead",
        urgency="urgent",
        evidence={
            "caller_name": Evidence(confidence=0.9, quote=QUOTE, start=1.0, end=2.5),
            "service": Evidence(confidence=0.7, quote="my sink leaks", start=3.0, end=4.0),
        },
    )


PERSONAL_EVENTS = [
    call_started(twilio_params=PARAMS),
    CallStatusChanged(**envelope(), call_status="ringing", twilio_params=PARAMS),
    RecordingStarted(**envelope(), recording_sid="RE1", twilio_params=PARAMS),
    recording_completed(twilio_params=PARAMS),
    transcript_ready(preview=f"Caller: {QUOTE}"),
    summary_ready(summary=f"Dana Whitfield ({CALLER}) needs a plumber", lead=_lead()),
    stage_failed(Stage.SUMMARY, error=f"ValueError: caller_name: quote {QUOTE!r} is not there"),
]
PERSONAL_VALUES = [
    CALLER,
    "+15559870000",
    "Dana Whitfield",
    "+15557654321",
    QUOTE,
    "my sink leaks",
]


@pytest.mark.parametrize("event", PERSONAL_EVENTS, ids=lambda e: e.event_type)
def test_a_sealed_event_opens_to_the_same_event(event: object) -> None:
    key = new_data_key()
    sealed = seal(event, key)  # type: ignore[arg-type]
    assert sealed.sealed is not None
    travelled = decode(encode(sealed))
    assert open_sealed(travelled, key) == event


@pytest.mark.parametrize("event", PERSONAL_EVENTS, ids=lambda e: e.event_type)
def test_no_personal_value_is_in_the_sealed_bytes(event: object) -> None:
    raw = encode(seal(event, new_data_key()))  # type: ignore[arg-type]
    for value in PERSONAL_VALUES:
        assert value.encode() not in raw
        assert value.replace("+", "").encode() not in raw


def test_what_stays_in_the_clear_is_what_routes_and_counts() -> None:
    event = PERSONAL_EVENTS[-2]
    sealed = json.loads(encode(seal(event, new_data_key())))
    assert sealed["summary"] == ""
    lead = sealed["lead"]
    assert (lead["service"], lead["city"], lead["kind"], lead["urgency"], lead["confidence"]) == (
        "plumbing",
        "Denver",
        "lead",
        "urgent",
        0.8,
    )
    assert lead["caller_name"] is None and lead["callback_number"] is None
    assert {name: e["quote"] for name, e in lead["evidence"].items()} == {
        "caller_name": "",
        "service": "",
    }
    assert lead["evidence"]["caller_name"]["start"] == 1.0
    assert sealed["call_sid"] == event.call_sid and sealed["event_id"] == str(event.event_id)


def test_a_wrong_key_does_not_open() -> None:
    sealed = seal(PERSONAL_EVENTS[0], new_data_key())
    with pytest.raises(Unopenable):
        open_sealed(sealed, new_data_key())


def test_changed_ciphertext_does_not_open() -> None:
    key = new_data_key()
    sealed = seal(PERSONAL_EVENTS[0], key)
    assert sealed.sealed is not None
    raw = bytearray(base64.b64decode(sealed.sealed.ciphertext))
    raw[0] ^= 1
    changed = sealed.model_copy(
        update={
            "sealed": sealed.sealed.model_copy(
                update={"ciphertext": base64.b64encode(bytes(raw)).decode()}
            )
        }
    )
    with pytest.raises(Unopenable):
        open_sealed(changed, key)


@pytest.mark.parametrize(
    "change",
    [
        {"call_sid": "CA0123456789abcdef0123456789abcdee"},
        {"business_id": "biz-2"},
        {"event_id": PERSONAL_EVENTS[1].event_id},
    ],
    ids=["call", "business", "event id"],
)
def test_a_sealed_payload_moved_to_another_event_does_not_open(change: dict[str, object]) -> None:
    key = new_data_key()
    sealed = seal(PERSONAL_EVENTS[0], key)
    with pytest.raises(Unopenable):
        open_sealed(sealed.model_copy(update=change), key)


def test_events_without_personal_fields_travel_as_they_are() -> None:
    key = new_data_key()
    for event in (recording_downloaded(), stage_started(Stage.SUMMARY)):
        assert seal(event, key) is event
        assert b"sealed" not in encode(event)


def test_a_stripped_event_carries_no_personal_value_and_nothing_sealed() -> None:
    raw = encode(strip(PERSONAL_EVENTS[-2]))
    assert b"sealed" not in raw
    for value in PERSONAL_VALUES:
        assert value.encode() not in raw


def test_every_event_type_with_personal_fields_is_in_the_table() -> None:
    assert {type(event) for event in PERSONAL_EVENTS} == set(PERSONAL_FIELDS)
