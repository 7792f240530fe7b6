"""Transcriber: recording in the object store → transcript JSON under its call, with the
personal data the call's policy names redacted before anything is stored; the recording
rewritten in place with the same spans replaced; transcript.ready.

Redelivery and crashes: the transcript is stored before the recording is written back, and
the recording written back is marked (object metadata). A message that finds the mark only
announces the stored transcript again; one that does not (the step never ran, or crashed
before the recording's single atomic replacement) does all the work again, which gives the
same transcript and the same rewrite."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Literal

from services.transcriber import core
from services.transcriber.audio import (
    FileTranscription,
    TranscriptionBackend,
    UndecodableAudio,
    transcribe_file,
)
from services.transcriber.redact_audio import UnredactableAudio, redact_wav
from shared import metrics
from shared.events import AnyEvent, Event, RecordingDownloaded
from shared.retry import carry_out
from shared.storage import ObjectStore, transcript_key
from shared.tombstones import discard, is_deleted
from shared.transcript import AudioRedaction, Transcript

log = logging.getLogger(__name__)

# The object metadata that marks a recording written back redacted.
REDACTED_MARK = "callpipe-redacted"
UPLOAD_PART_BYTES = 8 * 1024 * 1024


class TranscribeHandler:
    def __init__(
        self,
        backend: TranscriptionBackend,
        store: ObjectStore,
        pool: Executor,
        speakers: core.SpeakerMapping,
        language: str | None,
        transcribe: Callable[
            [TranscriptionBackend, Path, int], FileTranscription
        ] = transcribe_file,
        audio_padding_seconds: float = 0.25,
        audio_sound: Literal["tone", "silence"] = "tone",
    ) -> None:
        self._transcribe = transcribe
        self._backend = backend
        self._store = store
        self._pool = pool
        self._speakers = speakers
        self._language = language or None
        self._padding = audio_padding_seconds
        self._sound = audio_sound

    async def __call__(self, event: AnyEvent) -> Sequence[Event]:
        if not isinstance(event, RecordingDownloaded):
            carry_out(core.unhandled_event(event.event_type))
        if skip := core.deleted_call(await is_deleted(self._store, event)):
            return await discard(self._store, skip)
        key = transcript_key(event.business_id, event.call_sid, event.recording_sid)
        if await self._redacted_already(event.object_key):
            raw = await self._store.get_if_exists(key)
            if raw is None:
                carry_out(core.redacted_without_transcript(key))
            log.info("%s was redacted already: announcing %s again", event.object_key, key)
            return [core.transcript_ready(event, Transcript.model_validate_json(raw), key)]
        with tempfile.TemporaryDirectory(prefix="callpipe-") as folder:
            path = Path(folder) / Path(event.object_key).name
            await self._download(event.object_key, path)
            transcript, audio, elapsed = await self._transcribed(event, path)
            if audio.spans:
                try:
                    await asyncio.to_thread(redact_wav, path, audio.spans, audio.sound)
                except UnredactableAudio as error:
                    carry_out(core.unredactable(str(error)))
            await self._store.put(key, transcript.model_dump_json().encode(), "application/json")
            if deleted_meanwhile := core.deleted_call(await is_deleted(self._store, event), key):
                return await discard(self._store, deleted_meanwhile)
            if audio.spans:
                await self._store.put_parts(
                    event.object_key,
                    _parts(path),
                    event.content_type,
                    {REDACTED_MARK: str(len(audio.spans))},
                )
                deleted = core.deleted_call(
                    await is_deleted(self._store, event), key, event.object_key
                )
                if deleted:
                    return await discard(self._store, deleted)
        log.info(
            "%d turns, %.1f s of audio transcribed in %.2f s, stored as %s; "
            "%d spans of the recording redacted",
            len(transcript.utterances),
            transcript.duration_seconds,
            elapsed,
            key,
            len(audio.spans),
        )
        return [core.transcript_ready(event, transcript, key)]

    async def _transcribed(
        self, event: RecordingDownloaded, path: Path
    ) -> tuple[Transcript, AudioRedaction, float]:
        """The transcript of the recording at `path`, redacted, with the rewrite of the
        recording it calls for (in its `redaction` too); and the seconds transcription
        took."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            result = await loop.run_in_executor(
                self._pool, self._transcribe, self._backend, path, event.channels
            )
        except UndecodableAudio as error:
            carry_out(core.undecodable(str(error)))
        elapsed = time.perf_counter() - started
        metrics.observe_transcription(self._backend.name, result.duration_seconds, elapsed)
        labels = self._speakers.labels(len(result.channels), event.direction)
        speech = core.redacted(
            core.labelled_segments(result.channels, labels), core.kinds_to_redact(event.redact)
        )
        audio = core.audio_redaction(
            event.object_key, speech.redaction, self._sound, self._padding, result.duration_seconds
        )
        transcript = Transcript(
            call_sid=event.call_sid,
            recording_sid=event.recording_sid,
            language=core.language(self._language, result.channels),
            duration_seconds=round(result.duration_seconds, 3),
            speakers=labels,
            utterances=speech.utterances,
            model=self._backend.model,
            backend=self._backend.name,
            segments=speech.segments,
            redaction=speech.redaction.model_copy(update={"audio": audio}),
        )
        return transcript, audio, elapsed

    async def _redacted_already(self, key: str) -> bool:
        info = await self._store.head(key)
        return info is not None and REDACTED_MARK in info.metadata

    async def _download(self, key: str, path: Path) -> None:
        """Chunk by chunk to a local file: a long recording is never whole in memory here."""
        with path.open("wb") as out:
            async for chunk in self._store.stream(key):
                await asyncio.to_thread(out.write, chunk)


async def _parts(path: Path) -> AsyncIterator[bytes]:
    """The file in upload parts, one in memory at a time."""
    with path.open("rb") as file:
        while part := await asyncio.to_thread(file.read, UPLOAD_PART_BYTES):
            yield part
