"""Extractor core: the offline rules backend. A transcript in, a summary and a lead out.

Rules over a service catalogue (service → keywords) and a list of served cities, matched on
word boundaries in what the caller said. No I/O, no network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from shared.events import Lead

EXTRACTOR_NAME = "rules-v1"

DEFAULT_SERVICE_CATALOGUE: Mapping[str, Sequence[str]] = {
    "plumbing": ("plumber", "plumbing", "leak", "leaking", "pipe", "sink", "drain", "toilet"),
    "electrical": ("electrician", "electrical", "power", "outlet", "wiring", "breaker"),
    "locksmith": ("locksmith", "locked out", "lock", "keys"),
    "hvac": ("air conditioning", "heating", "furnace", "hvac", "boiler"),
    "cleaning": ("cleaning", "cleaner", "maid"),
    "moving": ("moving", "movers", "relocation"),
}

DEFAULT_CITIES: Sequence[str] = (
    "Boston", "Denver", "New York", "Chicago", "Austin", "Seattle", "Miami", "Tel Aviv",
    "Jerusalem", "Haifa", "London", "San Francisco", "Los Angeles",
)  # fmt: skip


def _find(terms: Sequence[str], text: str) -> list[tuple[int, str]]:
    hits = []
    for term in terms:
        for match in re.finditer(rf"\b{re.escape(term)}\b", text, flags=re.IGNORECASE):
            hits.append((match.start(), term))
    return sorted(hits)


def extract_lead(
    text: str,
    catalogue: Mapping[str, Sequence[str]] = DEFAULT_SERVICE_CATALOGUE,
    cities: Sequence[str] = DEFAULT_CITIES,
) -> Lead:
    """The service with the most keyword hits and the first city named; confidence grows with
    the evidence: half for a service, a third for a city, the rest for repeated mentions."""
    service_hits = {name: len(_find(words, text)) for name, words in catalogue.items()}
    service, hits = max(service_hits.items(), key=lambda item: item[1], default=(None, 0))
    city_hits = _find(cities, text)
    city = city_hits[0][1] if city_hits else None
    confidence = 0.0
    if hits:
        confidence += 0.5 + min(hits - 1, 3) * 0.05
    if city:
        confidence += 0.3 + min(len(city_hits) - 1, 1) * 0.05
    return Lead(service=service if hits else None, city=city, confidence=round(confidence, 2))


def summarise(caller_lines: Sequence[str], lead: Lead) -> str:
    parts = []
    if lead.service:
        parts.append(f"Caller asked for {lead.service}")
        if lead.city:
            parts[-1] += f" in {lead.city}"
        parts[-1] += "."
    elif lead.city:
        parts.append(f"Caller is in {lead.city}.")
    if caller_lines:
        parts.append(f'They said: "{caller_lines[0]}"')
    return " ".join(parts) or "No request was identified."
