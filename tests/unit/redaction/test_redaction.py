"""Redaction of what callers read out, as Whisper writes it: a table of English and Hebrew
cases (what is redacted, what stays), the same table on transcript words, and properties on
generated runs of digits."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.redaction.apply import Marker, redact_text, redact_words, select
from shared.redaction.detect import find_in_text, find_in_words
from shared.redaction.kinds import ALL_KINDS, EntityKind
from shared.redaction.spoken import ENGLISH_DIGITS, HEBREW_DIGITS, digit_runs, tokens_of_text
from shared.transcript import Word

CARD = "4580 1234 5678 9015"  # Luhn-valid

REDACTED = [
    # Cards, as Whisper writes them
    ("my card is 4580 1234 5678 9015 thanks", "my card is [card] thanks"),
    ("it's 4,580, 123, 456, 789, 015.", "it's [card]."),
    ("4580123456789015", "[card]"),
    ("four five eight zero, one two three four, five six seven eight, nine zero one five",
     "[card]"),
    ("4580, one two three four, 5678 nine oh one five", "[card]"),
    ("4580 1234 5678 9015, 123", "[card]"),
    ("כרטיס 4580-1234-5678-9015 בבקשה", "כרטיס [card] בבקשה"),
    # A card with a digit dropped fails Luhn and is still redacted
    ("my card is 4580 1234 678 9015 thanks", "my card is [number] thanks"),
    ("four five eight zero one two three four six seven eight nine zero one five", "[number]"),
    # A card misheard: no stretch of it is named a card by chance
    ("four, five, eight, zero, one, two, three, four, five, six, seven, eight, nine, zero, "
     "one, two", "[number]"),
    # Phone numbers
    ("call me at 054-765-4321.", "call me at [phone]."),
    ("+972 54 765 4321", "[phone]"),
    ("972-54-765-4321", "[phone]"),
    ("oh five four, seven six five, four three two one", "[phone]"),
    ("oh five four, seven six five, double four, three two", "[phone]"),
    ("plus nine seven two, five four, seven six five, four three two one", "[phone]"),
    ("054, uh, 765, um, 4321", "[phone]"),
    # A word may begin with the separator Whisper wrote after the previous digit
    ("call me on 0 .523881640.", "call me on [phone]."),
    ("054 -765 -4321", "[phone]"),
    ("the office is 03-123-4567", "the office is [phone]"),
    ("my US number is +1 415 555 2671", "my US number is [phone]"),
    ("054-765-4321, 052-456-7890", "[phone], [phone]"),
    ("Herzl 15, 054-765-4321", "Herzl [phone]"),
    ("המספר שלי אפס חמש ארבע, שבע שש חמש, ארבע שלוש שתיים ואחת תודה", "המספר שלי [phone] תודה"),
    ("תתקשר ל-054-7654321 בבקשה", "תתקשר ל-[phone] בבקשה"),
    ("אפס חמש ארבע 765 ארבע, אה, שלוש שתיים אחת", "[phone]"),
    # Israeli ID numbers
    ("תעודת זהות 123456782", "תעודת זהות [national_id]"),
    ("my ID is one two three, four five six, seven eight two", "my ID is [national_id]"),
    ("ID 31415920", "ID [national_id]"),
    # IBANs
    ("IBAN IL62 0108 0000 0009 9999 999.", "IBAN [iban]."),
    ("I L six two, zero one zero eight, 0000 0009 9999 999", "[iban]"),
    # E-mail addresses
    ("write to john.smith@gmail.com.", "write to [email]."),
    ("my email is john dot smith at gmail dot com thanks", "my email is [email] thanks"),
    ("dana underscore levi at walla dot co dot il", "[email]"),
    ("john one two three at gmail dot com", "[email]"),
    ("המייל יוסי נקודה כהן שטרודל gmail נקודה com", "המייל [email]"),
    # A long number no check names
    ("my account number is 12345678901", "my account number is [number]"),
    ("4,111, 111, 1111", "[number]"),
    # Glued to a label, as a summary may write it
    ("Phone:054-765-4321, ID#123456782", "[phone], [national_id]"),
    ("טלפון:0547654321", "[phone]"),
    ("reference 7 7 7, 1 2 3 4", "reference [number]"),
]  # fmt: skip

STAYS = [
    # Prices
    "it costs $1,250 plus VAT",
    "that's 1,250 shekels",
    'אלף מאתיים וחמישים ש"ח',
    "₪1,250,000 for the apartment",
    "the apartment is 1,250,000 shekels",
    'המחיר 1,250,000 ש"ח',
    "between 100, 200 or 300 shekels",
    # Times
    "at 10:30",
    "half past four",
    "between 9:00 and 17:30",
    "בשעה 10:30",
    # Dates and years
    "12/05/2024",
    "12.05.2024 at 10:30",
    "May 12th 2024",
    "on May 12, 2024",
    "on 2024-05-12 at 10:30",
    "from 10:30-12:30 or 5pm",
    "ב-12.05.2024",
    "since 2019",
    "2019, 2020, 2021",
    "from 2019-2021",
    # Street numbers
    "15 Herzl Street",
    "רחוב הרצל 15",
    "Herzl 15, apartment 4, floor 3",
    # Quantities and short numbers
    "we need 250 units, 30 boxes and 4 technicians",
    "3 חדרים ו-2 מקלחות",
    "extension 204",
    "four five",
    "one or two",
    "I'm 45, my son is 12",
    "it is 0 .5 percent",
    "minus 3 -4 degrees",
    # A website is not a mailbox
    "find us at callpipe dot com",
]


def words_of(text: str) -> list[Word]:
    """Words as Whisper gives them: a leading space, punctuation kept."""
    return [
        Word(start=index * 0.5, end=index * 0.5 + 0.4, text=" " + piece, probability=0.9)
        for index, piece in enumerate(text.split())
    ]


def spoken(words: list[Word | Marker]) -> str:
    return "".join(word.text for word in words).strip()


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_redacted_in_text(text: str, expected: str) -> None:
    redacted, counts = redact_text(text, ALL_KINDS)
    assert redacted == expected
    assert sum(counts.values()) == len(re.findall(r"\[[a-z_]+\]", expected))


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_redacted_in_words(text: str, expected: str) -> None:
    words = words_of(text)
    spans = find_in_words(words)
    redacted = redact_words(words, spans)
    assert spoken(redacted) == expected
    for span, word in zip(spans, [w for w in redacted if isinstance(w, Marker)], strict=True):
        assert (word.start, word.end) == (words[span.first_word].start, words[span.last_word].end)


@pytest.mark.parametrize("text", STAYS)
def test_stays(text: str) -> None:
    assert find_in_text(text) == []
    assert find_in_words(words_of(text)) == []


def test_cards_and_numbers_are_redacted_whatever_the_business_chose() -> None:
    text = f"card {CARD}, phone 054-765-4321, account 12345678901, mail a@b.com"
    redacted, counts = redact_text(text, frozenset())
    assert redacted == "card [card], phone 054-765-4321, account [number], mail a@b.com"
    assert counts == {EntityKind.CARD: 1, EntityKind.NUMBER: 1}
    redacted, _ = redact_text(text, frozenset({EntityKind.PHONE}))
    assert redacted == "card [card], phone [phone], account [number], mail a@b.com"


def test_the_spans_kept_are_the_kinds_chosen_and_always_cards_and_numbers() -> None:
    words = words_of(f"card {CARD} and phone 054-765-4321 and mail a@b.com")
    spans = select(find_in_words(words), frozenset({EntityKind.PHONE}))
    assert [(s.kind, s.start, s.end) for s in spans] == [
        (EntityKind.CARD, 0.5, 2.4),
        (EntityKind.PHONE, 3.5, 3.9),
    ]
    assert [s.kind for s in select(find_in_words(words), frozenset())] == [EntityKind.CARD]


def test_each_digit_keeps_the_word_it_came_from() -> None:
    (run,) = digit_runs(tokens_of_text("oh five, uh, double seven 12 ושתיים"))
    assert run.digits == "0577122"
    assert run.sources == (0, 1, 3, 4, 5, 5, 6)


# Generated runs: any digits of card, phone or ID length, written as Whisper might.

SPOKEN_ENGLISH = {digit: word for word, digit in ENGLISH_DIGITS.items() if word != "o"}
SPOKEN_HEBREW = {digit: word for word, digit in HEBREW_DIGITS.items()}


@st.composite
def said_digits(draw: st.DrawFn) -> tuple[str, str]:
    """(digits, how they were written): groups of numerals or digit words, English or Hebrew,
    separated by spaces, commas or fillers."""
    digits = draw(st.text(alphabet="0123456789", min_size=7, max_size=19))
    pieces = []
    position = 0
    while position < len(digits):
        size = draw(st.integers(1, 5))
        group = digits[position : position + size]
        position += size
        style = draw(st.sampled_from(["numeral", "english", "hebrew"]))
        if style == "numeral":
            pieces.append(group)
        else:
            words = SPOKEN_ENGLISH if style == "english" else SPOKEN_HEBREW
            pieces.append(" ".join(words[digit] for digit in group))
    separators = st.sampled_from([" ", ", ", " uh ", ", אה, ", "-"])
    written = pieces[0]
    for piece in pieces[1:]:
        written += draw(separators) + piece
    return digits, written


def said_in_a_sentence(said: tuple[str, str], english: bool) -> str:
    digits, written = said
    # written as a date: day-month-year, or year-month-day
    assume(not re.search(r"\d{1,2}-\d{1,2}-\d{2,4}|\d{4}-\d{1,2}-\d{1,2}", written))
    (run,) = digit_runs(tokens_of_text(written))
    assume(not all(len(g.digits) == 4 and 1900 <= int(g.digits) < 2100 for g in run.groups))
    assert run.digits == digits
    return f"my number is {written} thanks" if english else f"המספר שלי {written} תודה"


def has_digits(text: str) -> bool:
    return bool(re.search(r"\d", text)) or any(
        word.strip(",") in (*ENGLISH_DIGITS, *HEBREW_DIGITS) for word in text.split()
    )


@given(said=said_digits(), english=st.booleans())
@settings(max_examples=300, deadline=None)
def test_a_long_run_never_stays_in_the_clear(said: tuple[str, str], english: bool) -> None:
    text = said_in_a_sentence(said, english)
    redacted, counts = redact_text(text, ALL_KINDS)
    markers = re.findall(r"\[[a-z_]+\]", redacted)
    assert markers
    assert sum(counts.values()) == len(markers)
    assert not has_digits(redacted)
    assert find_in_text(redacted) == []


@given(said=said_digits(), english=st.booleans())
@settings(max_examples=300, deadline=None)
def test_what_a_business_keeps_is_what_a_check_names(said: tuple[str, str], english: bool) -> None:
    """A business that redacts only what is always redacted keeps a phone, ID or IBAN number
    in the clear: nothing else."""
    text = said_in_a_sentence(said, english)
    redacted, _ = redact_text(text, frozenset())
    kept = {span.kind for span in find_in_text(text)} - {EntityKind.CARD, EntityKind.NUMBER}
    assert has_digits(redacted) == bool(kept)
