"""Ingress core: Twilio webhook form parameters to callpipe events, and the recording TwiML."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from services.ingress.core import (
    WebhookError,
    call_started,
    recording_completed,
    recording_twiml,
)
from shared.events import CallStarted, RecordingCompleted
from shared.events import call_correlation_id as correlation_id

CALL_SID = "CA0123456789abcdef0123456789abcdef"
OTHER_CALL_SID = "CAfedcba9876543210fedcba9876543210"
ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
RECORDING_SID = "RE0123456789abcdef0123456789abcdef"
RECORDING_URL = (
    f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{RECORDING_SID}"
)


def voice_form(**overrides: str) -> dict[str, str]:
    form = {
        "CallSid": CALL_SID,
        "AccountSid": ACCOUNT_SID,
        "From": "+15551230000",
        "To": "+15559870000",
        "Direction": "inbound",
        "CallStatus": "ringing",
    }
    form.update(overrides)
    return form


def recording_form(**overrides: str) -> dict[str, str]:
    form = {
        "CallSid": CALL_SID,
        "AccountSid": ACCOUNT_SID,
        "RecordingSid": RECORDING_SID,
        "RecordingStatus": "completed",
        "RecordingUrl": RECORDING_URL,
        "RecordingDuration": "42",
        "RecordingChannels": "2",
    }
    form.update(overrides)
    return form


# --- call_started -------------------------------------------------------------------------


def test_call_started_parses_the_voice_webhook() -> None:
    event = call_started(voice_form(Direction="outbound-api"), "biz-1")

    assert isinstance(event, CallStarted)
    assert event.event_type == "call.started"
    assert event.call_sid == CALL_SID
    assert event.business_id == "biz-1"
    assert event.account_sid == ACCOUNT_SID
    assert event.from_number == "+15551230000"
    assert event.to_number == "+15559870000"
    assert event.direction == "outbound-api"
    assert event.correlation_id == correlation_id(CALL_SID)


def test_call_started_defaults_when_optional_params_are_absent() -> None:
    event = call_started({"CallSid": CALL_SID, "AccountSid": ACCOUNT_SID}, "biz-1")

    assert event.from_number == ""
    assert event.to_number == ""
    assert event.direction == "inbound"


def test_call_started_id_is_deterministic_per_call() -> None:
    first = call_started(voice_form(), "biz-1")
    retried = call_started(voice_form(CallStatus="in-progress"), "biz-1")
    other = call_started(voice_form(CallSid=OTHER_CALL_SID), "biz-1")

    assert first.event_id == retried.event_id
    assert first.event_id != other.event_id


@pytest.mark.parametrize("missing", ["CallSid", "AccountSid"])
def test_call_started_rejects_a_form_without_required_param(missing: str) -> None:
    form = voice_form()
    del form[missing]
    with pytest.raises(WebhookError, match=missing):
        call_started(form, "biz-1")


def test_call_started_rejects_a_blank_call_sid() -> None:
    with pytest.raises(WebhookError, match="CallSid"):
        call_started(voice_form(CallSid="   "), "biz-1")


def test_webhook_error_is_a_value_error() -> None:
    assert issubclass(WebhookError, ValueError)


# --- correlation_id -----------------------------------------------------------------------


def test_correlation_id_is_32_hex_and_stable_per_call() -> None:
    first = correlation_id(CALL_SID)

    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert correlation_id(CALL_SID) == first
    assert correlation_id(OTHER_CALL_SID) != first


def test_every_event_of_one_call_shares_the_correlation_id() -> None:
    started = call_started(voice_form(), "biz-1")
    recorded = recording_completed(recording_form(), "biz-1")
    other = call_started(voice_form(CallSid=OTHER_CALL_SID), "biz-1")

    assert started.correlation_id == recorded.correlation_id == correlation_id(CALL_SID)
    assert other.correlation_id != started.correlation_id


# --- recording_completed ------------------------------------------------------------------


def test_recording_completed_parses_the_status_callback() -> None:
    event = recording_completed(recording_form(), "biz-7")

    assert isinstance(event, RecordingCompleted)
    assert event.event_type == "recording.completed"
    assert event.call_sid == CALL_SID
    assert event.business_id == "biz-7"
    assert event.recording_sid == RECORDING_SID
    assert event.recording_status == "completed"
    assert event.recording_url == RECORDING_URL
    assert event.duration_seconds == 42.0
    assert event.channels == 2
    assert event.error_code is None


def test_recording_completed_defaults_to_mono_without_duration() -> None:
    form = recording_form()
    del form["RecordingChannels"]
    del form["RecordingDuration"]
    event = recording_completed(form, "biz-1")

    assert event.channels == 1
    assert event.duration_seconds is None


def test_recording_absent_needs_no_url_and_keeps_the_error_code() -> None:
    form = recording_form(RecordingStatus="absent", ErrorCode="13617")
    del form["RecordingUrl"]
    event = recording_completed(form, "biz-1")

    assert event.recording_status == "absent"
    assert event.recording_url == ""
    assert event.error_code == "13617"


def test_recording_failed_is_accepted() -> None:
    event = recording_completed(recording_form(RecordingStatus="failed", RecordingUrl=""), "b")
    assert event.recording_status == "failed"


def test_recording_event_id_is_deterministic_on_recording_sid_and_status() -> None:
    first = recording_completed(recording_form(), "biz-1")
    retried = recording_completed(recording_form(RecordingDuration="43"), "biz-1")
    absent = recording_completed(recording_form(RecordingStatus="absent"), "biz-1")
    other_recording = recording_completed(recording_form(RecordingSid="RE" + "f" * 32), "biz-1")

    assert first.event_id == retried.event_id
    assert absent.event_id != first.event_id
    assert other_recording.event_id != first.event_id


def test_recording_event_id_differs_from_the_call_started_id() -> None:
    assert (
        recording_completed(recording_form(), "b").event_id
        != call_started(voice_form(), "b").event_id
    )


def test_recording_completed_without_url_is_rejected() -> None:
    form = recording_form()
    del form["RecordingUrl"]
    with pytest.raises(WebhookError, match="RecordingUrl"):
        recording_completed(form, "biz-1")


@pytest.mark.parametrize("missing", ["CallSid", "RecordingSid", "RecordingStatus"])
def test_recording_completed_without_required_param_is_rejected(missing: str) -> None:
    form = recording_form()
    del form[missing]
    with pytest.raises(WebhookError, match=missing):
        recording_completed(form, "biz-1")


@pytest.mark.parametrize("status", ["in-progress", "COMPLETED", "done", "paused"])
def test_unknown_recording_status_is_rejected(status: str) -> None:
    with pytest.raises(WebhookError, match="RecordingStatus"):
        recording_completed(recording_form(RecordingStatus=status), "biz-1")


# --- recording_twiml ----------------------------------------------------------------------

CALLBACK = "https://calls.example.com/twilio/recording?business=biz-1&x=1"


@pytest.mark.parametrize("forward_to", ["+15550001111", ""])
def test_twiml_starts_a_dual_channel_recording_first(forward_to: str) -> None:
    root = ET.fromstring(recording_twiml(CALLBACK, forward_to))

    assert root.tag == "Response"
    children = list(root)
    assert children, "empty <Response>"
    start = children[0]
    assert start.tag == "Start"
    recordings = start.findall("Recording")
    assert len(recordings) == 1
    recording = recordings[0]
    assert recording.get("channels") == "dual"
    assert recording.get("recordingStatusCallback") == CALLBACK
    events = (recording.get("recordingStatusCallbackEvent") or "").split()
    assert "completed" in events
    assert "absent" in events


def test_twiml_forwards_the_call_after_starting_the_recording() -> None:
    root = ET.fromstring(recording_twiml(CALLBACK, "+15550001111"))
    tags = [child.tag for child in root]

    assert tags[0] == "Start"
    assert "Dial" in tags
    dial = root.find("Dial")
    assert dial is not None
    assert (dial.text or "").strip() == "+15550001111"
    assert tags.index("Dial") > 0


def test_twiml_without_forwarding_keeps_the_line_open() -> None:
    root = ET.fromstring(recording_twiml(CALLBACK, ""))
    tags = [child.tag for child in root]

    assert tags[0] == "Start"
    assert "Dial" not in tags
    assert "Say" in tags or "Pause" in tags
