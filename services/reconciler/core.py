"""The reconciler's decisions, pure: which unfinished calls are stuck and what to do.

Two kinds of stuck call, both measured by how long the call has had no news (the status
table's `updated_at`, the time of its newest event):
- the recording never arrived: no `recording.completed` for the call. Twilio's REST API
  is asked for the call's recordings: a final one is replayed as the callback that was lost
  (with the id that callback would have had, so a late real callback changes nothing); one
  still in progress is waited for; none at all fails the recording stage once the call has
  been quiet for `recording_give_up_after`.
- a stage holds its input but made no progress for `stuck_after`: its input is emitted
  again (same event id: duplicates are absorbed); a stage *processing* with no progress for
  `stuck_give_up_after` fails. A stage still pending with its input is only queued (a
  backlog): it is never failed for waiting.

The status table is a projection that can lag the topics (a player restarting), so every
action must be harmless when the call was in fact moving: replays and re-emits carry ids
already used; only the give-ups are not, hence their long defaults.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import twilio_callbacks
from shared.call_state import STAGES, TERMINAL, CallState, StageStatus
from shared.events import (
    TWILIO_NAMESPACE,
    RecordingCompleted,
    RecordingStarted,
    Stage,
    StageFailed,
    call_correlation_id,
)

FINAL_RECORDING_STATUSES = ("completed", "absent", "failed")


@dataclass(frozen=True)
class Deadlines:
    recording_after: timedelta
    recording_give_up_after: timedelta
    stuck_after: timedelta
    stuck_give_up_after: timedelta

    @property
    def earliest(self) -> timedelta:
        return min(self.recording_after, self.stuck_after)


@dataclass(frozen=True)
class TwilioRecording:
    """One recording as Twilio's REST API lists it."""

    sid: str
    status: str
    channels: int
    duration_seconds: float | None
    error_code: str | None
    media_url: str


@dataclass(frozen=True)
class Wait:
    pass


@dataclass(frozen=True)
class AskTwilio:
    """The recording callback never came: list the call's recordings."""


@dataclass(frozen=True)
class ReplayRecording:
    event: RecordingCompleted


@dataclass(frozen=True)
class ReEmit:
    stage: Stage


@dataclass(frozen=True)
class GiveUp:
    event: StageFailed


Action = Wait | AskTwilio | ReplayRecording | ReEmit | GiveUp


def open_stage(state: CallState) -> Stage | None:
    """The first stage without a terminal outcome: the one the call waits on."""
    return next((s for s in STAGES if state.stage_status(s) not in TERMINAL), None)


def give_up(state: CallState, stage: Stage, reason: str) -> GiveUp:
    attempt = max(1, int(getattr(state, f"{stage.value}_attempt")))
    return GiveUp(
        StageFailed(
            event_id=uuid.uuid5(
                TWILIO_NAMESPACE, f"{state.call_sid}:{stage.value}:{attempt}:reconciler.gave-up"
            ),
            call_sid=state.call_sid,
            business_id=state.business_id,
            attempt=attempt,
            correlation_id=call_correlation_id(state.call_sid),
            stage=stage,
            error=reason,
            terminal=True,
            tries=0,
        )
    )


def decide(state: CallState, has_input: bool, now: datetime, deadlines: Deadlines) -> Action:
    """What to do about an unfinished call whose open stage has (or lacks) its input."""
    stage = open_stage(state)
    quiet = now - state.updated_at
    if stage is None:
        return Wait()
    if (
        stage is Stage.RECORDING
        and not has_input
        and state.stage_status(stage) != StageStatus.PROCESSING
    ):
        return AskTwilio() if quiet >= deadlines.recording_after else Wait()
    if (
        quiet >= deadlines.stuck_give_up_after
        and state.stage_status(stage) == StageStatus.PROCESSING
    ):
        return give_up(state, stage, f"the {stage.value} stage made no progress for {quiet}")
    if quiet >= deadlines.stuck_after and has_input:
        return ReEmit(stage)
    return Wait()


def recording_action(
    state: CallState,
    recordings: list[TwilioRecording],
    account_sid: str,
    now: datetime,
    deadlines: Deadlines,
) -> Action:
    """Given what Twilio lists for the call: replay a final recording's callback, wait for
    one in progress, or give up when there is none and the call has been quiet too long."""
    final = [r for r in recordings if r.status in FINAL_RECORDING_STATUSES]
    if final:
        return ReplayRecording(recording_event(state, final[0], account_sid))
    if not recordings and now - state.updated_at >= deadlines.recording_give_up_after:
        return give_up(
            state, Stage.RECORDING, "recording never arrived: Twilio lists none for the call"
        )
    return Wait()


def recording_event(
    state: CallState, recording: TwilioRecording, account_sid: str
) -> RecordingCompleted:
    """The event the lost recording callback would have produced, with the same id."""
    form = {
        "AccountSid": account_sid,
        "CallSid": state.call_sid,
        "RecordingSid": recording.sid,
        "RecordingStatus": recording.status,
        "RecordingUrl": recording.media_url,
        "RecordingChannels": str(recording.channels),
        "RecordingSource": "reconciler",
    }
    if recording.duration_seconds is not None:
        form["RecordingDuration"] = str(recording.duration_seconds)
    if recording.error_code:
        form["ErrorCode"] = recording.error_code
    event = twilio_callbacks.recording_event(form, state.business_id, state.direction or None)
    if isinstance(event, RecordingStarted):  # never: only final statuses get here
        raise ValueError(f"recording {recording.sid} is not final")
    return event
