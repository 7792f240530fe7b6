"""Downloader core: the media URL, the meaning of provider answers, what the stage takes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from tenacity import RetryCallState

from services.downloader.core import (
    MAX_REDIRECTS,
    MEDIA_FORMATS,
    NOT_READY_WAIT_SECONDS,
    Deleted,
    Fetch,
    Follow,
    LeaveThere,
    Store,
    delete_answer,
    media_answer,
    media_url,
    size_allowed,
    source,
    wants,
)
from shared.decisions import GiveUp, Retry
from shared.events import CallStarted, RecordingCompleted, RecordingDownloaded
from shared.retry import RetryLater, retrying

BASE = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"


@pytest.mark.parametrize("suffix", ["", ".json", ".wav", ".mp3"])
@pytest.mark.parametrize("media_format", ["wav", "mp3"])
def test_media_url_replaces_the_extension_with_the_format(suffix: str, media_format: str) -> None:
    assert media_url(BASE + suffix, media_format) == f"{BASE}.{media_format}"


def test_media_url_keeps_dots_elsewhere_in_the_url() -> None:
    url = "https://media.example.com/v2.1/Recordings/RE1"
    assert media_url(url + ".json", "wav") == url + ".wav"


def test_media_formats_have_audio_content_types() -> None:
    assert MEDIA_FORMATS["wav"] == "audio/wav"
    assert MEDIA_FORMATS["mp3"] == "audio/mpeg"


NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MEDIA = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1.wav"
ALLOWED = ("https://api.twilio.com", "https://*.twilio.com")


def answer(
    status_code: int,
    location: str | None = None,
    retry_after: str | None = None,
    redirects: int = 0,
) -> object:
    return media_answer(status_code, MEDIA, location, retry_after, ALLOWED, redirects, NOW)


@pytest.mark.parametrize("status_code", [200, 206])
def test_an_answer_with_the_media_is_stored(status_code: int) -> None:
    assert answer(status_code) == Store()


def test_a_redirect_to_an_allowed_origin_is_followed() -> None:
    target = "https://media.twilio.com/RE1.wav"
    assert answer(302, location=target) == Follow(target)


@pytest.mark.parametrize("location", ["https://evil.example/RE1.wav", None])
def test_a_redirect_elsewhere_or_nowhere_gives_up(location: str | None) -> None:
    decision = answer(302, location=location)
    assert isinstance(decision, GiveUp)
    assert "disallowed URL" in decision.reason


def test_redirects_are_followed_five_times_then_given_up() -> None:
    target = "https://media.twilio.com/RE1.wav"
    assert answer(307, location=target, redirects=MAX_REDIRECTS - 1) == Follow(target)
    assert isinstance(answer(307, location=target, redirects=MAX_REDIRECTS), GiveUp)


def test_media_not_there_yet_is_retried_after_a_moment() -> None:
    assert answer(404) == Retry(f"media not ready yet (404) at {MEDIA}", NOT_READY_WAIT_SECONDS)


@pytest.mark.parametrize(
    ("status_code", "retry_after", "after_seconds"),
    [
        (408, None, 0.0),
        (429, "7", 7.0),
        (500, None, 0.0),
        (502, None, 0.0),
        (503, "2", 2.0),
        (504, None, 0.0),
    ],
)
def test_transient_answers_are_retried_no_sooner_than_asked(
    status_code: int, retry_after: str | None, after_seconds: float
) -> None:
    decision = answer(status_code, retry_after=retry_after)
    assert decision == Retry(f"provider answered {status_code} for {MEDIA}", after_seconds)


@pytest.mark.parametrize("status_code", [400, 401, 403, 410])
def test_refusals_give_up(status_code: int) -> None:
    assert answer(status_code) == GiveUp(f"provider answered {status_code} for {MEDIA}")


def test_a_recording_url_off_the_allowed_origins_gives_up() -> None:
    assert isinstance(source("https://evil.example/RE1", "wav", ALLOWED), GiveUp)
    assert source(MEDIA, "mp3", ALLOWED) == Fetch(MEDIA.removesuffix(".wav") + ".mp3")


def test_a_recording_over_the_limit_gives_up() -> None:
    assert size_allowed(100, 100) is None
    assert isinstance(size_allowed(101, 100), GiveUp)


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        (204, Deleted()),
        (404, Deleted()),
        (503, Retry(f"provider answered 503 to the delete of {MEDIA}", 0.0)),
    ],
)
def test_what_an_answer_to_the_delete_means(status_code: int, expected: object) -> None:
    assert delete_answer(status_code, MEDIA, None, NOW) == expected


def test_a_refused_delete_leaves_the_recording_there() -> None:
    assert isinstance(delete_answer(403, MEDIA, None, NOW), LeaveThere)


ENVELOPE = {
    "call_sid": "CA1",
    "business_id": "biz-1",
    "correlation_id": uuid.uuid4().hex,
}


@pytest.mark.parametrize(
    ("status", "wanted"), [("completed", True), ("absent", False), ("failed", False)]
)
def test_wants_only_completed_recordings(status: str, wanted: bool) -> None:
    event = RecordingCompleted(
        **ENVELOPE,
        recording_sid="RE1",
        recording_status=status,
        recording_url=BASE if status == "completed" else "",
    )
    assert wants(event) is wanted


def test_wants_ignores_other_event_types() -> None:
    started = CallStarted(**ENVELOPE, account_sid="AC1")
    downloaded = RecordingDownloaded(
        **ENVELOPE,
        recording_sid="RE1",
        object_key="biz-1/CA1/RE1.wav",
        content_type="audio/wav",
        size_bytes=10,
        sha256="0" * 64,
    )
    assert wants(started) is False
    assert wants(downloaded) is False


@pytest.mark.parametrize("asked", [1.0, 7.0])
async def test_the_stage_waits_at_least_what_the_handler_asks_above_its_own_backoff(
    asked: float,
) -> None:
    """The stage's backoff starts at a tenth of a second; a RetryLater (a 404 from Twilio,
    a Retry-After) sets the floor of the wait before the next try."""
    waits: list[float] = []

    async def no_retry_report(_state: RetryCallState) -> None:
        return None

    async def record_wait(seconds: float) -> None:
        waits.append(seconds)

    policy = retrying(4, 0.1, 2.0, no_retry_report).copy(sleep=record_wait)
    tries = 0
    with pytest.raises(RetryLater):
        async for attempt in policy:
            with attempt:
                tries += 1
                raise RetryLater("media not ready yet (404)", asked)
    assert tries == 4
    assert len(waits) == 3
    assert min(waits) >= asked, waits
