"""Downloader core: the media URL, the meaning of provider answers, what the stage takes."""

from __future__ import annotations

import uuid

import pytest
from tenacity import RetryCallState

from services.downloader.core import MEDIA_FORMATS, FetchVerdict, media_url, verdict, wants
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


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        (200, FetchVerdict.OK),
        (206, FetchVerdict.OK),
        (404, FetchVerdict.NOT_READY),
        (408, FetchVerdict.RETRY),
        (429, FetchVerdict.RETRY),
        (500, FetchVerdict.RETRY),
        (502, FetchVerdict.RETRY),
        (503, FetchVerdict.RETRY),
        (504, FetchVerdict.RETRY),
        (400, FetchVerdict.GIVE_UP),
        (401, FetchVerdict.GIVE_UP),
        (403, FetchVerdict.GIVE_UP),
        (410, FetchVerdict.GIVE_UP),
    ],
)
def test_verdict(status_code: int, expected: FetchVerdict) -> None:
    assert verdict(status_code) is expected


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
