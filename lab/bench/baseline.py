"""The baseline: the pipeline's essential per-call work, done by one straight-line asyncio
loop with no Kafka and no services, on the same servers: fetch the media from the Twilio
simulator, store it in S3, store a transcript beside it, and write the call's status rows
(the same events the player applies for a call through the pipeline)."""

from __future__ import annotations

import hashlib
import time

import aiohttp

from lab.bench.twilio import Recording, register_recordings
from services.player.repository import CallRepository
from shared.db import create_engine
from shared.events import (
    AnyEvent,
    Lead,
    RecordingCompleted,
    RecordingDownloaded,
    Stage,
    StageStarted,
    SummaryReady,
    TranscriptReady,
    call_correlation_id,
)
from shared.settings import Settings
from shared.storage import ObjectStore, transcript_key

TRANSCRIPT_JSON = b'{"utterances": [], "language": "en"}'


def _events(recording: Recording, audio_key: str, audio: bytes) -> list[AnyEvent]:
    business_id = recording.business_id
    completed = RecordingCompleted(
        call_sid=recording.call_sid,
        business_id=business_id,
        correlation_id=call_correlation_id(recording.call_sid),
        recording_sid=recording.recording_sid,
        recording_status="completed",
        recording_url=recording.url,
        channels=2,
    )
    downloaded = completed.caused(
        RecordingDownloaded,
        "downloaded",
        recording_sid=recording.recording_sid,
        object_key=audio_key,
        content_type="audio/wav",
        size_bytes=len(audio),
        sha256=hashlib.sha256(audio).hexdigest(),
        channels=2,
    )
    transcribed = downloaded.caused(
        TranscriptReady,
        "transcribed",
        outcome="transcribed",
        transcript_key=transcript_key(business_id, recording.call_sid, recording.recording_sid),
        preview="caller: hello",
    )
    summarised = transcribed.caused(
        SummaryReady, "summarised", outcome="extracted", summary="A call.", lead=Lead(),
        extractor="instant",
    )  # fmt: skip
    started = [
        source.caused(StageStarted, f"{stage}.started", stage=stage)
        for source, stage in (
            (completed, Stage.RECORDING),
            (downloaded, Stage.TRANSCRIPT),
            (transcribed, Stage.SUMMARY),
        )
    ]
    return [completed, started[0], downloaded, started[1], transcribed, started[2], summarised]


async def baseline_calls_per_s(
    settings: Settings,
    http: aiohttp.ClientSession,
    audio: str,
    count: int,
    business_ids: list[str],
) -> float:
    recordings = await register_recordings(settings, http, audio, count, business_ids)
    credentials = {
        "Authorization": aiohttp.encode_basic_auth(
            settings.twilio.account_sid, settings.twilio.auth_token.get_secret_value()
        )
    }
    store = ObjectStore(settings.s3)
    await store.start()
    engine = create_engine(settings.database_url)
    repository = CallRepository(engine)
    try:
        started = time.perf_counter()
        for recording in recordings:
            async with http.get(recording.url, headers=credentials) as response:
                response.raise_for_status()
                media = await response.read()
            business = recording.business_id
            audio_key = f"{business}/baseline/{recording.call_sid}/{recording.recording_sid}.wav"
            await store.put(audio_key, media, "audio/wav")
            key = transcript_key(business, recording.call_sid, recording.recording_sid)
            await store.put(key, TRANSCRIPT_JSON, "application/json")
            for event in _events(recording, audio_key, media):
                await repository.apply(event)
        return count / (time.perf_counter() - started)
    finally:
        await engine.dispose()
        await store.stop()
