"""The ingress's pure rules: which business a call belongs to, what a webhook means, when a
delivery may publish."""

from __future__ import annotations

import pytest

from services.ingress import core
from shared import twilio_callbacks
from shared.settings import Settings, parse_business_numbers

OWNERS = {"+15005550001": "plumber", "+15005550002": "electrician"}
ACCOUNT = "AC" + "1" * 32
CALL = "CA" + "2" * 32
RECORDING = "RE" + "3" * 32


@pytest.mark.parametrize(
    ("form", "business"),
    [
        ({"To": "+15005550001", "From": "+1999"}, "plumber"),
        ({"To": "+1999", "From": "+15005550002", "Direction": "outbound-api"}, "electrician"),
        ({"To": "+15005550002", "From": "+1999", "Direction": "outbound-dial"}, "electrician"),
        ({"To": "+1999", "From": "+1888"}, None),
        ({}, None),
    ],
)
def test_the_business_is_the_owner_of_the_twilio_number(
    form: dict[str, str], business: str | None
) -> None:
    assert core.business_for(form, OWNERS, "demo") == business


def test_without_a_number_table_every_call_belongs_to_the_default_business() -> None:
    assert core.business_for({"To": "+1999"}, {}, "demo") == "demo"


def test_the_number_table_setting_parses_and_refuses_nonsense() -> None:
    assert parse_business_numbers(" +1500=plumber, +1600 = electrician ,") == {
        "+1500": "plumber",
        "+1600": "electrician",
    }
    with pytest.raises(ValueError, match="NUMBER=BUSINESS"):
        Settings(business={"numbers": "+1500"})


def test_event_ids_derive_from_twilio_s_identifiers() -> None:
    form = {"AccountSid": ACCOUNT, "CallSid": CALL, "CallStatus": "ringing"}
    assert (
        twilio_callbacks.call_started(form, "a").event_id
        == twilio_callbacks.call_started(form, "a").event_id
    )
    ringing = twilio_callbacks.call_status_changed(form, "a")
    answered = twilio_callbacks.call_status_changed({**form, "CallStatus": "in-progress"}, "a")
    assert ringing.event_id != answered.event_id
    rest_started = twilio_callbacks.call_started_from_status(answered)
    assert rest_started.event_id == twilio_callbacks.call_started(form, "a").event_id


@pytest.mark.parametrize(
    "change",
    [
        {"RecordingDuration": "nan"},
        {"RecordingDuration": "-3"},
        {"RecordingChannels": "3"},
        {"RecordingChannels": "two"},
        {"RecordingStatus": "paused"},
        {"RecordingUrl": "ftp://x"},
        {"RecordingSid": "RE"},
        {"RecordingSid": "RE-1"},
        {"CallSid": "CA" + "2" * 63},
        {"CallSid": "CA 1"},
    ],
)
def test_malformed_recording_callbacks_are_refused(change: dict[str, str]) -> None:
    form = {
        "AccountSid": ACCOUNT,
        "CallSid": CALL,
        "RecordingSid": RECORDING,
        "RecordingStatus": "completed",
        "RecordingUrl": "https://api.twilio.com/r",
        **change,
    }
    with pytest.raises(twilio_callbacks.WebhookError):
        twilio_callbacks.recording_event(form, "demo")


def test_the_rest_mode_starts_recording_once_the_call_is_live() -> None:
    form = {"AccountSid": ACCOUNT, "CallSid": CALL}
    ringing = twilio_callbacks.call_status_changed({**form, "CallStatus": "ringing"}, "a")
    live = twilio_callbacks.call_status_changed({**form, "CallStatus": "in-progress"}, "a")
    assert not core.starts_recording_over_rest(ringing, "rest")
    assert not core.starts_recording_over_rest(live, "twiml")
    assert core.starts_recording_over_rest(live, "rest")
