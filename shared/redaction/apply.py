"""Redacting what `detect` found: in words (each span becomes one marker word, "[card]") and
in text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from shared.redaction.detect import WordLike, find_in_text
from shared.redaction.kinds import EntityKind, Span, TextSpan, redacted_kinds
from shared.redaction.spoken import Token, entity_bounds

W = TypeVar("W", bound=WordLike)
S = TypeVar("S", Span, TextSpan)


def marker(kind: EntityKind) -> str:
    return f"[{kind}]"


@dataclass(frozen=True)
class Marker:
    """The word that stands for a redacted span. Its text keeps what the span's first word had
    before the value (Whisper's leading space, a Hebrew prefix) and what its last word had
    after it (punctuation): " [phone].\""""

    text: str
    start: float
    end: float


def select(spans: Iterable[S], kinds: frozenset[EntityKind]) -> list[S]:
    """The spans a business redacts: of the kinds it chose, and always cards and numbers."""
    redacted = redacted_kinds(kinds)
    return [span for span in spans if span.kind in redacted]


def redact_words(words: Sequence[W], spans: Sequence[Span]) -> list[W | Marker]:
    """The words with each span replaced by one `Marker` (spans as `find_in_words` gives
    them: in order, not overlapping)."""
    redacted: list[W | Marker] = []
    position = 0
    for span in sorted(spans, key=lambda s: s.first_word):
        redacted.extend(words[position : span.first_word])
        first, last = words[span.first_word].text, words[span.last_word].text
        before = first[: entity_bounds(Token(first))[0]]
        after = last[entity_bounds(Token(last))[1] :]
        redacted.append(Marker(before + marker(span.kind) + after, span.start, span.end))
        position = span.last_word + 1
    redacted.extend(words[position:])
    return redacted


def redact_text(text: str, kinds: frozenset[EntityKind]) -> tuple[str, dict[EntityKind, int]]:
    """The text with each span of the kinds redacted replaced by its marker, and how many of
    each kind were replaced."""
    spans = select(find_in_text(text), kinds)
    pieces = []
    position = 0
    for span in spans:
        pieces += [text[position : span.start], marker(span.kind)]
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces), dict(Counter(span.kind for span in spans))
