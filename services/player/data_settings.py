"""What a business chooses about the personal data of its calls: the kinds redacted from
transcripts and summaries, and how long audio and calls are kept. No I/O.

Card numbers and long runs of digits are redacted whatever a business chooses
(`shared.redaction.kinds.ALWAYS_REDACTED`): `card` must stay in the list, so that what a
business reads back is what happens, and `number` is not a choice at all.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from shared.redaction.kinds import EntityKind, redacted_kinds

RedactableKind = Literal["card", "phone", "email", "national_id", "iban"]
RETENTION_DAYS_MAX = 36_500  # a hundred years

RetentionDays = Annotated[int, Field(ge=1, le=RETENTION_DAYS_MAX)] | None


class DataSettings(BaseModel):
    """A business's data settings, the whole document: what `GET /api/settings` answers and
    `PUT /api/settings` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    redact: list[RedactableKind] = Field(
        description="The kinds of personal data replaced by a marker (`[phone]`) in "
        "transcripts, summaries and leads: `card` (always; it cannot be left out), `phone`, "
        "`email`, `national_id`, `iban`, each at most once; answered in that order. Runs of "
        "seven or more digits no check names are redacted as `number` whatever this says.",
        examples=[["card", "phone"]],
        json_schema_extra={"uniqueItems": True},
    )
    audio_retention_days: RetentionDays = Field(
        description="Days a call's audio is kept, 1 to 36500; null: kept until the call is "
        "deleted.",
        examples=[30],
    )
    call_retention_days: RetentionDays = Field(
        description="Days a call (its row, transcript and summary) is kept, 1 to 36500, and "
        "not less than `audio_retention_days`; null: kept until it is deleted.",
        examples=[365],
    )
    delete_from_twilio: bool = Field(
        description="Whether deleting a call (or the whole business) also deletes its "
        "recordings from Twilio. False: Twilio's copy is left as it is.",
        examples=[True],
    )

    @field_validator("redact", mode="before")
    @classmethod
    def _number_is_no_choice(cls, kinds: Any) -> Any:
        if isinstance(kinds, list) and EntityKind.NUMBER.value in kinds:
            raise PydanticCustomError(
                "number_always_redacted",
                "long runs of digits (`number`) are always redacted: it is not a choice",
            )
        return kinds

    @field_validator("redact")
    @classmethod
    def _cards_and_no_duplicates(cls, kinds: list[RedactableKind]) -> list[RedactableKind]:
        if EntityKind.CARD.value not in kinds:
            raise PydanticCustomError(
                "card_always_redacted",
                'card numbers are always redacted: `redact` must include "card"',
            )
        repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        if repeated:
            raise PydanticCustomError(
                "duplicate_kinds",
                "each kind at most once: {repeated} given more than once",
                {"repeated": ", ".join(repeated)},
            )
        return [kind for kind in get_args(RedactableKind) if kind in kinds]

    @field_validator("call_retention_days")
    @classmethod
    def _calls_outlive_their_audio(cls, call: int | None, info: ValidationInfo) -> int | None:
        if "audio_retention_days" not in info.data:  # refused already, for its own reason
            return call
        audio = info.data["audio_retention_days"]
        if call is not None and (audio is None or call < audio):
            kept = "kept for good" if audio is None else f"kept {audio} days"
            raise PydanticCustomError(
                "call_retention_below_audio",
                "calls cannot be kept for less time than their audio: `call_retention_days` "
                "({call}) is less than `audio_retention_days` (audio {kept})",
                {"call": call, "kept": kept},
            )
        return call

    @property
    def redacted(self) -> frozenset[EntityKind]:
        """Every kind redacted for the business: its choice, cards and long numbers."""
        return redacted_kinds(frozenset(EntityKind(kind) for kind in self.redact))


DEFAULT_DATA_SETTINGS = DataSettings(
    redact=["card"], audio_retention_days=None, call_retention_days=None, delete_from_twilio=False
)


def _kept(days: int | None) -> str:
    return "until deleted" if days is None else f"{days} days"


def change_detail(before: DataSettings, after: DataSettings, redaction_applies: bool) -> str | None:
    """The timeline line a change of the data settings leaves on a call still on its way:
    the redaction and retentions that changed, and whether the new redaction reaches this
    call (its recording not fetched yet: the choice travels with the recording, decision
    1202). None when neither changed: nothing different happens to the call."""
    changes = []
    if after.redact != before.redact:
        reach = (
            "applies to this call"
            if redaction_applies
            else "not to this call, whose recording was fetched under the earlier choice"
        )
        changes.append(
            f"redacting {', '.join(after.redact)} (was {', '.join(before.redact)}; {reach})"
        )
    if after.audio_retention_days != before.audio_retention_days:
        changes.append(
            f"audio kept {_kept(after.audio_retention_days)}"
            f" (was {_kept(before.audio_retention_days)})"
        )
    if after.call_retention_days != before.call_retention_days:
        changes.append(
            f"call kept {_kept(after.call_retention_days)}"
            f" (was {_kept(before.call_retention_days)})"
        )
    return f"data settings changed: {'; '.join(changes)}" if changes else None
