"""Extractor: transcript.ready → summary.ready, through one of two backends behind one port:
the offline rules (default) or an LLM over the OpenAI chat API. What either answers is
redacted as the call's policy says before it is published."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from services.extractor import core
from services.extractor.gazetteer import gazetteer
from shared.decisions import for_deleted_call
from shared.events import AnyEvent, Event, Lead, SummaryReady, TranscriptReady
from shared.retry import carry_out
from shared.storage import ObjectStore
from shared.tombstones import discard, is_deleted
from shared.transcript import Transcript

log = logging.getLogger(__name__)


class Extractor(Protocol):
    async def extract(
        self, transcript: Transcript, profile: core.BusinessProfile
    ) -> core.Extraction: ...


class RulesExtractor:
    """The offline backend, in the call's language (or `default_language` when unknown)."""

    def __init__(self, default_language: str) -> None:
        self._default_language = default_language

    def warm_up(self) -> None:
        gazetteer(self._default_language)

    async def extract(
        self, transcript: Transcript, profile: core.BusinessProfile
    ) -> core.Extraction:
        language = (transcript.language or self._default_language).split("-")[0].lower()
        return await asyncio.to_thread(self._extract, transcript, profile, language)

    @staticmethod
    def _extract(
        transcript: Transcript, profile: core.BusinessProfile, language: str
    ) -> core.Extraction:
        return core.rules_extraction(transcript, profile, gazetteer(language))


def load_catalogue(path: Path | None) -> core.CatalogueFile:
    """The businesses' service catalogues and served cities (JSON); none: the defaults."""
    if path is None:
        return core.CatalogueFile()
    return core.CatalogueFile.model_validate_json(path.read_bytes())


class ExtractHandler:
    def __init__(
        self, store: ObjectStore, extractor: Extractor, catalogue: core.CatalogueFile
    ) -> None:
        self._store = store
        self._extractor = extractor
        self._catalogue = catalogue

    async def __call__(self, event: AnyEvent) -> Sequence[Event]:
        if not isinstance(event, TranscriptReady):
            carry_out(core.unhandled_event(event.event_type))
        if skip := for_deleted_call(await is_deleted(self._store, event)):
            return await discard(self._store, skip)
        if event.outcome == "no_speech":
            return [self._nothing(event, "No speech in the recording.")]
        transcript = Transcript.model_validate_json(await self._store.get(event.transcript_key))
        if not core.has_words(transcript):
            return [self._nothing(event, "The transcript has no words.")]
        profile = self._catalogue.profile(event.business_id)
        result = await self._extractor.extract(transcript, profile)
        if deleted_meanwhile := for_deleted_call(await is_deleted(self._store, event)):
            return await discard(self._store, deleted_meanwhile)
        result = core.redacted(result, frozenset(event.redact))
        lead = result.lead
        log.info(
            "extracted by %s: %s, service %s, city %s",
            result.extractor,
            lead.kind or "unclassified",
            lead.service or "-",
            lead.city or "-",
        )
        return [
            event.caused(
                SummaryReady,
                "summary.ready",
                outcome="extracted",
                summary=result.summary,
                lead=result.lead,
                extractor=result.extractor,
                model=result.model,
                prompt_version=result.prompt_version,
            )
        ]

    @staticmethod
    def _nothing(event: TranscriptReady, summary: str) -> SummaryReady:
        return event.caused(
            SummaryReady,
            "summary.ready",
            outcome="nothing_to_extract",
            summary=summary,
            lead=Lead(),
            extractor=core.EXTRACTOR_NAME,
        )
