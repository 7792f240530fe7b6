"""The downloader's pure rules: the media URL, the allowed origins, object keys, Retry-After,
the meaning of provider answers, what the stage takes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from tenacity import RetryCallState

from services.downloader.core import (
    MAX_REDIRECTS,
    MAX_RETRY_AFTER_SECONDS,
    MEDIA_FORMATS,
    NOT_READY_WAIT_SECONDS,
    Deleted,
    Fetch,
    FetchVerdict,
    Follow,
    LeaveThere,
    Manifest,
    Store,
    delete_answer,
    deleted_call,
    manifest_key,
    media_answer,
    media_url,
    object_key,
    parse_origins,
    redact,
    resource_url,
    retry_after_seconds,
    size_allowed,
    source,
    url_allowed,
    verdict,
    wants,
)
from shared.decisions import Discard, GiveUp, Retry
from shared.redaction.kinds import EntityKind
from shared.retry import RetryLater, retrying
from shared.storage import call_prefixes
from tests.support import events as factories

BASE = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"


@pytest.mark.parametrize("suffix", ["", ".json", ".wav", ".mp3"])
@pytest.mark.parametrize("media_format", ["wav", "mp3"])
def test_media_url_replaces_the_extension_with_the_format(suffix: str, media_format: str) -> None:
    assert media_url(BASE + suffix, media_format) == f"{BASE}.{media_format}"


@pytest.mark.parametrize("suffix", ["", ".json", ".wav", ".mp3"])
def test_recording_urls_become_their_resource_url(suffix: str) -> None:
    assert resource_url(BASE + suffix) == f"{BASE}.json"


def test_media_url_keeps_dots_elsewhere_in_the_url() -> None:
    url = "https://media.example.com/v2.1/Recordings/RE1"
    assert media_url(url + ".json", "wav") == url + ".wav"


def test_media_formats_have_audio_content_types() -> None:
    assert MEDIA_FORMATS["wav"] == "audio/wav"
    assert MEDIA_FORMATS["mp3"] == "audio/mpeg"


NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MEDIA = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1.wav"
ALLOWED = ("https://api.twilio.com", "https://*.twilio.com")


def test_origins_are_parsed_from_a_comma_separated_list() -> None:
    assert parse_origins("https://api.twilio.com, https://*.twilio.com/") == ALLOWED


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        (f"{BASE}.wav", True),
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
    assert url_allowed(url, ALLOWED) is allowed


def test_object_keys_are_deterministic_by_business_date_call_and_recording() -> None:
    key = object_key("acme", date(2026, 11, 24), "CA1", "RE1", "wav")
    assert key == "acme/2026-11-24/CA1/RE1.wav"
    assert manifest_key(key) == "acme/2026-11-24/CA1/RE1.wav.manifest.json"


def test_a_manifest_survives_its_round_trip() -> None:
    manifest = Manifest("k", 3, "ab", "audio/wav", BASE)
    assert Manifest.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("Tue, 24 Nov 2026 12:00:30 GMT", 30.0),
        ("Tue, 24 Nov 2026 11:00:00 GMT", 0.0),  # in the past: at once
        ("86400", MAX_RETRY_AFTER_SECONDS),
        ("soon", 0.0),  # unreadable: at once
        (None, 0.0),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date_and_bounded(
    header: str | None, seconds: float
) -> None:
    assert retry_after_seconds(header, NOW) == seconds


@pytest.mark.parametrize(
    ("status_code", "meaning"),
    [
        (200, FetchVerdict.OK),
        (302, FetchVerdict.REDIRECT),
        (404, FetchVerdict.NOT_READY),
        (429, FetchVerdict.RETRY),
        (503, FetchVerdict.RETRY),
        (401, FetchVerdict.GIVE_UP),
        (403, FetchVerdict.GIVE_UP),
    ],
)
def test_what_an_answer_of_the_provider_means(status_code: int, meaning: FetchVerdict) -> None:
    assert verdict(status_code) is meaning


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


@pytest.mark.parametrize(
    ("status", "wanted"), [("completed", True), ("absent", False), ("failed", False)]
)
def test_wants_only_completed_recordings(status: str, wanted: bool) -> None:
    assert wants(factories.recording_completed(status=status)) is wanted


def test_wants_ignores_other_event_types() -> None:
    assert wants(factories.call_started()) is False
    assert wants(factories.recording_downloaded()) is False


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


def test_a_call_carries_the_kinds_its_business_redacts_and_always_cards_and_numbers() -> None:
    assert redact(frozenset()) == [EntityKind.CARD, EntityKind.NUMBER]
    assert redact(frozenset({EntityKind.EMAIL, EntityKind.CARD})) == [
        EntityKind.CARD,
        EntityKind.EMAIL,
        EntityKind.NUMBER,
    ]


def test_a_deleted_calls_recording_is_not_fetched_and_one_archived_meanwhile_is_deleted() -> None:
    key = object_key("acme", date(2026, 11, 24), "CA1", "RE1", "wav")
    assert deleted_call(False) is None
    assert deleted_call(False, key) is None
    assert deleted_call(True) == Discard("the call was deleted: nothing of its work is published")
    meanwhile = deleted_call(True, key)
    assert meanwhile is not None and meanwhile.objects == (key, manifest_key(key))


def test_every_archived_object_lies_under_a_folder_a_deletion_empties() -> None:
    key = object_key("acme", date(2026, 11, 24), "CA1", "RE1", "wav")
    folders = call_prefixes("acme", "CA1", [date(2026, 11, 24)])
    assert [f for f in folders if key.startswith(f) and manifest_key(key).startswith(f)]
