"""The retention core on a table: which calls' audio and which whole calls are due, from the
business's settings, the call's creation time and the sweep's time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.player.data_settings import DataSettings
from services.player.retention import (
    CallAge,
    Cutoffs,
    Decision,
    DeleteCall,
    ExpireAudio,
    cutoffs,
    decide,
)

AS_OF = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def keeping(audio: int | None, calls: int | None) -> DataSettings:
    return DataSettings(
        redact=["card"],
        audio_retention_days=audio,
        call_retention_days=calls,
        delete_from_twilio=False,
    )


def call(age: timedelta, audio_expired: bool = False) -> CallAge:
    return CallAge("CA1", "acme", AS_OF - age, audio_expired)


AUDIO = ExpireAudio("CA1", "older than the audio retention (30 days)")
WHOLE = DeleteCall("CA1", "older than the call retention (90 days)")


@pytest.mark.parametrize(
    ("settings", "age", "audio_expired", "expected"),
    [
        # audio due, the call not yet
        (keeping(30, 90), 31 * DAY, False, AUDIO),
        (keeping(30, None), 400 * DAY, False, ExpireAudio("CA1", AUDIO.reason)),
        # the audio of a call not old enough stays
        (keeping(30, 90), 29 * DAY, False, None),
        # boundaries: exactly the retention is not older than it; a second more is
        (keeping(30, 90), 30 * DAY, False, None),
        (keeping(30, 90), 30 * DAY + SECOND, False, AUDIO),
        (keeping(30, 90), 90 * DAY, True, None),
        (keeping(30, 90), 90 * DAY + SECOND, True, WHOLE),
        # audio expired already: nothing more until the call is due
        (keeping(30, 90), 60 * DAY, True, None),
        # the whole call due: deleted, whether its audio went already or not
        (keeping(30, 90), 91 * DAY, True, WHOLE),
        (keeping(30, 90), 91 * DAY, False, WHOLE),
        (keeping(90, 90), 91 * DAY, False, WHOLE),
        # null = kept
        (keeping(None, None), 10_000 * DAY, False, None),
        # a call from the future (clocks apart) is not due
        (keeping(1, 1), -DAY, False, None),
    ],
)
def test_what_is_due(
    settings: DataSettings, age: timedelta, audio_expired: bool, expected: Decision | None
) -> None:
    assert decide(call(age, audio_expired), settings, AS_OF) == expected


def test_the_cutoffs_are_the_retentions_back_from_the_sweep_s_time() -> None:
    assert cutoffs(keeping(30, 90), AS_OF) == Cutoffs(AS_OF - 30 * DAY, AS_OF - 90 * DAY)
    assert cutoffs(keeping(30, None), AS_OF) == Cutoffs(AS_OF - 30 * DAY, None)
    assert not cutoffs(keeping(None, None), AS_OF).any
    assert cutoffs(keeping(7, None), AS_OF).any


def test_a_later_sweep_finds_more_due() -> None:
    young = call(10 * DAY)
    settings = keeping(30, 90)
    assert decide(young, settings, AS_OF) is None
    assert decide(young, settings, AS_OF + 21 * DAY) == AUDIO
    assert decide(call(10 * DAY, audio_expired=True), settings, AS_OF + 81 * DAY) == WHOLE
