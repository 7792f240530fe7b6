"""The downloader's pure rules."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.downloader import core

TWILIO = core.parse_origins("https://api.twilio.com, https://*.twilio.com/")
RECORDING = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"


@pytest.mark.parametrize("given", [RECORDING, f"{RECORDING}.json", f"{RECORDING}.mp3"])
def test_recording_urls_become_media_urls_in_the_configured_format(given: str) -> None:
    assert core.media_url(given, "wav") == f"{RECORDING}.wav"
    assert core.media_url(given, "mp3") == f"{RECORDING}.mp3"
    assert core.resource_url(given) == f"{RECORDING}.json"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        (f"{RECORDING}.wav", True),
        ("https://API.twilio.com:443/x", True),
        ("https://media.twilio.com/x", True),
        ("http://api.twilio.com/x", False),  # not over HTTPS
        ("https://api.twilio.com:8443/x", False),
        ("https://twilio.com.evil.example/x", False),
        ("https://evil.example/api.twilio.com", False),
        ("https://user:pw@api.twilio.com/x", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("file:///etc/passwd", False),
        ("", False),
    ],
)
def test_only_the_providers_origins_are_allowed(url: str, allowed: bool) -> None:
    assert core.url_allowed(url, TWILIO) is allowed


def test_object_keys_are_deterministic_by_business_date_call_and_recording() -> None:
    key = core.object_key("acme", date(2026, 11, 24), "CA1", "RE1", "wav")
    assert key == "acme/2026-11-24/CA1/RE1.wav"
    assert core.manifest_key(key) == "acme/2026-11-24/CA1/RE1.wav.manifest.json"


NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("Tue, 24 Nov 2026 12:00:30 GMT", 30.0),
        ("Tue, 24 Nov 2026 11:00:00 GMT", 0.0),  # in the past: at once
        ("86400", core.MAX_RETRY_AFTER_SECONDS),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date_and_bounded(
    header: str | None, seconds: float | None
) -> None:
    assert core.retry_after_seconds(header, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, core.FetchVerdict.OK),
        (302, core.FetchVerdict.REDIRECT),
        (404, core.FetchVerdict.NOT_READY),
        (429, core.FetchVerdict.RETRY),
        (503, core.FetchVerdict.RETRY),
        (401, core.FetchVerdict.GIVE_UP),
        (403, core.FetchVerdict.GIVE_UP),
    ],
)
def test_what_an_answer_of_the_provider_means(status: int, verdict: core.FetchVerdict) -> None:
    assert core.verdict(status) is verdict


def test_a_manifest_survives_its_round_trip() -> None:
    manifest = core.Manifest("k", 3, "ab", "audio/wav", RECORDING)
    assert core.Manifest.from_json(manifest.to_json()) == manifest
