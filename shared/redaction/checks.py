"""The checks that name a run of digits. Each is the published check of its kind; a run that
passes none is still redacted (as `number`), so a check only names, never clears."""

from __future__ import annotations

import phonenumbers

from shared.redaction.kinds import EntityKind

CARD_LENGTHS = range(13, 20)
PHONE_LENGTHS = range(9, 16)  # 03-1234567 to E.164's fifteen
IBAN_LENGTHS = range(15, 35)  # Norway's to the longest allowed
NATIONAL_ID_LENGTH = 9
DEFAULT_REGION = "IL"


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def card_valid(digits: str) -> bool:
    return len(digits) in CARD_LENGTHS and luhn_valid(digits)


def israeli_id_valid(digits: str) -> bool:
    """Teudat zehut: nine digits (shorter ones padded with leading zeros), the last a check
    digit: weights 1, 2, 1, 2, ... from the left, digit sums of the products, total % 10 == 0.
    On nine digits that is Luhn's check."""
    return 0 < len(digits) <= NATIONAL_ID_LENGTH and luhn_valid(digits.zfill(NATIONAL_ID_LENGTH))


def iban_valid(letters: str, digits: str) -> bool:
    """ISO 13616: country code, two check digits, then the account (digits only here, as
    Israel's are); moved to the end with letters as 10..35, the number is 1 mod 97."""
    iban = letters.upper() + digits
    if len(letters) != 2 or not letters.isalpha() or len(iban) not in IBAN_LENGTHS:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def phone_valid(digits: str, plus: bool) -> bool:
    """A number `phonenumbers` finds valid: international when said with "+" (or written
    00... or 972...), else Israeli with its trunk 0 (05x-xxxxxxx) or a 1-800 style number.
    Without the trunk 0 an eight-digit run would pass as a local number far too often."""
    if len(digits) not in PHONE_LENGTHS:
        return False
    if plus:
        candidate = "+" + digits
    elif digits.startswith("00"):
        candidate = "+" + digits[2:]
    elif digits.startswith("972"):
        candidate = "+" + digits
    elif digits.startswith(("0", "1")):
        candidate = digits
    else:
        return False
    try:
        number = phonenumbers.parse(candidate, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def name_digits(digits: str, plus: bool = False, letters: str = "") -> EntityKind | None:
    """The kind a run of digits is, by the first check it passes; None when none.

    A "+" before it makes it a phone number before a card (any run of card length passes Luhn
    one time in ten); a phone number before an ID, since 03-1234567 may pass the ID check too.
    """
    if letters and iban_valid(letters, digits):
        return EntityKind.IBAN
    if plus:
        return EntityKind.PHONE if phone_valid(digits, plus=True) else None
    if card_valid(digits):
        return EntityKind.CARD
    if phone_valid(digits, plus=False):
        return EntityKind.PHONE
    if len(digits) >= 7 and israeli_id_valid(digits):
        return EntityKind.NATIONAL_ID
    return None
