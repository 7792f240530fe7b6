"""What redaction finds: the kinds of personal data and where they are."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EntityKind(StrEnum):
    CARD = "card"
    PHONE = "phone"
    EMAIL = "email"
    NATIONAL_ID = "national_id"
    IBAN = "iban"
    # A run of seven or more digits said together that no check names: a card, phone or ID
    # number with a digit dropped or misheard looks like this.
    NUMBER = "number"


ALWAYS_REDACTED = frozenset({EntityKind.CARD, EntityKind.NUMBER})
ALL_KINDS = frozenset(EntityKind)


@dataclass(frozen=True)
class Span:
    """Words `first_word`..`last_word` (inclusive), from the first's start to the last's end."""

    kind: EntityKind
    first_word: int
    last_word: int
    start: float
    end: float


@dataclass(frozen=True)
class TextSpan:
    """Characters `start`..`end` (end exclusive) of a text."""

    kind: EntityKind
    start: int
    end: int


def redacted_kinds(kinds: frozenset[EntityKind]) -> frozenset[EntityKind]:
    """The kinds a business redacts: what it chose, and always cards and long numbers."""
    return kinds | ALWAYS_REDACTED
