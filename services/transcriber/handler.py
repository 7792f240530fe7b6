"""Transcriber: recording in the object store → transcript JSON beside it + transcript.ready."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.transcriber import core
from services.transcriber.whisper import UndecodableAudio, WhisperEngine
from shared.events import AnyEvent, Event, RecordingDownloaded, TranscriptReady
from shared.retry import TerminalError
from shared.storage import ObjectStore, transcript_key
from shared.transcript import Transcript

log = logging.getLogger(__name__)


class TranscribeHandler:
    def __init__(self, engine: WhisperEngine, store: ObjectStore, pool: ThreadPoolExecutor) -> None:
        self._engine = engine
        self._store = store
        self._pool = pool

    async def __call__(self, event: AnyEvent) -> Sequence[Event]:
        if not isinstance(event, RecordingDownloaded):
            raise TerminalError(f"transcriber cannot handle {event.event_type}")
        audio = await self._store.get(event.object_key)
        with tempfile.TemporaryDirectory(prefix="callpipe-") as folder:
            path = Path(folder) / Path(event.object_key).name
            await asyncio.to_thread(path.write_bytes, audio)
            del audio
            loop = asyncio.get_running_loop()
            try:
                words, language, duration = await loop.run_in_executor(
                    self._pool, self._engine.transcribe, path, event.channels
                )
            except UndecodableAudio as error:
                raise TerminalError(str(error)) from error
        labels = core.speaker_labels(event.channels)
        turns = core.merge([core.utterances(s, w) for s, w in zip(labels, words, strict=True)])
        transcript = Transcript(
            call_sid=event.call_sid,
            recording_sid=event.recording_sid,
            language=language,
            duration_seconds=round(duration, 3),
            speakers=labels,
            utterances=turns,
            model=self._engine.model_name,
        )
        key = transcript_key(event.business_id, event.call_sid, event.recording_sid)
        await self._store.put(key, transcript.model_dump_json().encode(), "application/json")
        log.info("%d utterances, %.1f s of audio, stored as %s", len(turns), duration, key)
        return [
            event.caused(
                TranscriptReady,
                "transcript.ready",
                outcome="transcribed" if transcript.has_speech else "no_speech",
                transcript_key=key,
                language=language,
                duration_seconds=transcript.duration_seconds,
                speakers=labels,
                preview=core.preview(turns),
            )
        ]
