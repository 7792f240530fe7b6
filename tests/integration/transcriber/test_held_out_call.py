"""A call held out from the redaction detectors' tuning, through the real local Whisper
backend, the transcriber's handler (transcript and recording in a real S3 server) and the
rules extractor: the caller reads a test card number (4242 4242 4242 4242, Luhn-valid) and a
phone number (052-381-6407) digit by digit, among ordinary lead talk
(`callpipe/samples/locksmith_chicago_card`)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.extractor.handler import ExtractHandler, RulesExtractor, load_catalogue
from services.transcriber.core import SpeakerMapping
from services.transcriber.handler import TranscribeHandler
from services.transcriber.whisper import LocalWhisperBackend
from shared.events import RecordingDownloaded, SummaryReady, TranscriptReady
from shared.redaction.kinds import EntityKind
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.transcript import Transcript
from tests.support.stack import module_s3_server
from tests.support.transcriber import sample

HELD_OUT = sample("locksmith_chicago_card", 2)
PADDING = 0.25
# Three digits or more said together, whatever separates them: none may be left.
DIGITS_TOGETHER = re.compile(r"\d(?:[\s,.-]*\d){2,}")
# Nor a digit of a redacted number left beside its marker ("0[number]").
DIGIT_BESIDE_MARKER = re.compile(r"\d[\s,.-]*\[[a-z_]+\]|\[[a-z_]+\][\s,.-]*\d")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with module_s3_server(tmp_path_factory.mktemp("held-out-s3")) as settings:
        yield settings


def samples(wav: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav), "rb") as recording:
        frames = recording.readframes(recording.getnframes())
        return np.frombuffer(frames, "<i2").reshape(-1, recording.getnchannels())


Processed = tuple[bytes, bytes, Transcript, TranscriptReady, SummaryReady]


@pytest.fixture(scope="module")
def processed(settings: Settings, local_backend: LocalWhisperBackend) -> Processed:
    """The held-out call through the transcriber and the extractor, once for every test:
    the original recording, the one stored after, the transcript and both events."""
    return asyncio.run(process(settings, local_backend))


async def process(settings: Settings, local_backend: LocalWhisperBackend) -> Processed:
    store = ObjectStore(settings.s3)
    await store.start()
    try:
        original = HELD_OUT.path.read_bytes()
        key = "biz-1/2026-12-08/CAheldout1/REheldout1.wav"
        await store.put(key, original, "audio/wav")
        downloaded = RecordingDownloaded(
            call_sid="CAheldout1",
            business_id="biz-1",
            correlation_id="4bf92f3577b34da6a3ce929d0e0e4736",
            recording_sid="REheldout1",
            object_key=key,
            content_type="audio/wav",
            size_bytes=len(original),
            sha256=hashlib.sha256(original).hexdigest(),
            channels=2,
            redact=[EntityKind.CARD, EntityKind.NUMBER, EntityKind.PHONE],
        )
        with ThreadPoolExecutor(1, "transcribe") as pool:
            transcribe = TranscribeHandler(
                local_backend, store, pool, SpeakerMapping(), "en", audio_padding_seconds=PADDING
            )
            [ready] = await transcribe(downloaded)
        assert isinstance(ready, TranscriptReady)
        [summary] = await ExtractHandler(store, RulesExtractor("en"), load_catalogue(None))(ready)
        assert isinstance(summary, SummaryReady)
        transcript = Transcript.model_validate_json(await store.get(ready.transcript_key))
        return original, await store.get(key), transcript, ready, summary
    finally:
        await store.stop()


def test_neither_number_is_in_the_transcript_preview_summary_or_quotes(
    processed: Processed,
) -> None:
    _, _, transcript, ready, summary = processed
    texts = [
        *(u.text for u in transcript.utterances),
        *(s.text for s in transcript.segments),
        "".join(w.text for u in transcript.utterances for w in u.words),
        "".join(w.text for s in transcript.segments for w in s.words),
        ready.preview,
        summary.summary,
        *(evidence.quote for evidence in summary.lead.evidence.values()),
        summary.lead.callback_number or "",
    ]
    for text in texts:
        assert not DIGITS_TOGETHER.search(text), text
        assert not DIGIT_BESIDE_MARKER.search(text), text
    assert "4242" not in "".join(re.findall(r"\d", " ".join(texts)))


def test_typed_markers_stand_where_the_numbers_were_said(
    processed: Processed,
) -> None:
    _, _, transcript, ready, _ = processed
    caller = [u.text for u in transcript.utterances if u.speaker == "caller"]
    card_turn = next(text for text in caller if "Chicago" in text)
    phone_turn = next(text for text in caller if text.startswith("Call me"))
    assert re.search(r"card number .*\[(card|number)\]", card_turn), card_turn
    assert re.search(r"\[(phone|number)\]", phone_turn), phone_turn
    assert transcript.redaction is not None
    assert {s.speaker for s in transcript.redaction.spans} == {"caller"}
    assert sum(transcript.redaction.counts.values()) >= 2
    assert ready.redaction is not None and ready.redaction.counts == transcript.redaction.counts
    assert "[" in ready.preview


def test_the_recording_changed_only_around_those_words(
    processed: Processed,
) -> None:
    original, rewritten, transcript, ready, _ = processed
    assert transcript.redaction is not None and transcript.redaction.audio is not None
    audio = transcript.redaction.audio
    assert ready.audio_redaction == audio and audio.spans
    words = transcript.redaction.spans
    for span in audio.spans:  # each is some redacted words' time, padded
        assert span.channel == 0
        assert (
            any(
                span.start <= w.start - PADDING + 0.001 and w.end + PADDING - 0.001 <= span.end
                for w in words
            )
            or span.start == 0.0
        )
    assert len(rewritten) == len(original)
    before, after = samples(original), samples(rewritten)
    assert np.array_equal(after[:, 1], before[:, 1])  # the agent's channel
    inside = np.zeros(len(before), dtype=bool)
    for span in audio.spans:
        piece = slice(int(span.start * 8000), int(np.ceil(span.end * 8000)))
        inside[piece] = True
        assert np.count_nonzero(after[piece, 0] != before[piece, 0]) > 0.9 * (
            piece.stop - piece.start
        )
    assert np.array_equal(after[~inside, 0], before[~inside, 0])
    header = len(original) - before.size * 2
    assert rewritten[:header] == original[:header]
