"""Which calls a business's retention settings make due, pure: the audio of a call older than
`audio_retention_days` is to be deleted (the call stays, marked), a call older than
`call_retention_days` is to be deleted whole. A call's age runs from its row's `created_at`
(the time of its first event). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.player.data_settings import DataSettings

AUDIO_EXPIRED = "expired by the business's retention policy"


@dataclass(frozen=True)
class Cutoffs:
    """Calls created before `audio_before` have their audio due, before `calls_before` are
    due whole; None: nothing is due for that reason."""

    audio_before: datetime | None
    calls_before: datetime | None

    @property
    def any(self) -> bool:
        return self.audio_before is not None or self.calls_before is not None


@dataclass(frozen=True)
class CallAge:
    """What the decision needs of a call."""

    call_sid: str
    business_id: str
    created_at: datetime
    audio_expired: bool


@dataclass(frozen=True)
class ExpireAudio:
    """Delete every audio object of the call; keep the call, marked expired."""

    call_sid: str
    reason: str


@dataclass(frozen=True)
class DeleteCall:
    """Delete the call whole, as `DELETE /api/calls/{sid}` does."""

    call_sid: str
    reason: str


Decision = ExpireAudio | DeleteCall


def cutoffs(settings: DataSettings, as_of: datetime) -> Cutoffs:
    """The creation times before which the business's calls are due at `as_of`."""

    def before(days: int | None) -> datetime | None:
        return None if days is None else as_of - timedelta(days=days)

    return Cutoffs(before(settings.audio_retention_days), before(settings.call_retention_days))


def decide(call: CallAge, settings: DataSettings, as_of: datetime) -> Decision | None:
    """What is due for `call` at `as_of`: the whole call, its audio, or nothing (kept, not
    old enough, or its audio expired already). A call due whole is deleted, audio and all."""
    due = cutoffs(settings, as_of)
    if due.calls_before is not None and call.created_at < due.calls_before:
        return DeleteCall(
            call.call_sid, f"older than the call retention ({settings.call_retention_days} days)"
        )
    if due.audio_before is not None and call.created_at < due.audio_before:
        if call.audio_expired:
            return None
        return ExpireAudio(
            call.call_sid,
            f"older than the audio retention ({settings.audio_retention_days} days)",
        )
    return None
