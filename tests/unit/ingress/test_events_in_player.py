"""The player's projection of the events the ingress added (its minimal cases)."""

from __future__ import annotations

from services.player import core as player
from shared import twilio_callbacks
from shared.call_state import StageStatus

ACCOUNT = "AC" + "1" * 32
CALL = "CA" + "2" * 32
FORM = {"AccountSid": ACCOUNT, "CallSid": CALL, "To": "+15005550001", "From": "+1999"}


def test_a_call_never_answered_shows_no_recording_instead_of_waiting() -> None:
    state = player.apply(None, twilio_callbacks.call_started(FORM, "demo"))
    state = player.apply(
        state, twilio_callbacks.call_status_changed({**FORM, "CallStatus": "no-answer"}, "demo")
    )
    assert state.recording_status == StageStatus.NO_RECORDING
    assert state.status == StageStatus.COMPLETED
    assert state.last_error == "the call ended no-answer before it was answered"


def test_call_progress_and_a_running_recording_only_add_to_the_timeline() -> None:
    started = player.apply(None, twilio_callbacks.call_started(FORM, "demo"))
    live = twilio_callbacks.call_status_changed({**FORM, "CallStatus": "in-progress"}, "demo")
    recording = twilio_callbacks.recording_event(
        {**FORM, "RecordingSid": "RE" + "3" * 32, "RecordingStatus": "in-progress"}, "demo"
    )
    after = player.apply(player.apply(started, live), recording)
    assert after.status == StageStatus.PENDING
    assert [player.timeline_detail(e) for e in (live, recording)] == [
        "call in-progress",
        "recording in progress",
    ]
