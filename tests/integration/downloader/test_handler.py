"""The download handler on its own, against the Twilio simulator and the real S3 server:
safety (allowed origins, redirects, size limit), multipart uploads, delete after archive."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import wave
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError

from callpipe.bootstrap import downloader_handler
from callpipe.twilio_simulator.samples import sample_path
from services.downloader.handler import DownloadHandler
from services.player.data_settings import DataSettings
from services.player.repository import CallRepository, migrate
from shared.db import create_engine
from shared.events import RecordingCompleted, RecordingDownloaded
from shared.redaction.kinds import EntityKind
from shared.retry import RetryLater, TerminalError
from shared.settings import Settings
from shared.storage import ObjectStore, call_prefixes
from shared.tombstones import delete_call_objects, tombstone_key
from tests.support.downloader import (
    MEDIA_ORIGIN_PORTS,
    MediaOrigin,
    add_recording,
    media_requests,
    recording_event,
    serving_media,
)


@pytest.fixture
async def handler_for(settings: Settings, store: ObjectStore) -> AsyncIterator[Any]:
    async with AsyncExitStack() as stack:

        async def build(**downloader: Any) -> DownloadHandler:
            return await downloader_handler(settings.updated(downloader=downloader), store, stack)

        yield build


async def test_a_forged_recording_url_is_never_fetched(handler_for: Any) -> None:
    handler = await handler_for()
    forged = recording_event(
        {"recording_sid": "RE" + "0" * 32, "recording_url": "http://169.254.169.254/latest"}
    )
    with pytest.raises(TerminalError, match="not on an allowed provider origin"):
        await handler(forged)


async def test_a_redirect_off_the_allowed_origins_is_not_followed(
    settings: Settings, handler_for: Any, store: ObjectStore
) -> None:
    handler = await handler_for()
    event = recording_event(add_recording(settings, redirect_to="http://127.0.0.2:9/steal"))
    with pytest.raises(TerminalError, match="redirected to a disallowed URL"):
        await handler(event)
    assert await store.keys(f"acme/{event.occurred_at.date().isoformat()}/{event.call_sid}") == []


async def test_a_redirect_within_the_allowed_origins_is_followed(
    settings: Settings, handler_for: Any, store: ObjectStore
) -> None:
    handler = await handler_for()
    target = add_recording(settings)
    event = recording_event(add_recording(settings, redirect_to=target["recording_url"] + ".wav"))
    [result] = await handler(event)
    assert isinstance(result, RecordingDownloaded)
    assert result.size_bytes > 0
    assert result.redact == [EntityKind.CARD, EntityKind.NUMBER]
    assert [r["status"] for r in media_requests(settings, target["recording_sid"])] == [200]


def _recording_at(origin: MediaOrigin, settings: Settings) -> dict[str, str]:
    recording_sid = "RE" + secrets.token_hex(16)
    path = f"/2010-04-01/Accounts/{settings.twilio.account_sid}/Recordings/{recording_sid}"
    return {"recording_sid": recording_sid, "recording_url": origin.origin + path}


def _basic_auth(settings: Settings) -> str:
    account = f"{settings.twilio.account_sid}:{settings.twilio.auth_token.get_secret_value()}"
    return "Basic " + base64.b64encode(account.encode()).decode()


async def test_the_accounts_credentials_go_only_to_the_recording_urls_origin(
    settings: Settings, handler_for: Any, store: ObjectStore
) -> None:
    audio = sample_path("plumber_boston").read_bytes()
    recording_origin = MediaOrigin(MEDIA_ORIGIN_PORTS[0])
    media_origin = MediaOrigin(MEDIA_ORIGIN_PORTS[1], body=audio)
    recording = _recording_at(recording_origin, settings)
    recording_origin.redirect_to = f"{media_origin.origin}/media/{recording['recording_sid']}"
    handler = await handler_for(
        media_allowed_origins=f"{recording_origin.origin},{media_origin.origin}"
    )
    async with serving_media(recording_origin, media_origin):
        [result] = await handler(recording_event(recording))
    assert recording_origin.authorizations == [_basic_auth(settings)]
    assert media_origin.authorizations == [None]  # asked, without the account's credentials
    assert await store.get(result.object_key) == audio


async def test_a_redirect_off_the_allowed_origins_is_refused_at_any_hop(
    settings: Settings, handler_for: Any, store: ObjectStore
) -> None:
    recording_origin = MediaOrigin(MEDIA_ORIGIN_PORTS[0])
    media_origin = MediaOrigin(MEDIA_ORIGIN_PORTS[1])
    elsewhere = MediaOrigin(MEDIA_ORIGIN_PORTS[2], body=b"RIFF")
    recording = _recording_at(recording_origin, settings)
    recording_origin.redirect_to = f"{media_origin.origin}/media/{recording['recording_sid']}"
    media_origin.redirect_to = f"{elsewhere.origin}/media/{recording['recording_sid']}"
    handler = await handler_for(
        media_allowed_origins=f"{recording_origin.origin},{media_origin.origin}"
    )
    event = recording_event(recording)
    async with serving_media(recording_origin, media_origin, elsewhere):
        with pytest.raises(TerminalError, match="redirected to a disallowed URL"):
            await handler(event)
    assert recording_origin.authorizations == [_basic_auth(settings)]
    assert media_origin.authorizations == [None]
    assert elsewhere.authorizations == []  # never asked at all
    assert await store.keys(f"acme/{event.occurred_at.date().isoformat()}/{event.call_sid}") == []


async def test_media_not_ready_yet_is_asked_for_again_no_sooner_than_a_second_later(
    settings: Settings, handler_for: Any
) -> None:
    handler = await handler_for()
    event = recording_event(add_recording(settings, media_delay_seconds=600))
    with pytest.raises(RetryLater, match="not ready") as raised:
        await handler(event)
    assert raised.value.after_seconds >= 1.0
    assert [r["status"] for r in media_requests(settings, event.recording_sid)] == [404]


async def test_a_rate_limited_fetch_is_asked_for_again_no_sooner_than_retry_after_says(
    settings: Settings, handler_for: Any
) -> None:
    handler = await handler_for()
    event = recording_event(add_recording(settings, rate_limited_tries=1, retry_after_seconds=7))
    with pytest.raises(RetryLater, match="429") as raised:
        await handler(event)
    assert raised.value.after_seconds >= 7.0
    assert [r["status"] for r in media_requests(settings, event.recording_sid)] == [429]


async def test_a_recording_over_the_size_limit_is_refused_and_not_stored(
    settings: Settings, handler_for: Any, store: ObjectStore
) -> None:
    handler = await handler_for(max_bytes=10_000)
    event = recording_event(add_recording(settings))
    with pytest.raises(TerminalError, match="over the limit"):
        await handler(event)
    assert await store.keys(f"acme/{event.occurred_at.date().isoformat()}/{event.call_sid}") == []


def _noise_wav(path: Path, seconds: int) -> Path:
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(2)
        audio.setsampwidth(2)
        audio.setframerate(44_100)
        for _ in range(seconds):
            audio.writeframes(os.urandom(44_100 * 4))
    return path


async def test_a_large_recording_goes_up_in_parts_and_is_stored_exactly(
    settings: Settings, handler_for: Any, store: ObjectStore, tmp_path: Path
) -> None:
    audio = _noise_wav(tmp_path / "long.wav", seconds=75)  # ~13 MB: three 5 MiB parts
    handler = await handler_for(part_bytes=5 * 1024**2)
    [result] = await handler(recording_event(add_recording(settings, audio=str(audio))))
    expected = audio.read_bytes()
    assert result.size_bytes == len(expected)
    assert result.sha256 == hashlib.sha256(expected).hexdigest()
    assert await store.get(result.object_key) == expected
    info = await store.head(result.object_key)
    assert info is not None and info.etag.strip('"').endswith("-3")  # a 3-part upload
    # Stored under the name SeaweedFS does not gzip, read back as the one browsers play.
    raw = await store._client.head_object(Bucket=store.bucket, Key=result.object_key)
    assert (raw["ContentType"], info.content_type) == ("audio/vnd.wave", "audio/wav")


def _damage_audio_bodies_in_transit(store: ObjectStore) -> Any:
    """Flips the first byte of each audio PUT's body after its Content-MD5 was set, and
    drops the client's own body checksum (CRC32): only the Content-MD5 stands guard."""

    def damage(request: AWSRequest, **_: Any) -> None:
        if not request.headers.get("Content-Type", "").startswith("audio/"):
            return
        for name in [n for n in request.headers if n.lower().startswith("x-amz-checksum-")]:
            del request.headers[name]
        body = request.data.read()  # the client wraps the body in a file object
        request.data = bytes([body[0] ^ 0xFF]) + body[1:]

    store._client.meta.events.register("before-sign.s3.PutObject", damage)
    return damage


async def test_a_body_damaged_in_transit_is_refused_and_not_marked_downloaded(
    settings: Settings, handler_for: Any, store: ObjectStore
) -> None:
    """The single PUT's Content-MD5 is the verification (no HEAD after it): a body that does
    not match is refused by S3, and neither the audio nor the manifest exists, so no
    recording.downloaded is published and a redelivery downloads it again."""
    handler = await handler_for()
    event = recording_event(add_recording(settings))
    prefix = f"acme/{event.occurred_at.date().isoformat()}/{event.call_sid}"
    damage = _damage_audio_bodies_in_transit(store)
    try:
        with pytest.raises(ClientError, match="BadDigest"):
            await handler(event)
    finally:
        store._client.meta.events.unregister("before-sign.s3.PutObject", damage)
    assert await store.keys(prefix) == []
    [result] = await handler(event)
    stored = await store.get(result.object_key)
    assert hashlib.sha256(stored).hexdigest() == result.sha256
    assert await store.keys(prefix) == [result.object_key, f"{result.object_key}.manifest.json"]


async def test_the_recording_is_deleted_at_the_provider_only_once_archived(
    settings: Settings, handler_for: Any, store: ObjectStore
) -> None:
    handler = await handler_for(delete_recording_after_archive=True)
    recording = add_recording(settings)
    event = recording_event(recording)
    [first] = await handler(event)
    assert await store.head(first.object_key) is not None
    async with httpx.AsyncClient() as client:
        gone = await client.get(
            recording["recording_url"] + ".wav",
            auth=(settings.twilio.account_sid, settings.twilio.auth_token.get_secret_value()),
        )
    assert gone.status_code == 404
    [again] = await handler(event)  # a redelivery: archived already, deleted already
    assert (again.event_id, again.object_key, again.sha256) == (
        first.event_id,
        first.object_key,
        first.sha256,
    )


async def test_the_business_s_redaction_choice_travels_with_the_recording(
    settings: Settings, handler_for: Any
) -> None:
    """Before the player made its tables every business has the defaults; once the business
    chose phone numbers too, its next recording carries that choice to the transcriber."""
    handler = await handler_for()
    [before] = await handler(recording_event(add_recording(settings)))
    assert set(before.redact) == {EntityKind.CARD, EntityKind.NUMBER}
    await asyncio.to_thread(migrate, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        choice = DataSettings.model_validate_json(
            '{"redact": ["card", "phone"], "audio_retention_days": null,'
            ' "call_retention_days": null, "delete_from_twilio": false}'
        )
        await CallRepository(engine).save_data_settings("acme", choice)
    finally:
        await engine.dispose()
    [after] = await handler(recording_event(add_recording(settings)))
    assert set(after.redact) == {EntityKind.CARD, EntityKind.NUMBER, EntityKind.PHONE}


@dataclass
class StreamingOrigin(MediaOrigin):
    """A media server that sends the first half of `body`, then holds the rest until
    `release` is set: a download still streaming when the test acts."""

    streaming: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"audio/x-wav")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        half = len(self.body) // 2
        await send({"type": "http.response.body", "body": self.body[:half], "more_body": True})
        self.streaming.set()
        await self.release.wait()
        await send({"type": "http.response.body", "body": self.body[half:]})


async def delete_call(store: ObjectStore, event: RecordingCompleted) -> None:
    """What the player's delete does to the objects: the tombstone, then the call's folders."""
    folders = call_prefixes(event.business_id, event.call_sid, [event.occurred_at.date()])
    await delete_call_objects(store, event.business_id, event.call_sid, folders)


async def test_a_download_finishing_after_its_call_was_deleted_leaves_nothing_and_announces_nothing(
    settings: Settings, handler_for: Any, store: ObjectStore
) -> None:
    audio = sample_path("plumber_boston").read_bytes()
    origin = StreamingOrigin(MEDIA_ORIGIN_PORTS[0], body=audio)
    handler = await handler_for(media_allowed_origins=origin.origin)
    event = recording_event(_recording_at(origin, settings))
    async with serving_media(origin):
        downloading = asyncio.create_task(handler(event))
        await asyncio.wait_for(origin.streaming.wait(), 30)
        await delete_call(store, event)
        origin.release.set()
        outputs = await asyncio.wait_for(downloading, 30)

    assert outputs == []  # no recording.downloaded; the offset is committed as for any output
    for folder in call_prefixes(event.business_id, event.call_sid, [event.occurred_at.date()]):
        assert await store.keys(folder) == []
    assert await store.head(tombstone_key(event.business_id, event.call_sid)) is not None


async def test_a_recording_of_a_call_deleted_before_its_download_is_never_fetched(
    settings: Settings, handler_for: Any, store: ObjectStore
) -> None:
    handler = await handler_for()
    event = recording_event(add_recording(settings))
    await delete_call(store, event)

    assert await handler(event) == []
    assert media_requests(settings, event.recording_sid) == []
    assert await store.keys(f"acme/{event.occurred_at.date().isoformat()}/{event.call_sid}") == []
