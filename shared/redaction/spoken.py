"""Digits as speech recognition writes them, and the runs of digits said together.

Whisper writes a number read out in many ways: "four, five, three, two", "4,111, 111, 1111",
"oh five four", "double seven", "seventy-eight", digit words mixed with numerals, Hebrew digit
words ("אפס חמש ושתיים") and numerals in Hebrew text ("ל-052-4567890"). Every piece of text
(a word of a transcript, or a whitespace-delimited piece of a text) is a `Token`; `digit_runs`
reads the tokens and groups the digits said together: digits and digit words separated only by
punctuation or fillers ("uh", "אה"). Any other word ends a run. Each digit keeps the token it
came from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto

_LEADING = " \t\r\n\"'“”‘’«»"
_TRAILING = _LEADING + ".,;:!?…"


@dataclass(frozen=True)
class Token:
    """A piece of text; its core is the text without surrounding spaces, quotes and sentence
    punctuation (what a redaction replaces)."""

    text: str
    offset: int = 0

    @property
    def core_start(self) -> int:
        return len(self.text) - len(self.text.lstrip(_LEADING))

    @property
    def core_end(self) -> int:
        return max(self.core_start, len(self.text.rstrip(_TRAILING)))

    @property
    def core(self) -> str:
        return self.text[self.core_start : self.core_end]


def tokens_of_text(text: str) -> list[Token]:
    return [Token(m.group(), m.start()) for m in re.finditer(r"\S+", text)]


ENGLISH_DIGITS = {
    "zero": "0", "oh": "0", "o": "0", "nought": "0", "one": "1", "two": "2", "three": "3",
    "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
ENGLISH_TEENS = {
    "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19",
}  # fmt: skip
ENGLISH_TENS = {
    "twenty": "2", "thirty": "3", "forty": "4", "fifty": "5", "sixty": "6", "seventy": "7",
    "eighty": "8", "ninety": "9",
}  # fmt: skip
# Feminine and masculine forms. Not "שנים": as a word on its own it is mostly "years".
HEBREW_DIGITS = {
    "אפס": "0", "אחת": "1", "אחד": "1", "שתיים": "2", "שתים": "2", "שניים": "2", "שתי": "2",
    "שני": "2", "שלוש": "3", "שלושה": "3", "ארבע": "4", "ארבעה": "4", "חמש": "5", "חמישה": "5",
    "חמשה": "5", "שש": "6", "שישה": "6", "ששה": "6", "שבע": "7", "שבעה": "7", "שמונה": "8",
    "תשע": "9", "תשעה": "9",
}  # fmt: skip
MULTIPLIERS = {"double": 2, "triple": 3}
FILLERS = frozenset(
    {"uh", "um", "umm", "uhm", "er", "erm", "ah", "hmm", "mm", "אה", "אהה", "אמ", "אממ", "הממ"}
)
PLUS_WORDS = frozenset({"+", "plus", "פלוס"})
CURRENCY_SIGNS = "$₪€£"
MIN_LONG_RUN = 7  # digits
# Punctuation Whisper writes between groups of digits; a token of these alone joins.
_JOINERS = frozenset("-–—־,.…")
_SEPARATORS = ".,-–־"
_HEBREW_PREFIX = re.compile(
    r"^(?P<prefix>[ובלמהשכ]{1,3})[-־–\"'׳״]?(?=[\d+(" + CURRENCY_SIGNS + "])"
)
_NUMERAL = re.compile(r"^\(?\d[\d()\-–־.,]*$")
_DATE = re.compile(r"^(\d{1,2})[.\-–/](\d{1,2})[.\-–/](\d{2}|\d{4})$")
_ISO_DATE = re.compile(r"^(?:19|20)\d\d[.\-–/](0?[1-9]|1[0-2])[.\-–/](0?[1-9]|[12]\d|3[01])$")
_GLUED_NUMBER = re.compile(r"\d+(?:[-–־.,()]\d+)*")
_IBAN_START = re.compile(r"^(?P<letters>[A-Z]{2})(?P<digits>\d{2}[\d\-]*)?$")
_SPELLED_LETTER = re.compile(r"^(?P<letter>[A-Z])\.?$")


class Role(Enum):
    DIGITS = auto()
    FILLER = auto()  # "uh", punctuation between groups: does not end a run
    PLUS = auto()
    MULTIPLIER = auto()
    LETTERS = auto()  # an IBAN's country code, perhaps with its first digits ("IL62")
    BREAK = auto()


@dataclass(frozen=True)
class Reading:
    role: Role
    groups: tuple[str, ...] = ()  # the digits, as written or said in pieces
    # False when the token starts a new run even right after digits (a Hebrew prefix such as
    # ל־ "to": "ל-052..."; ו־ "and" continues).
    joins: bool = True
    plus: bool = False
    currency: bool = False
    spoken: bool = False
    open_tens: bool = False  # "seventy" that the next digit word completes ("seventy eight")
    letters: str = ""
    times: int = 1

    @property
    def digits(self) -> str:
        return "".join(self.groups)


def spoken_digits(word: str) -> tuple[str, bool] | None:
    """The digits a word says ("seven", "seventy-eight", "ושתיים"), and whether it is a bare
    tens word; None when it says none."""
    lowered = word.lower()
    if lowered.startswith("ו") and lowered[1:].lstrip("-־") in HEBREW_DIGITS:
        return HEBREW_DIGITS[lowered[1:].lstrip("-־")], False
    if lowered in HEBREW_DIGITS:
        return HEBREW_DIGITS[lowered], False
    digits = ""
    parts = lowered.split("-")
    for position, part in enumerate(parts):
        after_tens = position > 0 and parts[position - 1] in ENGLISH_TENS
        if part in ENGLISH_DIGITS and not (after_tens and part in {"o", "oh", "zero", "nought"}):
            digits += ENGLISH_DIGITS[part]
        elif part in ENGLISH_TEENS and not after_tens:
            digits += ENGLISH_TEENS[part]
        elif part in ENGLISH_TENS and not after_tens:
            completed = position + 1 < len(parts) and parts[position + 1] in ENGLISH_DIGITS
            digits += ENGLISH_TENS[part] + ("" if completed else "0")
        else:
            return None
    return digits, parts[-1] in ENGLISH_TENS


def _is_date(numeral: str) -> bool:
    if _ISO_DATE.match(numeral):
        return True
    match = _DATE.match(numeral)
    if not match:
        return False
    first, second = int(match[1]), int(match[2])
    return min(first, second) >= 1 and (
        (first <= 12 and second <= 31) or (first <= 31 and second <= 12)
    )


def read(token: Token) -> Reading:
    core = token.core
    if not core:
        punctuation = token.text.strip()
        return Reading(Role.FILLER if set(punctuation) <= _JOINERS else Role.BREAK)
    lowered = core.lower()
    if lowered in FILLERS or set(core) <= _JOINERS:
        return Reading(Role.FILLER)
    if lowered in PLUS_WORDS:
        return Reading(Role.PLUS)
    if lowered in MULTIPLIERS:
        return Reading(Role.MULTIPLIER, times=MULTIPLIERS[lowered])
    said = spoken_digits(core)
    if said is not None:
        digits, bare_tens = said
        # "seventy, eight" is two numbers; "seventy eight" one.
        open_tens = bare_tens and token.core_end == len(token.text.rstrip())
        return Reading(Role.DIGITS, (digits,), spoken=True, open_tens=open_tens)
    if mixed := _mixed_digits(core):
        return mixed
    if iban_start := _IBAN_START.match(core):
        digits = re.sub(r"\D", "", iban_start["digits"] or "")
        return Reading(Role.LETTERS, (digits,) if digits else (), letters=iban_start[1])
    if spelled := _SPELLED_LETTER.match(core):
        return Reading(Role.LETTERS, letters=spelled["letter"])
    return _read_numeral(core)


def _mixed_digits(core: str) -> Reading | None:
    """Numerals and digit words joined by hyphens: "five-4-3", "054-שבע"."""
    parts = re.split(r"[-–־]", core)
    if len(parts) < 2 or all(part.isdigit() for part in parts):
        return None  # a numeral is read as one, where dates and prefixes are told apart
    groups = []
    for part in parts:
        said = None if part.isdigit() else spoken_digits(part)
        if said is None and not part.isdigit():
            return None
        groups.append(said[0] if said else part)
    return Reading(Role.DIGITS, tuple(groups), spoken=True)


def _read_numeral(core: str) -> Reading:
    joins = True
    if prefix := _HEBREW_PREFIX.match(core):
        joins = prefix["prefix"] == "ו"
        core = core[prefix.end() :]
    currency = core[:1] in CURRENCY_SIGNS or core[-1:] in CURRENCY_SIGNS
    core = core.strip(CURRENCY_SIGNS)
    plus = core.startswith(("+", "(+"))
    numeral = core.replace("+", "", 1) if plus else core
    if _is_date(numeral):
        return Reading(Role.BREAK)
    if _NUMERAL.match(continued := numeral.lstrip(_SEPARATORS)):
        numeral = continued  # ".523881640": the separator after the previous word's digit
    if not _NUMERAL.match(numeral):
        return _glued(numeral)
    groups = tuple(re.findall(r"\d+", numeral))
    return Reading(Role.DIGITS, groups, joins, plus, currency)


def _glued(core: str) -> Reading:
    """A long number glued to other text ("Phone:054-765-4321", "ID#123456782") is a run of
    its own; shorter ones ("5pm", "12th", "10:30") are words."""
    long_numbers = [
        number
        for number in _GLUED_NUMBER.findall(core)
        if len(re.sub(r"\D", "", number)) >= MIN_LONG_RUN
    ]
    if not long_numbers:
        return Reading(Role.BREAK)
    groups = tuple(group for number in long_numbers for group in re.findall(r"\d+", number))
    return Reading(Role.DIGITS, groups, joins=False)


@dataclass(frozen=True)
class Group:
    """Digits written or said as one piece, and the token they came from."""

    digits: str
    token: int
    spoken: bool = False


@dataclass(frozen=True)
class DigitRun:
    """Digits said together, in groups, and the "+" or an IBAN's letters said just before them
    (`lead_token`: where they were)."""

    groups: tuple[Group, ...]
    lead_token: int | None = None
    plus: bool = False
    letters: str = ""
    currency: bool = False

    @property
    def digits(self) -> str:
        return "".join(group.digits for group in self.groups)

    @property
    def sources(self) -> tuple[int, ...]:
        """The token each digit came from."""
        return tuple(group.token for group in self.groups for _ in group.digits)

    @property
    def first_token(self) -> int:
        return self.groups[0].token

    @property
    def last_token(self) -> int:
        return self.groups[-1].token


class _RunBuilder:
    def __init__(self) -> None:
        self.runs: list[DigitRun] = []
        self.groups: list[Group] = []
        self.lead_token: int | None = None
        self.plus = False
        self.letters = ""
        self.currency = False
        self.open_tens_at: int | None = None

    def close(self) -> None:
        if self.groups:
            self.runs.append(
                DigitRun(
                    tuple(self.groups), self.lead_token, self.plus, self.letters, self.currency
                )
            )
        self.groups = []
        self.open_tens_at = None

    def start(self, lead_token: int | None, plus: bool, letters: str) -> None:
        self.close()
        self.lead_token, self.plus, self.letters, self.currency = lead_token, plus, letters, False

    def add(self, index: int, reading: Reading) -> None:
        completes_tens = reading.spoken and len(reading.digits) == 1 and reading.digits != "0"
        if self.open_tens_at == index - 1 and completes_tens:
            tens = self.groups.pop()
            self.groups.append(Group(tens.digits[:-1], tens.token, spoken=True))
        self.groups.extend(
            Group(digits, index, reading.spoken) for digits in reading.groups if digits
        )
        self.currency = self.currency or reading.currency
        self.open_tens_at = index if reading.open_tens else None


def digit_runs(tokens: Sequence[Token]) -> list[DigitRun]:
    """The runs of digits said together, in order, however short."""
    readings = [read(token) for token in tokens]
    builder = _RunBuilder()
    # A "+" or an IBAN's letters just before digits: where the next run starts, what it carries.
    pending_start: int | None = None
    pending_plus = False
    pending_letters = ""
    for index, reading in enumerate(readings):
        if reading.role is Role.FILLER:
            continue
        if reading.role is Role.MULTIPLIER:
            reading = _multiplied(reading, _next_meaningful(readings, index + 1))
        if reading.role is Role.DIGITS:
            if pending_start is not None and (pending_plus or len(pending_letters) == 2):
                builder.start(pending_start, pending_plus, pending_letters)
            elif not builder.groups or not reading.joins or reading.plus:
                builder.start(None, reading.plus, "")
            builder.add(index, reading)
            pending_start, pending_plus, pending_letters = None, False, ""
            continue
        builder.close()
        if reading.role is Role.PLUS:
            pending_start, pending_plus, pending_letters = index, True, ""
        elif reading.role is Role.LETTERS:
            if len(reading.letters) == 1 and len(pending_letters) == 1:
                pending_letters += reading.letters  # spelled out: "I L"
            else:
                pending_start, pending_plus, pending_letters = index, False, reading.letters
            if reading.digits and len(pending_letters) == 2:
                builder.start(index, False, pending_letters)
                builder.add(index, reading)
                pending_start, pending_plus, pending_letters = None, False, ""
        else:
            pending_start, pending_plus, pending_letters = None, False, ""
    builder.close()
    return builder.runs


def _multiplied(multiplier: Reading, following: Reading | None) -> Reading:
    """ "double seven": the extra sevens come from "double"; a multiplier before anything but a
    digit ends a run."""
    if following is None or following.role is not Role.DIGITS or not following.digits:
        return Reading(Role.BREAK)
    repeated = following.digits[0] * (multiplier.times - 1)
    return Reading(Role.DIGITS, (repeated,), spoken=True)


def _next_meaningful(readings: Sequence[Reading], start: int) -> Reading | None:
    return next((r for r in readings[start:] if r.role is not Role.FILLER), None)


def entity_bounds(token: Token) -> tuple[int, int]:
    """Where in the token's text a redaction starts and ends: its core, less a Hebrew prefix
    before a numeral ("ל-052..." keeps "ל-")."""
    start, end = token.core_start, token.core_end
    if prefix := _HEBREW_PREFIX.match(token.text[start:end]):
        start += prefix.end()
    return start, end
