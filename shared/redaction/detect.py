"""Where the personal data is, in a list of words (a transcript's) or in a text (a summary, a
quote).

Any run of seven or more digits said together is found; the checks in `checks` name it, and
a run no check names is a `number`. When no check names the whole run, the best split at the
run's groups names its parts ("15, 052-4567890": a street number said just before a phone
number; two phone numbers said in one breath). Digits a split leaves unnamed are redacted with
the part beside them, or as a `number` of their own when they are seven or more. An Israeli ID
is named only as a whole run: any nine digits pass its check one time in ten.

What stays: runs shorter than seven digits (prices, times, street numbers, quantities, short
numbers), dates and times written as such ("12/05/2024", "10:30", "12.05.2024"), an amount
written as one number beside its currency or unit ("1,250,000 shekels", "₪1,250,000") and a
list of years ("2019, 2020", "2019-2021").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.redaction.checks import name_digits
from shared.redaction.email import email_spans
from shared.redaction.kinds import EntityKind, Span, TextSpan
from shared.redaction.spoken import (
    MIN_LONG_RUN,
    DigitRun,
    Group,
    Token,
    digit_runs,
    entity_bounds,
    tokens_of_text,
)

MAX_AMOUNT_DIGITS = 12
_YEARS = range(1900, 2100)
UNITS = frozenset(
    {"shekels", "shekel", "nis", "ils", "dollars", "dollar", "usd", "euros", "euro", "eur",
     "pounds", "bucks", "units", "items", "pieces", "people", "meters", "metres", "km",
     "kilometers", "kilometres", "miles", "liters", "litres", "kg", "kilograms", "tons",
     "$", "₪", "€", "£", "שח", "שקל", "שקלים", "דולר", "דולרים", "יורו", "מטר", "מטרים",
     "יחידות", "איש", "אנשים", "קמ", "ליטר", "קילו", "טון"}
)  # fmt: skip


class WordLike(Protocol):
    """A transcript's word (`shared.transcript.Word` is one)."""

    @property
    def text(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


@dataclass(frozen=True)
class Found:
    kind: EntityKind
    first_token: int
    last_token: int


def find_in_words(words: Sequence[WordLike]) -> list[Span]:
    """The spans of personal data in the words, in order, not overlapping."""
    found = find([Token(word.text) for word in words])
    return [
        Span(
            f.kind, f.first_token, f.last_token, words[f.first_token].start, words[f.last_token].end
        )
        for f in found
    ]


def find_in_text(text: str) -> list[TextSpan]:
    """The spans of personal data in the text, in order, not overlapping."""
    tokens = tokens_of_text(text)
    spans = []
    for f in find(tokens):
        first, last = tokens[f.first_token], tokens[f.last_token]
        start = first.offset + entity_bounds(first)[0]
        end = last.offset + entity_bounds(last)[1]
        spans.append(TextSpan(f.kind, start, end))
    return spans


def find(tokens: Sequence[Token]) -> list[Found]:
    found = []
    for run in digit_runs(tokens):
        if len(run.digits) < MIN_LONG_RUN or _is_amount(run, tokens) or _is_years(run):
            continue
        found.extend(_named_parts(run))
    found.extend(Found(EntityKind.EMAIL, first, last) for first, last in email_spans(tokens))
    return _merged(found)


def _unit(token: Token) -> bool:
    return re.sub(r"[\"'׳״]", "", token.core.lower()) in UNITS


def _is_amount(run: DigitRun, tokens: Sequence[Token]) -> bool:
    """One number written beside its currency or unit: "1,250,000 shekels"."""
    if len({group.token for group in run.groups}) > 1 or run.groups[0].spoken or run.plus:
        return False
    if run.digits.startswith("0") or len(run.digits) > MAX_AMOUNT_DIGITS:
        return False
    before = run.first_token - 1
    after = run.last_token + 1
    return (
        run.currency
        or (before >= 0 and _unit(tokens[before]))
        or (after < len(tokens) and _unit(tokens[after]))
    )


def _is_years(run: DigitRun) -> bool:
    """Two years or more, written: "2019, 2020", "2019-2021". No card starts with a year
    (the Mastercard range starting with 2 begins at 2221)."""
    return len(run.groups) > 1 and all(
        not group.spoken and len(group.digits) == 4 and int(group.digits) in _YEARS
        for group in run.groups
    )


@dataclass(frozen=True)
class _Part:
    kind: EntityKind | None  # None: digits no check names
    first_group: int
    last_group: int


def _named_parts(run: DigitRun) -> list[Found]:
    whole = name_digits(run.digits, run.plus, run.letters)
    if whole is not None:
        return [Found(whole, _start_token(run, whole), run.last_token)]
    groups = _chunks(run.groups)
    parts = _best_split(run, groups)
    if not any(part.kind for part in parts):
        return [Found(EntityKind.NUMBER, _start_token(run, EntityKind.NUMBER), run.last_token)]
    found: list[tuple[EntityKind | None, int, int]] = []
    for part in parts:
        first = groups[part.first_group].first_token
        if part.first_group == 0:
            first = _start_token(run, part.kind)
        digits = sum(len(g.digits) for g in groups[part.first_group : part.last_group + 1])
        kind = part.kind
        if kind is None and digits >= MIN_LONG_RUN:
            kind = EntityKind.NUMBER
        found.append((kind, first, groups[part.last_group].last_token))
    # A few digits no check names go with the part beside them: the CVV said after a card.
    merged: list[tuple[EntityKind | None, int, int]] = []
    for kind, first, last in found:
        if merged and (kind is None or merged[-1][0] is None):
            previous_kind, previous_first, _ = merged.pop()
            merged.append((previous_kind or kind, previous_first, last))
        else:
            merged.append((kind, first, last))
    return [Found(kind or EntityKind.NUMBER, first, last) for kind, first, last in merged]


def _start_token(run: DigitRun, kind: EntityKind | None) -> int:
    """A "+" said before a run is part of any of it; an IBAN's letters only of an IBAN."""
    if run.lead_token is not None and (run.plus or kind is EntityKind.IBAN):
        return run.lead_token
    return run.first_token


@dataclass(frozen=True)
class _Chunk:
    digits: str
    first_token: int
    last_token: int


def _chunks(groups: Sequence[Group]) -> list[_Chunk]:
    """The pieces a run may be split between: a digit said alone joins its neighbours. Were
    "four, five, eight, zero, ..." splittable at every digit, some stretch of any long run
    would pass Luhn or look like a phone number, and name it wrongly."""
    chunks: list[_Chunk] = []
    for group in groups:
        if chunks and (len(group.digits) == 1 or len(chunks[-1].digits) == 1):
            previous = chunks.pop()
            chunks.append(_Chunk(previous.digits + group.digits, previous.first_token, group.token))
        else:
            chunks.append(_Chunk(group.digits, group.token, group.token))
    return chunks


def _best_split(run: DigitRun, groups: Sequence[_Chunk]) -> list[_Part]:
    """The split at the groups that names the most digits (then: has the fewest parts). An ID
    is not named by a split: any nine digits pass its check one time in ten."""
    count = len(groups)
    # best[i]: (digits named, -parts, parts) for groups[i:]
    best: list[tuple[int, int, tuple[_Part, ...]]] = [(0, 0, ())] * (count + 1)
    for first in range(count - 1, -1, -1):
        rest_named, rest_negative_parts, rest = best[first + 1]
        candidate = (rest_named, rest_negative_parts - 1, (_Part(None, first, first), *rest))
        digits = ""
        for last in range(first, count):
            digits += groups[last].digits
            kind = name_digits(
                digits,
                plus=run.plus and first == 0,
                letters=run.letters if first == 0 else "",
            )
            if kind is None or kind is EntityKind.NATIONAL_ID:
                continue
            rest_named, rest_negative_parts, rest = best[last + 1]
            option = (
                rest_named + len(digits),
                rest_negative_parts - 1,
                (_Part(kind, first, last), *rest),
            )
            candidate = max(candidate, option, key=lambda choice: choice[:2])
        best[first] = candidate
    return _joined_unnamed(list(best[0][2]))


def _joined_unnamed(parts: list[_Part]) -> list[_Part]:
    joined: list[_Part] = []
    for part in parts:
        if joined and part.kind is None and joined[-1].kind is None:
            joined[-1] = _Part(None, joined[-1].first_group, part.last_group)
        else:
            joined.append(part)
    return joined


def _merged(found: list[Found]) -> list[Found]:
    """Overlapping spans as one, named by the longer (a word cannot be redacted by halves)."""
    merged: list[Found] = []
    for f in sorted(found, key=lambda f: (f.first_token, -f.last_token)):
        if merged and f.first_token <= merged[-1].last_token:
            previous = merged[-1]
            longer = max((previous, f), key=lambda s: s.last_token - s.first_token)
            merged[-1] = Found(
                longer.kind, previous.first_token, max(previous.last_token, f.last_token)
            )
        else:
            merged.append(f)
    return merged
