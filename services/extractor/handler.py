"""Extractor: transcript.ready → summary.ready, with the offline rules backend."""

from __future__ import annotations

from collections.abc import Sequence

from services.extractor import core
from shared.events import AnyEvent, Event, Lead, SummaryReady, TranscriptReady
from shared.retry import TerminalError
from shared.storage import ObjectStore
from shared.transcript import Transcript


class ExtractHandler:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def __call__(self, event: AnyEvent) -> Sequence[Event]:
        if not isinstance(event, TranscriptReady):
            raise TerminalError(f"extractor cannot handle {event.event_type}")
        if event.outcome == "no_speech":
            return [self._summary(event, "nothing_to_extract", "No speech in the recording.")]
        transcript = Transcript.model_validate_json(await self._store.get(event.transcript_key))
        caller_lines = [u.text for u in transcript.utterances if u.speaker != "agent"]
        lead = core.extract_lead(" ".join(caller_lines) or event.preview)
        return [self._summary(event, "extracted", core.summarise(caller_lines, lead), lead)]

    @staticmethod
    def _summary(
        event: TranscriptReady, outcome: str, summary: str, lead: Lead | None = None
    ) -> SummaryReady:
        return event.caused(
            SummaryReady,
            "summary.ready",
            outcome=outcome,
            summary=summary,
            lead=lead or Lead(),
            extractor=core.EXTRACTOR_NAME,
        )
