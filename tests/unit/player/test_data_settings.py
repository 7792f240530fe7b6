"""A business's data settings as a document (services/player/data_settings.py): which
documents are taken, and why each of the others is refused."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from services.player.data_settings import (
    DEFAULT_DATA_SETTINGS,
    DataSettings,
    RedactableKind,
    change_detail,
)
from shared.redaction.kinds import ALL_KINDS, EntityKind

KEEP: dict[str, Any] = {
    "audio_retention_days": None,
    "call_retention_days": None,
    "delete_from_twilio": False,
}


def document(**changes: Any) -> dict[str, Any]:
    return {"redact": ["card"], **KEEP, **changes}


@pytest.mark.parametrize(
    ("given", "taken"),
    [
        (document(), document()),
        (document(redact=["card", "phone", "email", "national_id", "iban"]), None),
        (document(redact=["iban", "phone", "card"]), document(redact=["card", "phone", "iban"])),
        (document(audio_retention_days=30, call_retention_days=365), None),
        (document(audio_retention_days=30, call_retention_days=30), None),
        (document(audio_retention_days=1), None),
        (document(audio_retention_days=36500, call_retention_days=36500), None),
    ],
)
def test_a_valid_document_is_taken(given: dict[str, Any], taken: dict[str, Any] | None) -> None:
    assert DataSettings.model_validate(given).model_dump() == (taken or given)


@pytest.mark.parametrize(
    ("given", "error_type", "location", "message"),
    [
        (document(redact=[]), "card_always_redacted", ("redact",), "card numbers are always"),
        (document(redact=["phone"]), "card_always_redacted", ("redact",), "must include"),
        (document(redact=["card", "number"]), "number_always_redacted", ("redact",), "not a"),
        (document(redact=["card", "passport"]), "literal_error", ("redact", 1), "'iban'"),
        (document(redact=["card", "CARD"]), "literal_error", ("redact", 1), "'card'"),
        (document(redact=["card", "phone", "phone"]), "duplicate_kinds", ("redact",), "phone"),
        (document(redact=["card", "card"]), "duplicate_kinds", ("redact",), "at most once"),
        (document(redact="card"), "list_type", ("redact",), "valid list"),
        (document(redact=None), "list_type", ("redact",), "valid list"),
        (document(audio_retention_days=0), "greater_than_equal", ("audio_retention_days",), "1"),
        (document(call_retention_days=-5), "greater_than_equal", ("call_retention_days",), "1"),
        (document(audio_retention_days=36501), "less_than_equal", ("audio_retention_days",), ""),
        (document(audio_retention_days="30"), "int_type", ("audio_retention_days",), "integer"),
        (document(audio_retention_days=30.0), "int_type", ("audio_retention_days",), "integer"),
        (document(audio_retention_days=True), "int_type", ("audio_retention_days",), "integer"),
        (
            document(audio_retention_days=90, call_retention_days=30),
            "call_retention_below_audio",
            ("call_retention_days",),
            "`call_retention_days` (30) is less than `audio_retention_days` (audio kept 90 days)",
        ),
        (
            document(call_retention_days=30),
            "call_retention_below_audio",
            ("call_retention_days",),
            "(audio kept for good)",
        ),
        (document(colour="blue"), "extra_forbidden", ("colour",), "not permitted"),
        (
            {"redact": ["card"], "audio_retention_days": 3, "delete_from_twilio": False},
            "missing",
            ("call_retention_days",),
            "",
        ),
        (document(delete_from_twilio=None), "bool_type", ("delete_from_twilio",), "boolean"),
        (
            {"redact": ["card"], "audio_retention_days": None, "call_retention_days": None},
            "missing",
            ("delete_from_twilio",),
            "required",
        ),
        (
            {**KEEP, "redact": ["card"], "delete_from_twilio": "yes"},
            "bool_type",
            ("delete_from_twilio",),
            "boolean",
        ),
        (
            {**KEEP, "redact": ["card"], "delete_from_twilio": 1},
            "bool_type",
            ("delete_from_twilio",),
            "boolean",
        ),
        ({**KEEP}, "missing", ("redact",), "required"),
    ],
)
def test_an_invalid_document_is_refused_with_its_reason(
    given: dict[str, Any], error_type: str, location: tuple[str | int, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        DataSettings.model_validate(given)
    errors = refused.value.errors()
    assert [(e["type"], e["loc"]) for e in errors] == [(error_type, location)]
    assert message in errors[0]["msg"]


def test_a_retention_refused_for_its_own_reason_is_not_compared() -> None:
    with pytest.raises(ValidationError) as refused:
        DataSettings.model_validate(document(audio_retention_days=0, call_retention_days=1))
    assert [e["type"] for e in refused.value.errors()] == ["greater_than_equal"]


def test_the_defaults_redact_cards_and_keep_everything() -> None:
    assert DEFAULT_DATA_SETTINGS.model_dump() == document()
    assert DEFAULT_DATA_SETTINGS.redacted == {EntityKind.CARD, EntityKind.NUMBER}


def test_every_kind_but_number_is_a_choice() -> None:
    assert {EntityKind(kind) for kind in get_args(RedactableKind)} == ALL_KINDS - {
        EntityKind.NUMBER
    }


def test_what_is_redacted_is_the_choice_cards_and_long_numbers() -> None:
    chosen = DataSettings.model_validate(document(redact=["email", "card"]))
    assert chosen.redacted == {EntityKind.CARD, EntityKind.EMAIL, EntityKind.NUMBER}


def test_a_change_says_what_changed_for_a_call_and_whether_its_redaction_follows() -> None:
    before = DataSettings.model_validate(document(audio_retention_days=30))
    after = DataSettings.model_validate(
        document(redact=["card", "phone"], call_retention_days=90, audio_retention_days=30)
    )
    assert change_detail(before, after, redaction_applies=True) == (
        "data settings changed: redacting card, phone (was card; applies to this call); "
        "call kept 90 days (was until deleted)"
    )
    assert change_detail(before, after, redaction_applies=False) == (
        "data settings changed: redacting card, phone (was card; not to this call, whose "
        "recording was fetched under the earlier choice); call kept 90 days (was until deleted)"
    )
    shorter = DataSettings.model_validate(document(audio_retention_days=7))
    assert change_detail(before, shorter, redaction_applies=True) == (
        "data settings changed: audio kept 7 days (was 30 days)"
    )


def test_a_change_of_nothing_that_happens_to_a_call_leaves_no_line() -> None:
    before = DataSettings.model_validate(document())
    assert change_detail(before, before, redaction_applies=True) is None
    twilio = DataSettings.model_validate(document(delete_from_twilio=True))
    assert change_detail(before, twilio, redaction_applies=True) is None
