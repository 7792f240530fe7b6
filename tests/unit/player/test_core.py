"""Player core: projecting one call's events onto its status row, in any order."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from services.player.core import Playback, apply, playback, recording_folder, timeline_detail
from shared.call_state import CallState
from shared.events import (
    AnyEvent,
    CallStarted,
    RecordingCompleted,
    RecordingDownloaded,
    RedactionSummary,
    Stage,
    StageFailed,
    StageStarted,
    SummaryReady,
    TranscriptReady,
)
from shared.redaction.kinds import EntityKind
from shared.transcript import AudioRedaction, AudioSpan
from tests.support import events as factories
from tests.support.events import CALL_SID, at


def call_started(t: float = 0) -> CallStarted:
    return factories.call_started(occurred_at=at(t))


def recording_completed(
    t: float = 1, status: str = "completed", **fields: Any
) -> RecordingCompleted:
    return factories.recording_completed(status=status, occurred_at=at(t), **fields)


def started(stage: Stage, t: float, attempt: int = 1) -> StageStarted:
    return factories.stage_started(stage, occurred_at=at(t), attempt=attempt)


def failed(
    stage: Stage, t: float, *, terminal: bool, error: str = "boom", tries: int = 1, attempt: int = 1
) -> StageFailed:
    return factories.stage_failed(
        stage, occurred_at=at(t), attempt=attempt, error=error, terminal=terminal, tries=tries
    )


def downloaded(t: float = 3, attempt: int = 1) -> RecordingDownloaded:
    return factories.recording_downloaded(occurred_at=at(t), attempt=attempt)


def transcript_ready(
    t: float = 5, outcome: str = "transcribed", attempt: int = 1
) -> TranscriptReady:
    return factories.transcript_ready(outcome=outcome, occurred_at=at(t), attempt=attempt)


def summary_ready(t: float = 7, attempt: int = 1) -> SummaryReady:
    return factories.summary_ready(occurred_at=at(t), attempt=attempt)


def happy_path() -> list[AnyEvent]:
    return [
        call_started(0),
        recording_completed(1),
        started(Stage.RECORDING, 2),
        downloaded(3),
        started(Stage.TRANSCRIPT, 4),
        transcript_ready(5),
        started(Stage.SUMMARY, 6),
        summary_ready(7),
    ]


def project(events: list[AnyEvent] | tuple[AnyEvent, ...]) -> CallState:
    state: CallState | None = None
    for event in events:
        state = apply(state, event)
    assert state is not None
    return state


def test_first_event_creates_a_pending_row() -> None:
    state = apply(None, call_started(0))

    assert state.call_sid == CALL_SID
    assert state.business_id == "biz-1"
    assert state.from_number == "+15551230000"
    assert state.to_number == "+15559870000"
    assert state.created_at == state.updated_at == at(0)
    assert state.status == "pending"
    assert [state.stage_status(s) for s in Stage] == ["pending"] * 3


def test_happy_path_completes_the_call() -> None:
    state = project(happy_path())

    assert state.status == "completed"
    assert state.recording_status == "completed"
    assert state.transcript_status == "completed"
    assert state.summary_status == "completed"
    assert state.recording_sid == "RE1"
    assert state.recording_key == f"biz-1/{CALL_SID}/RE1.wav"
    assert state.recording_content_type == "audio/wav"
    assert state.recording_bytes == 123456
    assert state.duration_seconds == 42.5
    assert state.transcript_key == f"biz-1/{CALL_SID}/RE1.transcript.json"
    assert state.transcript_preview == "Caller: my sink leaks in Denver"
    assert state.language == "en"
    assert state.summary == "Caller asked for plumbing in Denver."
    assert (state.lead_service, state.lead_city, state.lead_confidence) == (
        "plumbing",
        "Denver",
        0.8,
    )
    assert state.last_error is None
    assert state.created_at == at(0)
    assert state.updated_at == at(7)
    assert (state.recording_tries, state.transcript_tries, state.summary_tries) == (1, 1, 1)


def test_stages_done_before_announcing_their_start_complete_with_one_try_each() -> None:
    quick = [e for e in happy_path() if not isinstance(e, StageStarted)]  # decision 0920
    state = project(quick)

    assert [state.stage_status(s) for s in Stage] == ["completed"] * 3
    assert state.status == "completed"
    assert (state.recording_tries, state.transcript_tries, state.summary_tries) == (1, 1, 1)


def test_status_along_the_happy_path() -> None:
    statuses = []
    state: CallState | None = None
    for event in happy_path():
        state = apply(state, event)
        statuses.append(state.status)
    assert statuses == ["pending"] + ["processing"] * 6 + ["completed"]


def test_applying_an_event_twice_gives_the_same_row() -> None:
    events = happy_path()
    once = project(events)
    assert project([e for event in events for e in (event, event)]) == once


def test_a_late_stage_started_does_not_move_a_completed_stage_back() -> None:
    state = project(
        [call_started(0), recording_completed(1), downloaded(3), started(Stage.RECORDING, 2)]
    )
    assert state.recording_status == "completed"

    state = project([*happy_path(), started(Stage.TRANSCRIPT, 4), started(Stage.SUMMARY, 6)])
    assert state.transcript_status == "completed"
    assert state.summary_status == "completed"
    assert state.status == "completed"
    assert state.updated_at == at(7)


def test_results_arriving_before_their_stage_started() -> None:
    events = [transcript_ready(5), summary_ready(7), downloaded(3), call_started(0)]
    state = project(events)

    assert state.status == "completed"
    assert state.created_at == at(0)
    assert state.updated_at == at(7)
    assert state.from_number == "+15551230000"


PERMUTED_EVENTS_WITHOUT_DURATION = [
    call_started(0),
    recording_completed(1).model_copy(update={"duration_seconds": None}),
    started(Stage.RECORDING, 2),
    downloaded(3),
    started(Stage.TRANSCRIPT, 4),
]


def test_every_order_of_a_calls_events_reaches_the_same_state() -> None:
    in_order = project(PERMUTED_EVENTS_WITHOUT_DURATION)
    assert in_order.recording_status == "completed"
    assert in_order.transcript_status == "processing"
    assert in_order.created_at == at(0)
    assert in_order.updated_at == at(4)

    for order in itertools.permutations(PERMUTED_EVENTS_WITHOUT_DURATION):
        assert project(order) == in_order, [e.event_type for e in order]


def test_every_order_of_a_failing_calls_events_reaches_the_same_state() -> None:
    events = [
        call_started(0),
        recording_completed(1),
        downloaded(3),
        failed(Stage.TRANSCRIPT, 4, terminal=True, error="model crashed", tries=3),
        started(Stage.SUMMARY, 6),
    ]
    in_order = project(events)
    assert in_order.status == "failed"
    assert in_order.summary_status == "skipped"

    for order in itertools.permutations(events):
        state = project(order)
        assert dataclasses.replace(state, duration_seconds=None) == dataclasses.replace(
            in_order, duration_seconds=None
        ), [e.event_type for e in order]


def test_every_order_of_a_retried_stage_that_never_announced_its_start_keeps_the_error() -> None:
    """Decision 0920: a quick stage has no `stage.started`, so its retry report can be the
    first news of its attempt; the error it brings must survive whatever comes first (the
    rebuild from the topics once lost it when the retry came before `recording.completed`)."""
    events = [
        call_started(0),
        recording_completed(1),
        failed(Stage.RECORDING, 2, terminal=False, error="media not ready yet (404)"),
        downloaded(3),
        transcript_ready(5),
        summary_ready(7),
    ]
    in_order = project(events)
    assert in_order.status == "completed"
    assert in_order.recording_error == "media not ready yet (404)"

    for order in itertools.permutations(events):
        assert project(order) == in_order, [e.event_type for e in order]


def test_recording_duration_survives_any_order() -> None:
    events = [
        call_started(0),
        recording_completed(1),
        started(Stage.RECORDING, 2),
        downloaded(3),
        started(Stage.TRANSCRIPT, 4),
    ]
    for order in itertools.permutations(events):
        assert project(order).duration_seconds == 42.5, [e.event_type for e in order]


def test_absent_recording_ends_the_call_without_recording() -> None:
    state = project([call_started(0), recording_completed(1, status="absent", error_code="13617")])

    assert state.recording_status == "no_recording"
    assert state.transcript_status == "skipped"
    assert state.summary_status == "skipped"
    assert state.status == "completed"
    assert state.recording_key is None


def test_failed_twilio_recording_fails_the_call() -> None:
    state = project([call_started(0), recording_completed(1, status="failed", error_code="31000")])

    assert state.recording_status == "failed"
    assert state.transcript_status == "skipped"
    assert state.summary_status == "skipped"
    assert state.status == "failed"
    assert state.last_error is not None
    assert "31000" in state.last_error


def test_terminal_stage_failure_fails_the_call_and_skips_downstream() -> None:
    events = [
        call_started(0),
        recording_completed(1),
        started(Stage.RECORDING, 2),
        failed(Stage.RECORDING, 3, terminal=True, error="HTTP 403 from Twilio", tries=1),
    ]
    state = project(events)

    assert state.recording_status == "failed"
    assert state.transcript_status == "skipped"
    assert state.summary_status == "skipped"
    assert state.last_error == "HTTP 403 from Twilio"
    assert state.status == "failed"


def test_terminal_transcript_failure_keeps_the_recording() -> None:
    events = [
        *happy_path()[:5],
        failed(Stage.TRANSCRIPT, 5, terminal=True, error="model crashed", tries=3),
    ]
    state = project(events)

    assert state.recording_status == "completed"
    assert state.recording_key == f"biz-1/{CALL_SID}/RE1.wav"
    assert state.transcript_status == "failed"
    assert state.summary_status == "skipped"
    assert state.transcript_tries == 3
    assert state.last_error == "model crashed"
    assert state.status == "failed"


def test_non_terminal_failure_keeps_processing_and_counts_tries() -> None:
    events = [
        call_started(0),
        recording_completed(1),
        started(Stage.RECORDING, 2),
        failed(Stage.RECORDING, 3, terminal=False, error="HTTP 503", tries=1),
        failed(Stage.RECORDING, 4, terminal=False, error="HTTP 429", tries=2),
    ]
    state = project(events)

    assert state.recording_status == "processing"
    assert state.transcript_status == "pending"
    assert state.status == "processing"
    assert state.last_error == "HTTP 429"
    assert state.recording_tries == 2

    # ...and the stage can still complete afterwards.
    assert project([*events, downloaded(5)]).recording_status == "completed"


def test_a_retried_error_stops_being_the_last_error_once_its_stage_completes() -> None:
    retried = [
        call_started(0),
        recording_completed(1),
        failed(Stage.RECORDING, 2, terminal=False, error="HTTP 404: not ready yet", tries=1),
    ]
    completed = project([*retried, downloaded(3)])

    assert completed.recording_status == "completed"
    assert completed.last_error is None
    assert completed.recording_error == "HTTP 404: not ready yet"  # kept, as history


def test_tries_count_never_goes_down_on_a_late_retry_report() -> None:
    events = [
        started(Stage.RECORDING, 2),
        failed(Stage.RECORDING, 4, terminal=False, error="second", tries=2),
        failed(Stage.RECORDING, 3, terminal=False, error="first", tries=1),
    ]
    assert project(events).recording_tries == 2


def test_a_retry_with_a_higher_attempt_reopens_a_failed_stage() -> None:
    failed_call = project(
        [
            call_started(0),
            recording_completed(1),
            downloaded(3),
            failed(Stage.TRANSCRIPT, 5, terminal=True, error="model crashed", tries=3),
        ]
    )
    assert failed_call.status == "failed"

    retried = apply(failed_call, started(Stage.TRANSCRIPT, 10, attempt=2))
    assert retried.transcript_status == "processing"
    assert retried.transcript_attempt == 2
    assert retried.status == "processing"

    done = retried
    for event in (
        transcript_ready(11, attempt=2),
        started(Stage.SUMMARY, 12, attempt=2),
        summary_ready(13, attempt=2),
    ):
        done = apply(done, event)
    assert done.transcript_status == "completed"
    assert done.summary_status == "completed"
    assert done.summary == "Caller asked for plumbing in Denver."
    assert done.status == "completed"


def test_an_old_attempts_failure_does_not_fail_a_newer_attempt() -> None:
    state = project(
        [
            call_started(0),
            downloaded(3),
            started(Stage.TRANSCRIPT, 10, attempt=2),
            transcript_ready(11, attempt=2),
            failed(Stage.TRANSCRIPT, 5, terminal=True, error="stale", attempt=1),
        ]
    )
    assert state.transcript_status == "completed"
    assert state.transcript_attempt == 2
    assert state.status != "failed"


def test_a_retried_stage_completing_does_not_complete_the_call_before_downstream() -> None:
    state = project(
        [
            call_started(0),
            recording_completed(1),
            downloaded(3),
            failed(Stage.TRANSCRIPT, 5, terminal=True, error="model crashed", tries=3),
            started(Stage.TRANSCRIPT, 10, attempt=2),
            transcript_ready(11, attempt=2),
        ]
    )
    assert state.transcript_status == "completed"
    assert state.summary is None
    assert state.status != "completed"


def test_no_speech_transcript() -> None:
    events = [
        call_started(0),
        recording_completed(1),
        downloaded(3),
        started(Stage.TRANSCRIPT, 4),
        transcript_ready(5, outcome="no_speech"),
    ]
    state = project(events)

    assert state.transcript_status == "no_speech"
    assert state.transcript_key == f"biz-1/{CALL_SID}/RE1.transcript.json"
    assert state.status != "failed"
    assert project([*events, started(Stage.TRANSCRIPT, 6)]).transcript_status == "no_speech"


def test_the_timeline_says_what_was_redacted_from_the_transcript() -> None:
    kinds = [EntityKind.CARD, EntityKind.NUMBER, EntityKind.PHONE]
    found = RedactionSummary(kinds=kinds, counts={EntityKind.PHONE: 1, EntityKind.CARD: 2})
    assert (
        timeline_detail(factories.transcript_ready(redaction=found))
        == "transcript transcribed; redacting card, number, phone: 2 card, 1 phone"
        "; audio: nothing to replace"
    )
    assert (
        timeline_detail(factories.transcript_ready(redaction=RedactionSummary(kinds=kinds)))
        == "transcript transcribed; redacting card, number, phone: none found"
        "; audio: nothing to replace"
    )
    assert (
        timeline_detail(factories.transcript_ready())
        == "transcript transcribed; audio: nothing to replace"
    )


def test_the_timeline_says_where_the_recording_was_redacted_and_never_what() -> None:
    audio = AudioRedaction(
        object_key=f"biz-1/{CALL_SID}/RE1.wav",
        sound="tone",
        padding_seconds=0.25,
        spans=[AudioSpan(channel=0, start=11.17, end=17.47), AudioSpan(channel=1, start=2, end=3)],
    )
    assert timeline_detail(factories.transcript_ready(audio_redaction=audio)) == (
        "transcript transcribed; audio: 2 spans replaced by a tone "
        "(channel 1 11.17-17.47 s, channel 2 2.00-3.00 s)"
    )
    assert timeline_detail(factories.transcript_ready(audio_redaction=None)) == (
        "transcript transcribed; audio not redacted"
    )


def test_a_recording_is_played_only_once_the_transcriber_announced_it_redacted() -> None:
    key = f"biz-1/{CALL_SID}/RE1.wav"
    downloaded_only = project([call_started(0), recording_completed(1), downloaded(3)])
    assert playback(downloaded_only, key) == Playback.REDACTING
    assert playback(project([*happy_path()[:5]]), key) == Playback.REDACTING
    assert playback(project(happy_path()), key) == Playback.READY
    silent = project(
        [call_started(0), recording_completed(1), downloaded(3), transcript_ready(5, "no_speech")]
    )
    assert playback(silent, key) == Playback.READY
    # Out of order: the transcript's news before the download's.
    assert playback(project([transcript_ready(5), downloaded(3)]), key) == Playback.READY


def test_a_recording_never_redacted_is_never_played() -> None:
    key = f"biz-1/{CALL_SID}/RE1.wav"
    given_up = [call_started(0), downloaded(3), failed(Stage.TRANSCRIPT, 4, terminal=True)]
    assert playback(project(given_up), key) == Playback.NOT_REDACTED
    retrying = [*given_up, failed(Stage.TRANSCRIPT, 6, terminal=False, attempt=2)]
    assert playback(project(retrying), key) == Playback.REDACTING
    unreported = factories.transcript_ready(occurred_at=at(5), audio_redaction=None)
    assert playback(project([downloaded(3), unreported]), key) == Playback.NOT_REDACTED
    # Another recording of the call (a newer download) is not the one redacted.
    assert playback(project(happy_path()), f"biz-1/{CALL_SID}/RE2.wav") == Playback.NOT_REDACTED


def test_a_newer_download_waits_for_its_own_redaction() -> None:
    key = f"biz-1/{CALL_SID}/RE1.wav"
    redownloaded = [*happy_path(), downloaded(9, attempt=2)]
    assert playback(project(redownloaded), key) == Playback.REDACTING


def test_the_recording_folder_a_deletion_empties_is_the_calls_own() -> None:
    state = project([call_started(0), downloaded(3)])
    dated = f"biz-1/2026-11-24/{CALL_SID}/RE1.wav"
    assert recording_folder(dataclasses.replace(state, recording_key=dated)) == (
        f"biz-1/2026-11-24/{CALL_SID}/"
    )
    for not_its_own in (
        f"biz-2/2026-11-24/{CALL_SID}/RE1.wav",  # another business's
        "biz-1/2026-11-24/RE1.wav",  # a folder of the whole day
        f"biz-1/{CALL_SID}-other/RE1.wav",
        None,
    ):
        assert recording_folder(dataclasses.replace(state, recording_key=not_its_own)) is None
