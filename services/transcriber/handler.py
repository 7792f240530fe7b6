"""Transcriber: recording in the object store → transcript JSON under its call, with the
personal data the call's policy names redacted before anything is stored, transcript.ready."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path

from services.transcriber import core
from services.transcriber.audio import (
    FileTranscription,
    TranscriptionBackend,
    UndecodableAudio,
    transcribe_file,
)
from shared import metrics
from shared.events import AnyEvent, Event, RecordingDownloaded, TranscriptReady
from shared.retry import carry_out
from shared.storage import ObjectStore, transcript_key
from shared.tombstones import discard, is_deleted
from shared.transcript import Transcript

log = logging.getLogger(__name__)


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
    ) -> None:
        self._transcribe = transcribe
        self._backend = backend
        self._store = store
        self._pool = pool
        self._speakers = speakers
        self._language = language or None

    async def __call__(self, event: AnyEvent) -> Sequence[Event]:
        if not isinstance(event, RecordingDownloaded):
            carry_out(core.unhandled_event(event.event_type))
        if skip := core.deleted_call(await is_deleted(self._store, event)):
            return await discard(self._store, skip)
        with tempfile.TemporaryDirectory(prefix="callpipe-") as folder:
            path = Path(folder) / Path(event.object_key).name
            await self._download(event.object_key, path)
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
        kinds = core.kinds_to_redact(event.redact)
        speech = core.redacted(core.labelled_segments(result.channels, labels), kinds)
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
            redaction=speech.redaction,
        )
        key = transcript_key(event.business_id, event.call_sid, event.recording_sid)
        await self._store.put(key, transcript.model_dump_json().encode(), "application/json")
        if deleted_meanwhile := core.deleted_call(await is_deleted(self._store, event), key):
            return await discard(self._store, deleted_meanwhile)
        log.info(
            "%d turns, %.1f s of audio transcribed in %.2f s, stored as %s",
            len(transcript.utterances),
            transcript.duration_seconds,
            elapsed,
            key,
        )
        return [
            event.caused(
                TranscriptReady,
                "transcript.ready",
                outcome="transcribed" if transcript.has_speech else "no_speech",
                transcript_key=key,
                language=transcript.language,
                duration_seconds=transcript.duration_seconds,
                speakers=labels,
                preview=core.preview(transcript.utterances),
                redact=sorted(kinds),
                redaction=speech.summary,
            )
        ]

    async def _download(self, key: str, path: Path) -> None:
        """Chunk by chunk to a local file: a long recording is never whole in memory here."""
        with path.open("wb") as out:
            async for chunk in self._store.stream(key):
                await asyncio.to_thread(out.write, chunk)
