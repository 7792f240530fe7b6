"""Reconciler core: which stuck calls are repaired, waited for or failed."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from services.player.core import apply
from services.reconciler import core
from shared import twilio_callbacks
from shared.call_state import CallState, StageStatus
from shared.events import Stage

CALL_SID = "CA0123456789abcdef0123456789abcdef"
ACCOUNT = "AC00000000000000000000000000000000"
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
DEADLINES = core.Deadlines(
    recording_after=timedelta(minutes=5),
    recording_give_up_after=timedelta(hours=1),
    stuck_after=timedelta(minutes=15),
    stuck_give_up_after=timedelta(hours=1),
)
RECORDING = core.TwilioRecording(
    sid="RE0123456789abcdef0123456789abcdef",
    status="completed",
    channels=2,
    duration_seconds=12.0,
    error_code=None,
    media_url=f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE0123456789abcdef0123456789abcdef",
)


def call(**changes: object) -> CallState:
    state = CallState(call_sid=CALL_SID, business_id="biz-1", created_at=T0, updated_at=T0)
    return dataclasses.replace(state, direction="inbound", **changes)  # type: ignore[arg-type]


def test_a_quiet_call_without_its_recording_is_looked_up_at_twilio_only_after_the_deadline() -> (
    None
):
    assert core.decide(call(), False, T0 + timedelta(minutes=4), DEADLINES) == core.Wait()
    assert core.decide(call(), False, T0 + timedelta(minutes=5), DEADLINES) == core.AskTwilio()


def test_a_recording_twilio_lists_is_replayed_with_the_id_the_lost_callback_would_have_had() -> (
    None
):
    action = core.recording_action(call(), [RECORDING], ACCOUNT, T0, DEADLINES)
    assert isinstance(action, core.ReplayRecording)
    webhook = twilio_callbacks.recording_event(
        {
            "AccountSid": ACCOUNT,
            "CallSid": CALL_SID,
            "RecordingSid": RECORDING.sid,
            "RecordingStatus": "completed",
            "RecordingUrl": RECORDING.media_url,
        },
        "biz-1",
    )
    assert action.event.event_id == webhook.event_id
    assert action.event.recording_url == RECORDING.media_url
    assert action.event.channels == 2
    assert action.event.direction == "inbound"
    # The status table takes it like the callback: the recording stage is under way.
    assert apply(call(), action.event).recording_status == StageStatus.PROCESSING


def test_a_recording_still_in_progress_is_waited_for_however_long_the_call_lasts() -> None:
    live = dataclasses.replace(RECORDING, status="in-progress")
    later = T0 + timedelta(hours=3)
    assert core.recording_action(call(), [live], ACCOUNT, later, DEADLINES) == core.Wait()


def test_no_recording_at_twilio_fails_the_call_only_after_give_up() -> None:
    assert core.recording_action(call(), [], ACCOUNT, T0 + timedelta(minutes=59), DEADLINES) == (
        core.Wait()
    )
    action = core.recording_action(call(), [], ACCOUNT, T0 + timedelta(hours=1), DEADLINES)
    assert isinstance(action, core.GiveUp)
    assert action.event.stage is Stage.RECORDING
    assert action.event.terminal
    assert "never arrived" in action.event.error
    failed = apply(call(), action.event)
    assert failed.status == "failed"
    assert failed.transcript_status == "skipped"
    # The same decision made twice (two reconcilers, two rounds) is one event.
    again = core.recording_action(call(), [], ACCOUNT, T0 + timedelta(hours=2), DEADLINES)
    assert isinstance(again, core.GiveUp) and again.event.event_id == action.event.event_id


def test_a_stage_without_progress_gets_its_input_again_then_fails() -> None:
    stuck = call(
        recording_status=StageStatus.COMPLETED,
        transcript_status=StageStatus.PROCESSING,
        transcript_attempt=1,
    )
    assert core.decide(stuck, True, T0 + timedelta(minutes=14), DEADLINES) == core.Wait()
    assert core.decide(stuck, True, T0 + timedelta(minutes=15), DEADLINES) == core.ReEmit(
        Stage.TRANSCRIPT
    )
    action = core.decide(stuck, True, T0 + timedelta(hours=1), DEADLINES)
    assert isinstance(action, core.GiveUp)
    assert action.event.stage is Stage.TRANSCRIPT
    assert action.event.attempt == 1


def test_a_stage_still_queued_is_never_failed_for_waiting() -> None:
    queued = call(
        recording_status=StageStatus.COMPLETED,
        transcript_status=StageStatus.PENDING,
        transcript_attempt=1,
    )
    assert core.decide(queued, True, T0 + timedelta(hours=5), DEADLINES) == core.ReEmit(
        Stage.TRANSCRIPT
    )


def test_a_finished_call_is_left_alone() -> None:
    done = call(
        recording_status=StageStatus.COMPLETED,
        transcript_status=StageStatus.COMPLETED,
        summary_status=StageStatus.COMPLETED,
    )
    assert core.decide(done, True, T0 + timedelta(days=1), DEADLINES) == core.Wait()
