"""E-mail addresses, written ("john.smith@gmail.com") or spoken as Whisper writes them ("john
dot smith at gmail dot com", "יוסי נקודה כהן שטרודל gmail נקודה com")."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto

from shared.redaction.spoken import Token, spoken_digits


class _Part(Enum):
    WORD = auto()
    AT = auto()
    SPOKEN_AT = auto()  # "at": also an everyday word, so it needs a known top-level domain
    DOT = auto()
    JOIN = auto()  # underscore, hyphen


_SAID = {
    "@": _Part.AT, "שטרודל": _Part.AT, "at": _Part.SPOKEN_AT,
    ".": _Part.DOT, "dot": _Part.DOT, "נקודה": _Part.DOT,
    "_": _Part.JOIN, "underscore": _Part.JOIN, "-": _Part.JOIN, "dash": _Part.JOIN,
    "hyphen": _Part.JOIN, "מקף": _Part.JOIN,
}  # fmt: skip
KNOWN_TOP_LEVEL_DOMAINS = frozenset(
    {"com", "net", "org", "il", "co", "io", "edu", "gov", "info", "biz", "me", "uk", "us",
     "de", "fr", "ru", "ac", "ai", "app", "dev", "קום", "נט", "אורג"}
)  # fmt: skip
_TOP_LEVEL_DOMAIN = re.compile(r"^[a-z]{2,6}$")
# Before a spoken "at" these make a sentence, not an address: "find us at callpipe dot com".
_NOT_A_MAILBOX = frozenset(
    {"us", "me", "him", "her", "them", "it", "you", "we", "i", "they", "is", "are", "was",
     "were", "be", "work", "works", "find", "visit", "look", "online", "available", "order",
     "shop", "buy", "here", "there", "site", "website", "page", "store", "located", "live"}
)  # fmt: skip


@dataclass(frozen=True)
class _Piece:
    part: _Part
    text: str
    token: int


def _pieces(tokens: Sequence[Token]) -> list[_Piece]:
    pieces = []
    for index, token in enumerate(tokens):
        core = token.core.lower()
        if core in _SAID:
            pieces.append(_Piece(_SAID[core], core, index))
            continue
        for text in re.split(r"([.@_\-])", core):
            if text:
                pieces.append(_Piece(_SAID.get(text, _Part.WORD), text, index))
    return pieces


def _is_digit(text: str) -> bool:
    return text.isdigit() or spoken_digits(text) is not None


def _domain_end(pieces: list[_Piece], at: int) -> int | None:
    """The index of the domain's last piece after the "at" at `at`, or None: labels joined by
    dots (and hyphens inside a label), at least two, the last a top-level domain."""
    end = None
    position = at + 1
    labels = 0
    while position < len(pieces) and pieces[position].part is _Part.WORD:
        labels += 1
        end = position
        while (
            position + 2 < len(pieces)
            and pieces[position + 1].part is _Part.JOIN
            and pieces[position + 2].part is _Part.WORD
        ):
            position += 2
            end = position
        if position + 2 < len(pieces) and pieces[position + 1].part is _Part.DOT:
            position += 2
        else:
            break
    if end is None or labels < 2:
        return None
    top = pieces[end].text
    if pieces[at].part is _Part.SPOKEN_AT:
        return end if top in KNOWN_TOP_LEVEL_DOMAINS else None
    return end if top in KNOWN_TOP_LEVEL_DOMAINS or _TOP_LEVEL_DOMAIN.match(top) else None


def _mailbox_start(pieces: list[_Piece], at: int) -> int | None:
    """The index of the mailbox's first piece before the "at" at `at`, or None: words joined by
    dots, underscores and hyphens, and digits said one by one ("john one two three")."""
    start = at - 1
    if start < 0 or pieces[start].part is not _Part.WORD:
        return None
    if pieces[at].part is _Part.SPOKEN_AT and pieces[start].text in _NOT_A_MAILBOX:
        return None
    while start > 0:
        previous = pieces[start - 1]
        if previous.part in (_Part.DOT, _Part.JOIN) and start > 1:
            if pieces[start - 2].part is not _Part.WORD:
                break
            start -= 2
        elif previous.part is _Part.WORD and (
            _is_digit(previous.text) or _is_digit(pieces[start].text)
        ):
            start -= 1
        else:
            break
    return start


def email_spans(tokens: Sequence[Token]) -> list[tuple[int, int]]:
    """The e-mail addresses in the tokens, as (first token, last token), inclusive."""
    pieces = _pieces(tokens)
    spans = []
    for at, piece in enumerate(pieces):
        if piece.part not in (_Part.AT, _Part.SPOKEN_AT):
            continue
        start, end = _mailbox_start(pieces, at), _domain_end(pieces, at)
        if start is not None and end is not None:
            spans.append((pieces[start].token, pieces[end].token))
    return spans
