"""The transcriber's handler with its real parts: the recording in a real S3 server
(SeaweedFS, started as a process), the real local Whisper backend in a worker pool, the
transcript JSON written to the store under the call's SID, and `transcript.ready` as the
stage's output."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import threading
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
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
from shared.transcript import AudioSpan, Transcript, Word
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
    audio = sample_path("plumber_boston").read_bytes()
    event = await downloaded(store, audio, "CAhandler07", redact=[EntityKind.PHONE])
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


def samples(wav: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav), "rb") as recording:
        frames = recording.readframes(recording.getnframes())
        return np.frombuffer(frames, "<i2").reshape(-1, recording.getnchannels())


def card_handler(store: ObjectStore, pool: ThreadPoolExecutor, **options: Any) -> TranscribeHandler:
    return TranscribeHandler(
        InstantBackend(), store, pool, SpeakerMapping(), "en", caller_reads_out_a_card, **options
    )


# What `caller_reads_out_a_card` says, with the policy `phone` too: the card, the phone
# number, the card again, each padded by a quarter of a second, on the caller's channel.
CARD_SPANS = [
    AudioSpan(channel=0, start=1.25, end=3.65),
    AudioSpan(channel=0, start=5.25, end=6.15),
    AudioSpan(channel=0, start=8.25, end=9.15),
]


async def test_the_recording_is_rewritten_only_where_the_words_were_redacted(
    store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    original = sample_path("plumber_boston").read_bytes()
    event = await downloaded(store, original, "CAaudio01", redact=[EntityKind.PHONE])

    [ready] = await card_handler(store, pool)(event)

    assert isinstance(ready, TranscriptReady) and ready.audio_redaction is not None
    assert ready.audio_redaction.object_key == event.object_key
    assert ready.audio_redaction.spans == CARD_SPANS
    stored = Transcript.model_validate_json(await store.get(ready.transcript_key))
    assert stored.redaction is not None and stored.redaction.audio == ready.audio_redaction
    rewritten = await store.get(event.object_key)
    assert len(rewritten) == len(original)
    before, after = samples(original), samples(rewritten)
    assert np.array_equal(after[:, 1], before[:, 1])  # the agent's channel
    inside = np.zeros(len(before), dtype=bool)
    for span in CARD_SPANS:
        piece = slice(int(span.start * 8000), int(np.ceil(span.end * 8000)))
        inside[piece] = True
        assert np.count_nonzero(after[piece, 0] != before[piece, 0]) > 0.9 * len(after[piece])
    assert np.array_equal(after[~inside, 0], before[~inside, 0])
    header = len(original) - len(before) * 4
    assert rewritten[:header] == original[:header]


async def test_silence_can_replace_the_spans(store: ObjectStore, pool: ThreadPoolExecutor) -> None:
    original = sample_path("plumber_boston").read_bytes()
    event = await downloaded(store, original, "CAaudio02")
    [ready] = await card_handler(store, pool, audio_sound="silence", audio_padding_seconds=0)(event)
    assert isinstance(ready, TranscriptReady) and ready.audio_redaction is not None
    assert ready.audio_redaction.sound == "silence"
    # Without `phone` in the policy the phone number stays, in the transcript and the audio.
    [first, second] = ready.audio_redaction.spans
    assert (first.start, first.end, second.start, second.end) == (1.5, 3.4, 8.5, 8.9)
    after = samples(await store.get(event.object_key))
    assert not after[int(1.5 * 8000) : int(3.4 * 8000), 0].any()
    assert np.array_equal(
        after[int(3.4 * 8000) + 1 :, 1], samples(original)[int(3.4 * 8000) + 1 :, 1]
    )


class CountingTranscriptions:
    def __init__(self) -> None:
        self.count = 0

    def __call__(
        self, backend: TranscriptionBackend, path: Path, channels: int
    ) -> FileTranscription:
        self.count += 1
        return caller_reads_out_a_card(backend, path, channels)


async def test_a_redelivery_announces_the_same_without_transcribing_the_redacted_audio(
    store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    event = await downloaded(store, sample_path("plumber_boston").read_bytes(), "CAaudio03")
    transcribe = CountingTranscriptions()
    redacting = TranscribeHandler(InstantBackend(), store, pool, SpeakerMapping(), "en", transcribe)
    [ready] = await redacting(event)
    redacted = await store.get(event.object_key)

    [again] = await redacting(event)

    assert again.model_copy(update={"occurred_at": ready.occurred_at}) == ready
    assert transcribe.count == 1
    assert await store.get(event.object_key) == redacted


class CrashingStore(ObjectStore):
    """Fails the first write-back of a recording, as a crash after the transcript was
    stored would leave things; then works."""

    crashes = 1

    async def put_parts(self, *args: Any, **kwargs: Any) -> int:
        if self.crashes:
            self.crashes -= 1
            raise ConnectionError("the process died here")
        return await super().put_parts(*args, **kwargs)


async def test_a_retry_after_a_crash_before_the_write_back_redacts_the_recording(
    settings: Settings, pool: ThreadPoolExecutor
) -> None:
    store = CrashingStore(settings.s3)
    await store.start()
    try:
        original = sample_path("plumber_boston").read_bytes()
        event = await downloaded(store, original, "CAaudio04", redact=[EntityKind.PHONE])
        with pytest.raises(ConnectionError):
            await card_handler(store, pool)(event)
        assert await store.get(event.object_key) == original  # nothing half-written

        [ready] = await card_handler(store, pool)(event)

        assert isinstance(ready, TranscriptReady) and ready.audio_redaction is not None
        assert ready.audio_redaction.spans == CARD_SPANS
        assert await store.get(event.object_key) != original
    finally:
        await store.stop()


class DeletingStore(ObjectStore):
    """Deletes the call (as the player does) right after the handler stored `after`."""

    after = "put"
    event: RecordingDownloaded

    async def put(self, key: str, *args: Any, **kwargs: Any) -> None:
        await super().put(key, *args, **kwargs)
        if self.after == "put" and key.endswith(".transcript.json"):
            await delete_call(self, self.event)

    async def put_parts(self, *args: Any, **kwargs: Any) -> int:
        if self.after == "put":
            raise AssertionError("a deleted call's recording was written back")
        size = await super().put_parts(*args, **kwargs)
        await delete_call(self, self.event)
        return size


@pytest.mark.parametrize("after", ["put", "put_parts"], ids=["transcript", "write-back"])
async def test_a_call_deleted_during_redaction_gets_nothing_written_back(
    settings: Settings, pool: ThreadPoolExecutor, after: str
) -> None:
    store = DeletingStore(settings.s3)
    store.after = after
    await store.start()
    try:
        call = f"CAaudio05{after.replace('_', '')}"
        store.event = await downloaded(store, sample_path("plumber_boston").read_bytes(), call)

        assert await card_handler(store, pool)(store.event) == []

        assert await store.keys(f"biz-1/{call}/") == []
        assert await store.keys(f"biz-1/2026-11-24/{call}/") == []
    finally:
        await store.stop()


async def test_audio_that_cannot_be_redacted_fails_for_good_and_nothing_is_stored(
    store: ObjectStore, pool: ThreadPoolExecutor
) -> None:
    mp3 = b"ID3\x03\x00" + bytes(4000)
    event = await downloaded(store, mp3, "CAaudio06")
    with pytest.raises(TerminalError, match="cannot redact the audio: not a RIFF WAVE file"):
        await card_handler(store, pool)(event)
    assert await store.keys("biz-1/CAaudio06/") == []
    assert await store.get(event.object_key) == mp3
