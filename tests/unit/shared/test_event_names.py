"""A decoded event names only what it may: identifiers on their patterns, object keys under
the event's own business. A forged event on the broker is refused at decode."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from pydantic import ValidationError

from shared.events import (
    RecordingDownloaded,
    TranscriptReady,
    call_correlation_id,
    decode,
    encode,
)
from shared.settings import Settings

CALL = "CA" + secrets.token_hex(16)
RECORDING = "RE" + secrets.token_hex(16)


def downloaded(**changes: Any) -> dict[str, Any]:
    event = RecordingDownloaded(
        call_sid=CALL,
        business_id="plumber",
        correlation_id=call_correlation_id(CALL),
        recording_sid=RECORDING,
        object_key=f"plumber/2026-11-24/{CALL}/{RECORDING}.wav",
        content_type="audio/wav",
        size_bytes=1,
        sha256="0" * 64,
    )
    return {**json.loads(encode(event)), **changes}


def transcript_ready(**changes: Any) -> dict[str, Any]:
    event = TranscriptReady(
        call_sid=CALL,
        business_id="plumber",
        correlation_id=call_correlation_id(CALL),
        outcome="transcribed",
        transcript_key=f"plumber/{CALL}/{RECORDING}.transcript.json",
    )
    return {**json.loads(encode(event)), **changes}


def test_events_as_the_services_and_the_simulator_make_them_decode() -> None:
    assert decode(json.dumps(downloaded()).encode()).call_sid == CALL
    assert decode(json.dumps(transcript_ready()).encode()).call_sid == CALL
    # Short SIDs, as the ingress accepts them (any alphanumeric tail).
    assert decode(json.dumps(downloaded(call_sid="CA1", recording_sid="RE1")).encode())


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(downloaded(object_key=f"electrician/{CALL}/x.wav"), id="other-audio"),
        pytest.param(transcript_ready(transcript_key="electrician/CA1/x.json"), id="other-text"),
        pytest.param(
            transcript_ready(
                audio_redaction={
                    "object_key": f"electrician/2026-11-24/{CALL}/x.wav",
                    "sound": "tone",
                    "padding_seconds": 0.25,
                }
            ),
            id="other-redacted-audio",
        ),
        pytest.param(downloaded(object_key="plumber/../electrician/x.wav"), id="dotdot"),
        pytest.param(downloaded(object_key="plumber/./x.wav"), id="dot"),
        pytest.param(downloaded(object_key="/plumber/x.wav"), id="leading-slash"),
        pytest.param(downloaded(object_key="plumber//x.wav"), id="empty-segment"),
        pytest.param(downloaded(object_key="plumber"), id="the-prefix-itself"),
        pytest.param(downloaded(object_key="plumber/x\\..\\y.wav"), id="backslash"),
        pytest.param(downloaded(object_key="plumber/" + "x" * 600), id="too-long"),
        pytest.param(downloaded(business_id="../electrician"), id="business-dotdot"),
        pytest.param(downloaded(business_id="plumber/x"), id="business-slash"),
        pytest.param(downloaded(call_sid="CA../../x"), id="call-sid-path"),
        pytest.param(downloaded(call_sid="XX" + "0" * 32), id="call-sid-prefix"),
        pytest.param(downloaded(call_sid="CA 1"), id="call-sid-space"),
        pytest.param(downloaded(recording_sid="RE1/../x"), id="recording-sid-path"),
        pytest.param(downloaded(recording_sid="CA" + "0" * 32), id="recording-sid-prefix"),
    ],
)  # fmt: skip
def test_a_forged_event_is_refused_at_decode(forged: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        decode(json.dumps(forged).encode())


@pytest.mark.parametrize(
    "setting",
    [{"default_id": "../demo"}, {"numbers": "+15005550001=plumber/x"}],
)
def test_a_configured_business_id_is_a_slug_too(setting: dict[str, str]) -> None:
    """Else the ingress would publish events that every consumer refuses."""
    with pytest.raises(ValidationError, match="is not letters, digits"):
        Settings(business=setting)
