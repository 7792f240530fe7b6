"""The transcriber's handler with its real parts: the recording in a real S3 server
(SeaweedFS, started as a process), the real local Whisper backend in a worker pool, the
transcript JSON written to the store under the call's SID, and `transcript.ready` as the
stage's output."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from callpipe.twilio_simulator.samples import sample_path
from services.transcriber.audio import FileTranscription, Samples, TranscriptionBackend
from services.transcriber.core import ChannelResult, RecognisedSegment, SpeakerMapping, SpeechSpan
from services.transcriber.handler import TranscribeHandler
from services.transcriber.instant import InstantBackend
from services.transcriber.whisper import LocalWhisperBackend
from shared.events import CallStatusChanged, RecordingDownloaded, TranscriptReady, encode
from shared.redaction.kinds import EntityKind
from shared.retry import TerminalError
from shared.settings import Settings
from shared.storage import ObjectStore, call_prefixes
from shared.tombstones import delete_call_objects
from shared.transcript import Transcript, Word
from tests.support.stack import module_s3_server
from tests.support.transcriber import sample

RECORDED_ON = date(2026, 11, 24)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with module_s3_server(tmp_path_factory.mktemp("transcriber-s3")) as settings:
        yield settings


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1, "transcribe") as pool:
        yield pool


async def downloaded(
    store: ObjectStore, audio: bytes, call_sid: str, channels: int = 2, **fields: Any
) -> RecordingDownloaded:
    key = f"biz-1/{RECORDED_ON.isoformat()}/{call_sid}/RE{call_sid[2:]}.wav"
    await store.put(key, audio, "audio/wav")
    return RecordingDownloaded(
        call_sid=call_sid,
        business_id="biz-1",
        correlation_id="4bf92f3577b34da6a3ce929d0e0e4736",
        recording_sid="RE" + call_sid[2:],
        object_key=key,
        content_type="audio/wav",
        size_bytes=len(audio),
        sha256=hashlib.sha256(audio).hexdigest(),
        channels=channels,
        **fields,
    )


def handler(
    backend: LocalWhisperBackend | GatedBackend, store: ObjectStore, pool: ThreadPoolExecutor
) -> TranscribeHandler:
    return TranscribeHandler(backend, store, pool, SpeakerMapping(), "en")


async def test_the_transcript_is_stored_under_the_call_and_announced(
    local_backend: LocalWhisperBackend, store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    event = await downloaded(store, sample_path("plumber_boston").read_bytes(), "CAhandler01")
    [ready] = await handler(local_backend, store, pool)(event)
    assert isinstance(ready, TranscriptReady)
    assert ready.outcome == "transcribed"
    assert ready.transcript_key == "biz-1/CAhandler01/REhandler01.transcript.json"
    assert ready.speakers == ["caller", "agent"]
    assert ready.language == "en"
    assert (
        ready.preview.startswith("Caller: Hello")
        and "Agent: Thank you for calling" in ready.preview
    )
    assert len(ready.preview) < 500
    stored = Transcript.model_validate_json(await store.get(ready.transcript_key))
    assert stored.backend == "local" and stored.model == local_backend.model
    assert [u.speaker for u in stored.utterances] == [
        s for s, _ in sample("plumber_boston", 2).turns
    ]
    assert {s.channel for s in stored.segments} == {0, 1}
    assert all(s.words for s in stored.segments)
    # A redelivery yields the same event id and overwrites the same object.
    [again] = await handler(local_backend, store, pool)(event)
    assert again.event_id == ready.event_id and again.transcript_key == ready.transcript_key


async def test_an_outbound_calls_channels_are_labelled_for_it(
    local_backend: LocalWhisperBackend, store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    audio = sample_path("plumber_boston").read_bytes()
    event = await downloaded(store, audio, "CAhandler02", direction="outbound-api")
    [ready] = await handler(local_backend, store, pool)(event)
    assert isinstance(ready, TranscriptReady)
    assert ready.speakers == ["callee", "agent"]
    assert ready.preview.startswith("Callee: Hello")


async def test_silence_ends_as_no_speech(
    local_backend: LocalWhisperBackend, store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    event = await downloaded(store, sample_path("silence").read_bytes(), "CAhandler03")
    [ready] = await handler(local_backend, store, pool)(event)
    assert isinstance(ready, TranscriptReady)
    assert ready.outcome == "no_speech"
    assert ready.preview == ""
    stored = Transcript.model_validate_json(await store.get(ready.transcript_key))
    assert stored.utterances == [] and stored.segments == []


async def test_a_corrupt_file_fails_for_good_with_the_reason(
    local_backend: LocalWhisperBackend, store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    audio = b"RIFF\x00\x10\x00\x00WAVEfmt " + bytes(range(256)) * 16
    event = await downloaded(store, audio, "CAhandler04")
    with pytest.raises(TerminalError, match="cannot decode audio"):
        await handler(local_backend, store, pool)(event)


async def test_an_event_of_another_stage_fails_for_good(
    local_backend: LocalWhisperBackend, store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    misrouted = CallStatusChanged(
        call_sid="CAhandler06",
        business_id="biz-1",
        correlation_id="c" * 32,
        call_status="ringing",
    )
    with pytest.raises(TerminalError, match=r"transcriber cannot handle call\.status"):
        await handler(local_backend, store, pool)(misrouted)


class GatedBackend:
    """Transcribes only once the event loop has answered: proves the loop stays free."""

    name = "local"

    def __init__(self, backend: LocalWhisperBackend) -> None:
        self.model = backend.model
        self._backend = backend
        self.entered = threading.Event()
        self.released = threading.Event()

    def transcribe(self, audio: Samples, speech: list[SpeechSpan]) -> ChannelResult:
        self.entered.set()
        if not self.released.wait(timeout=30):
            raise AssertionError("the event loop never ran while the backend was working")
        return self._backend.transcribe(audio, speech)


async def test_transcription_leaves_the_event_loop_free(
    local_backend: LocalWhisperBackend, store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    gated = GatedBackend(local_backend)
    event = await downloaded(store, sample_path("plumber_boston").read_bytes(), "CAhandler05")
    task = asyncio.create_task(handler(gated, store, pool)(event))
    await asyncio.to_thread(gated.entered.wait, 30)
    assert not task.done()
    gated.released.set()  # run by the event loop while the backend is mid-call
    [ready] = await task
    assert isinstance(ready, TranscriptReady) and ready.outcome == "transcribed"


CARD = "4580 1234 5678 9015"  # Luhn-valid


def whisper_words(text: str, start: float) -> RecognisedSegment:
    words = tuple(
        Word(start=start + i * 0.5, end=start + i * 0.5 + 0.4, text=" " + piece, probability=0.9)
        for i, piece in enumerate(text.split())
    )
    return RecognisedSegment(start, words[-1].end, " " + text, avg_logprob=-0.1, words=words)


def caller_reads_out_a_card(
    backend: TranscriptionBackend, path: Path, channels: int
) -> FileTranscription:
    """Stands in for decoding and recognition: the caller reads a card number out, the
    agent's channel says nothing."""
    caller = ChannelResult(
        (
            whisper_words(f"My card is {CARD}, and call me on 054-765-4321.", 0.0),
            whisper_words("כרטיס 4580-1234-5678-9015 בבקשה", 8.0),
        ),
        "en",
    )
    return FileTranscription([caller, ChannelResult()], duration_seconds=12.0)


async def test_a_card_read_out_is_neither_stored_nor_published(
    store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    event = await downloaded(store, b"RIFF audio", "CAhandler07", redact=[EntityKind.PHONE])
    redacting = TranscribeHandler(
        InstantBackend(), store, pool, SpeakerMapping(), "en", caller_reads_out_a_card
    )
    [ready] = await redacting(event)
    assert isinstance(ready, TranscriptReady)

    stored_bytes = await store.get(ready.transcript_key)
    published = encode(ready).decode()
    for text in (stored_bytes.decode(), published):
        numbers = set(re.findall(r"(?<![\w.])\d+(?![\w.])", text))  # not times, not ids
        assert not numbers & {"4580", "1234", "5678", "9015", "054", "765", "4321"}
    stored = Transcript.model_validate_json(stored_bytes)
    assert stored.utterances[0].text.startswith("My card is [card], and call me on [phone].")
    assert stored.redaction is not None
    assert stored.redaction.counts == {EntityKind.CARD: 2, EntityKind.PHONE: 1}
    assert {(s.speaker, s.channel) for s in stored.redaction.spans} == {("caller", 0)}
    assert ready.redact == [EntityKind.CARD, EntityKind.NUMBER, EntityKind.PHONE]
    assert ready.redaction is not None
    assert ready.redaction.counts == {EntityKind.CARD: 2, EntityKind.PHONE: 1}
    assert ready.preview.startswith("Caller: My card is [card], and call me on [phone].")


async def delete_call(store: ObjectStore, event: RecordingDownloaded) -> None:
    """What the player's delete does to the objects: the tombstone, then the call's folders."""
    folders = call_prefixes(event.business_id, event.call_sid, [RECORDED_ON])
    await delete_call_objects(store, event.business_id, event.call_sid, folders)


async def test_a_transcription_finishing_after_its_call_was_deleted_leaves_no_transcript(
    local_backend: LocalWhisperBackend, store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    gated = GatedBackend(local_backend)
    event = await downloaded(store, sample_path("plumber_boston").read_bytes(), "CAhandler07")
    task = asyncio.create_task(handler(gated, store, pool)(event))
    await asyncio.to_thread(gated.entered.wait, 30)
    await delete_call(store, event)  # while the backend is mid-call
    gated.released.set()

    assert await task == []  # no transcript.ready
    assert await store.keys("biz-1/CAhandler07/") == []
    assert await store.keys("biz-1/2026-11-24/CAhandler07/") == []


async def test_a_recording_of_a_call_deleted_before_it_was_transcribed_is_not_read(
    local_backend: LocalWhisperBackend, store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    gated = GatedBackend(local_backend)
    event = await downloaded(store, sample_path("plumber_boston").read_bytes(), "CAhandler08")
    await delete_call(store, event)

    assert await handler(gated, store, pool)(event) == []
    assert not gated.entered.is_set()
    assert await store.keys("biz-1/CAhandler08/") == []
