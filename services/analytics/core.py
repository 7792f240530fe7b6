"""Per-business figures by the hour from callpipe's events: calls, leads, failures and how long
each stage took. Pure: events in, figures out; no I/O.

Every figure tolerates Kafka's at-least-once delivery: calls, leads and failures are sets of
call SIDs (a duplicate adds nothing), and a stage's duration is measured once per call, from the
first event that gave the stage its work (its input: `recording.completed`,
`recording.downloaded`, `transcript.ready`) to its first output, waiting included. Not from
`stage.started`: a stage announces only work that takes a while (decision 0920). Each event
counts in the hour it occurred.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.events import (
    AnyEvent,
    CallStarted,
    RecordingDownloaded,
    Stage,
    StageFailed,
    SummaryReady,
    TranscriptReady,
    input_of_stage,
)

END_TO_END = "end_to_end"
# A call whose stage never finishes is forgotten after this, so memory stays bounded.
FORGET_AFTER = timedelta(days=1)


@dataclass
class Durations:
    count: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_seconds += seconds
        self.max_seconds = max(self.max_seconds, seconds)

    def view(self) -> dict[str, float]:
        mean = self.total_seconds / self.count if self.count else 0.0
        return {
            "count": self.count,
            "mean_seconds": round(mean, 3),
            "max_seconds": round(self.max_seconds, 3),
        }


@dataclass
class Hour:
    calls: set[str] = field(default_factory=set)
    leads: set[str] = field(default_factory=set)
    failures: set[tuple[str, str]] = field(default_factory=set)
    durations: dict[str, Durations] = field(default_factory=lambda: defaultdict(Durations))

    def view(self) -> dict[str, Any]:
        return {
            "calls": len(self.calls),
            "leads": len(self.leads),
            "failures": len(self.failures),
            "stage_seconds": {stage: d.view() for stage, d in sorted(self.durations.items())},
        }


def _hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _finished_stage(event: AnyEvent) -> Stage | None:
    if isinstance(event, RecordingDownloaded):
        return Stage.RECORDING
    if isinstance(event, TranscriptReady):
        return Stage.TRANSCRIPT
    if isinstance(event, SummaryReady):
        return Stage.SUMMARY
    return None


class Figures:
    def __init__(self) -> None:
        self._hours: dict[tuple[str, datetime], Hour] = defaultdict(Hour)
        # (call SID, stage or END_TO_END) → when it started and ended, as far as seen. Topics
        # are not ordered with each other: a stage's end can arrive before its start.
        self._open: dict[tuple[str, str], dict[str, datetime]] = {}
        self._measured: set[tuple[str, str]] = set()

    def apply(self, event: AnyEvent) -> None:
        hour = self._hours[(event.business_id, _hour_of(event.occurred_at))]
        sid, business, at = event.call_sid, event.business_id, event.occurred_at
        if isinstance(event, CallStarted):
            hour.calls.add(sid)
            self._mark(business, (sid, END_TO_END), "start", at)
        elif isinstance(event, StageFailed) and event.terminal:
            hour.failures.add((sid, event.stage.value))
        stage = _finished_stage(event)
        if stage is not None:
            self._mark(business, (sid, stage.value), "end", at)
        stage = input_of_stage(event)
        if stage is not None:
            self._mark(business, (sid, stage.value), "start", at)
        if isinstance(event, SummaryReady):
            self._mark(business, (sid, END_TO_END), "end", at)
            if event.lead.kind == "lead":
                hour.leads.add(sid)

    def _mark(self, business: str, key: tuple[str, str], side: str, at: datetime) -> None:
        """Notes a start or an end (the first of each); once both are known, the duration
        counts in the hour of the end."""
        if key in self._measured:
            return
        marks = self._open.setdefault(key, {})
        marks.setdefault(side, at)
        if "start" in marks and "end" in marks:
            del self._open[key]
            self._measured.add(key)
            seconds = max(0.0, (marks["end"] - marks["start"]).total_seconds())
            self._hours[(business, _hour_of(marks["end"]))].durations[key[1]].add(seconds)

    def forget_unfinished(self, now: datetime) -> None:
        """Drops stages seen over FORGET_AFTER ago whose other end never came (a call without
        a recording never gets a summary)."""
        self._open = {
            key: marks
            for key, marks in self._open.items()
            if now - min(marks.values()) < FORGET_AFTER
        }

    def view(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{business: {hour (ISO, UTC): figures}}, hours in order."""
        out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for (business, hour), figures in sorted(self._hours.items()):
            out[business][hour.isoformat()] = figures.view()
        return dict(out)
