"""The instant extractor, for benchmarks and chaos runs only: the same answer for every call,
so a run measures callpipe's own work rather than the rules' or a language model's."""

from __future__ import annotations

from services.extractor import core
from shared.events import Lead
from shared.transcript import Transcript


class InstantExtractor:
    async def extract(
        self, transcript: Transcript, profile: core.BusinessProfile
    ) -> core.Extraction:
        return core.Extraction("A caller asked for a service.", Lead(), extractor="instant")
