"""Redaction of the recording: where (the core's spans) and how (the WAV rewrite)."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from services.transcriber import core
from services.transcriber.redact_audio import UnredactableAudio, redact_wav
from shared.events import derived_event_id
from shared.redaction.kinds import EntityKind
from shared.transcript import (
    AudioRedaction,
    AudioSpan,
    RedactedSpan,
    Redaction,
    Transcript,
    Utterance,
)
from tests.support import events as factories


def redacted(start: float, end: float, channel: int = 0) -> RedactedSpan:
    return RedactedSpan(
        kind=EntityKind.CARD, start=start, end=end, speaker="caller", channel=channel
    )


def test_spans_are_padded_on_their_own_channel_and_overlaps_merged() -> None:
    spans = [redacted(5.0, 6.0), redacted(6.3, 7.0), redacted(5.5, 6.2, channel=1)]
    assert core.audio_spans(spans, 0.25, 30.0) == [
        AudioSpan(channel=0, start=4.75, end=7.25),  # 6.25 and 6.05 overlap: one span
        AudioSpan(channel=1, start=5.25, end=6.45),
    ]


def test_spans_apart_stay_apart_and_padding_stops_at_the_recording_s_ends() -> None:
    spans = [redacted(9.8, 10.0), redacted(0.1, 1.0), redacted(3.0, 4.0)]
    assert core.audio_spans(spans, 0.5, 10.2) == [
        AudioSpan(channel=0, start=0.0, end=1.5),
        AudioSpan(channel=0, start=2.5, end=4.5),
        AudioSpan(channel=0, start=9.3, end=10.2),
    ]


def test_the_audio_redaction_names_the_recording_and_the_sound() -> None:
    redaction = Redaction(kinds=[EntityKind.CARD], spans=[redacted(1.0, 2.0)])
    audio = core.audio_redaction("biz/2026-12-08/CA1/RE1.wav", redaction, "silence", 0.25, 5.0)
    assert audio.object_key == "biz/2026-12-08/CA1/RE1.wav" and audio.sound == "silence"
    assert audio.padding_seconds == 0.25
    assert audio.spans == [AudioSpan(channel=0, start=0.75, end=2.25)]


RATE = 8000


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.astype("<i2").tobytes())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as recording:
        frames = recording.readframes(recording.getnframes())
        return np.frombuffer(frames, "<i2").reshape(-1, recording.getnchannels())


def speech_like(seconds: float, channels: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(-8000, 8000, (int(seconds * RATE), channels))


@pytest.mark.parametrize("sound", ["tone", "silence"])
def test_only_the_span_on_its_channel_changes(tmp_path: Path, sound: str) -> None:
    path = tmp_path / "call.wav"
    original = speech_like(4.0, 2)
    write_wav(path, original)
    size = path.stat().st_size

    redact_wav(path, [AudioSpan(channel=0, start=1.0, end=1.5)], sound)  # type: ignore[arg-type]

    after = read_wav(path)
    assert path.stat().st_size == size
    inside = slice(1 * RATE, int(1.5 * RATE))
    assert np.array_equal(after[: 1 * RATE], original[: 1 * RATE])
    assert np.array_equal(after[int(1.5 * RATE) :], original[int(1.5 * RATE) :])
    assert np.array_equal(after[:, 1], original[:, 1])  # the other party's channel
    if sound == "silence":
        assert not after[inside, 0].any()
    else:
        assert np.abs(after[inside, 0]).max() == pytest.approx(0.1 * 32767, abs=2)
        assert np.count_nonzero(after[inside, 0] == original[inside, 0]) < RATE * 0.01


def test_every_byte_outside_the_spans_is_kept_with_other_chunks(tmp_path: Path) -> None:
    samples = speech_like(2.0, 1).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, RATE * 2, 2, 16)
    info = b"LIST" + struct.pack("<I", 9) + b"INFOtest!" + b"\x00"  # odd length, padded
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + info
    body += b"data" + struct.pack("<I", len(samples)) + samples
    path = tmp_path / "mono.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    before = path.read_bytes()

    redact_wav(path, [AudioSpan(channel=0, start=0.5, end=0.75)], "tone")

    after = path.read_bytes()
    data = len(before) - len(samples)
    first, last = data + int(0.5 * RATE) * 2, data + int(0.75 * RATE) * 2
    assert len(after) == len(before)
    assert after[:first] == before[:first] and after[last:] == before[last:]
    assert after[first:last] != before[first:last]


def test_a_span_past_the_end_is_cut_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    original = speech_like(1.0, 1)
    write_wav(path, original)
    redact_wav(path, [AudioSpan(channel=0, start=0.9, end=3.0)], "silence")
    after = read_wav(path)
    assert len(after) == len(original) and not after[int(0.9 * RATE) :].any()
    assert np.array_equal(after[: int(0.9 * RATE)], original[: int(0.9 * RATE)])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"ID3\x03\x00" + bytes(200), "not a RIFF WAVE file"),
        (
            b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00"
            + struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
            + b"data\x00\x00\x00\x00",
            "format 7",
        ),
    ],
    ids=["mp3", "mu-law"],
)
def test_audio_that_cannot_be_rewritten_sample_for_sample_is_refused(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "call.audio"
    path.write_bytes(content)
    with pytest.raises(UnredactableAudio, match=problem):
        redact_wav(path, [AudioSpan(channel=0, start=0.0, end=1.0)], "tone")
    assert path.read_bytes() == content


def test_a_span_on_a_channel_the_recording_lacks_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    write_wav(path, speech_like(1.0, 1))
    with pytest.raises(UnredactableAudio, match="no channel 2"):
        redact_wav(path, [AudioSpan(channel=1, start=0.0, end=0.5)], "tone")


def test_transcript_ready_says_what_the_stored_transcript_says() -> None:
    source = factories.recording_downloaded(redact=[EntityKind.CARD, EntityKind.NUMBER])
    audio = AudioRedaction(
        object_key=source.object_key,
        sound="tone",
        padding_seconds=0.25,
        spans=[AudioSpan(channel=0, start=0.75, end=2.25)],
    )
    transcript = Transcript(
        call_sid=source.call_sid,
        recording_sid=source.recording_sid,
        language="en",
        duration_seconds=3.0,
        speakers=["caller", "agent"],
        utterances=[
            Utterance(
                speaker="caller", start=1.0, end=2.0, text="My card is [card].", confidence=0.9,
                words=[],
            )
        ],
        model="tiny.en",
        redaction=Redaction(
            kinds=[EntityKind.CARD, EntityKind.NUMBER],
            counts={EntityKind.CARD: 1},
            spans=[redacted(1.0, 2.0)],
            audio=audio,
        ),
    )  # fmt: skip
    ready = core.transcript_ready(source, transcript, "biz-1/CA1/RE1.transcript.json")
    assert ready.event_id == derived_event_id(source.event_id, "transcript.ready")
    assert ready.outcome == "transcribed" and ready.preview == "Caller: My card is [card]."
    assert ready.transcript_key == "biz-1/CA1/RE1.transcript.json"
    assert ready.redaction is not None and ready.redaction.counts == {EntityKind.CARD: 1}
    assert ready.redact == [EntityKind.CARD, EntityKind.NUMBER]
    assert ready.audio_redaction == audio
