"""The analytics figures: per business and hour, duplicates of at-least-once delivery absorbed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.analytics.core import Figures
from shared.events import (
    Event,
    Lead,
    RecordingCompleted,
    RecordingDownloaded,
    Stage,
    StageFailed,
    StageStarted,
    SummaryReady,
    TranscriptReady,
)
from tests.support import events as factories

T0 = datetime(2026, 3, 1, 9, 58, tzinfo=UTC)


def call_events(sid: str, business: str, lead: bool) -> list[Event]:
    started = factories.call_started(sid, business, occurred_at=T0)

    def at(seconds: float, event: Event) -> Event:
        return event.model_copy(update={"occurred_at": T0 + timedelta(seconds=seconds)})

    return [
        started,
        at(1, started.caused(RecordingCompleted, "c", recording_sid="RE1",
                             recording_status="completed", recording_url="https://x/RE1")),
        at(2, started.caused(StageStarted, "r", stage=Stage.RECORDING)),  # not a stage's start
        at(4, started.caused(RecordingDownloaded, "d", recording_sid="RE1", object_key="k",
                             content_type="audio/wav", size_bytes=1, sha256="0")),
        at(15, started.caused(TranscriptReady, "tr", outcome="transcribed", transcript_key="t")),
        at(150, started.caused(SummaryReady, "sr", outcome="extracted", summary="",
                               lead=Lead(kind="lead" if lead else "spam"), extractor="x")),
    ]  # fmt: skip


def test_calls_leads_and_stage_durations_by_business_and_hour() -> None:
    figures = Figures()
    for event in [*call_events("CA1", "plumber", True), *call_events("CA2", "plumber", False)]:
        figures.apply(event)
    view = figures.view()["plumber"]
    nine, ten = view["2026-03-01T09:00:00+00:00"], view["2026-03-01T10:00:00+00:00"]
    assert (nine["calls"], nine["leads"], ten["calls"], ten["leads"]) == (2, 0, 0, 1)
    assert nine["stage_seconds"]["recording"] == {
        "count": 2,
        "mean_seconds": 3.0,
        "max_seconds": 3.0,
    }  # from recording.completed, not from its stage.started: stages announce only slow work
    assert nine["stage_seconds"]["transcript"]["mean_seconds"] == 11.0
    # The summaries came after ten o'clock: they count in that hour.
    assert ten["stage_seconds"]["summary"]["count"] == 2
    assert ten["stage_seconds"]["end_to_end"]["max_seconds"] == 150.0


def test_redelivered_events_change_nothing() -> None:
    once, twice = Figures(), Figures()
    events = call_events("CA1", "plumber", True)
    for event in events:
        once.apply(event)
    for event in [*events, *events[1:]]:
        twice.apply(event)
    assert twice.view() == once.view()


def test_a_terminal_failure_counts_once_and_a_retry_not_at_all() -> None:
    figures = Figures()
    started = call_events("CA1", "roofer", False)[0]
    retry, failed = (
        started.caused(
            StageFailed, name, stage=Stage.TRANSCRIPT, error="e", terminal=terminal, occurred_at=T0
        )
        for name, terminal in [("r1", False), ("f", True)]
    )
    for event in [started, retry, failed, failed]:
        figures.apply(event)
    hour = figures.view()["roofer"]["2026-03-01T09:00:00+00:00"]
    assert (hour["calls"], hour["failures"], hour["leads"]) == (1, 1, 0)


def test_unfinished_stages_are_forgotten_after_a_day() -> None:
    figures = Figures()
    started = call_events("CA1", "plumber", True)[0]
    figures.apply(started)
    figures.forget_unfinished(T0 + timedelta(days=2))
    late = started.caused(SummaryReady, "sr", outcome="extracted", summary="", lead=Lead(),
                          extractor="x", occurred_at=T0 + timedelta(days=2))  # fmt: skip
    figures.apply(late)
    assert figures.view()["plumber"]["2026-03-03T09:00:00+00:00"]["stage_seconds"] == {}


def test_a_stage_that_ends_before_its_start_arrives_is_still_measured() -> None:
    """Outputs and stage.status are different topics: Kafka orders neither against the other."""
    in_order, reversed_order = Figures(), Figures()
    events = call_events("CA1", "plumber", True)
    for event in events:
        in_order.apply(event)
    for event in reversed(events):
        reversed_order.apply(event)
    assert reversed_order.view() == in_order.view()
