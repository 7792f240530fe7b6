"""The local backend (faster-whisper, bundled tiny.en) on the committed espeak-ng recordings.

Word error rates measured with tiny.en, int8, on these 8 kHz samples: 0.22 over all of them
(plumber_boston 0.17 / 0.12, electrician_denver 0.35 / 0.31 caller / agent, voicemail 0.14).
Decoding is greedy at temperature 0, so the figures repeat; the bounds leave a little room.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from callpipe.twilio_simulator.samples import sample_path
from services.transcriber import core
from services.transcriber.audio import UndecodableAudio, transcribe_file
from services.transcriber.whisper import LocalWhisperBackend
from tests.support.transcriber import Sample, sample, word_error_rate

OVERALL_WER_BOUND = 0.25
SPEAKER_WER_BOUND = 0.40
SAMPLES = [sample("plumber_boston", 2), sample("electrician_denver", 2)]
VOICEMAIL = sample("voicemail_austin", 1)


def transcribe(backend: LocalWhisperBackend, recording: Sample) -> list[tuple[str, str]]:
    result = transcribe_file(backend, recording.path, recording.channels)
    labels = core.SpeakerMapping().labels(recording.channels, "inbound")
    segments = core.labelled_segments(result.channels, labels)
    return [(turn.speaker, turn.text) for turn in core.turns(segments)]


@pytest.mark.parametrize("recording", SAMPLES, ids=lambda s: s.name)
def test_two_channels_come_back_as_two_speakers_in_the_order_they_spoke(
    local_backend: LocalWhisperBackend, recording: Sample
) -> None:
    turns = transcribe(local_backend, recording)
    assert [who for who, _ in turns] == [who for who, _ in recording.turns]
    for speaker in ("caller", "agent"):
        said = " ".join(text for who, text in turns if who == speaker)
        assert word_error_rate([recording.said_by(speaker)], [said]) <= SPEAKER_WER_BOUND, said


def test_word_error_rate_over_the_committed_samples_is_bounded(
    local_backend: LocalWhisperBackend,
) -> None:
    references: list[str] = []
    hypotheses: list[str] = []
    for recording in [*SAMPLES, VOICEMAIL]:
        turns = transcribe(local_backend, recording)
        for speaker in dict.fromkeys(who for who, _ in recording.turns):
            references.append(recording.said_by(speaker))
            hypotheses.append(" ".join(text for who, text in turns if who == speaker))
    assert word_error_rate(references, hypotheses) <= OVERALL_WER_BOUND


def test_the_words_are_on_the_right_channel(local_backend: LocalWhisperBackend) -> None:
    turns = transcribe(local_backend, SAMPLES[0])
    caller = " ".join(text for who, text in turns if who == "caller").lower()
    agent = " ".join(text for who, text in turns if who == "agent").lower()
    assert "kitchen" in caller and "boston" in caller
    assert "kitchen" not in agent and "thank you for calling" in agent
    assert "tomorrow morning" in agent and "tomorrow" not in caller


def test_a_mono_recording_is_one_speaker(local_backend: LocalWhisperBackend) -> None:
    turns = transcribe(local_backend, VOICEMAIL)
    assert {who for who, _ in turns} == {"speaker"}
    assert "austin" in " ".join(text for _, text in turns).lower()


def test_segments_carry_times_confidence_words_and_language(
    local_backend: LocalWhisperBackend,
) -> None:
    result = transcribe_file(local_backend, SAMPLES[0].path, 2)
    segments = core.labelled_segments(result.channels, ["caller", "agent"])
    assert result.duration_seconds == pytest.approx(13.07, abs=0.05)
    assert all(0 <= s.start < s.end <= result.duration_seconds + 0.5 for s in segments)
    assert all(0 < s.confidence <= 1 and s.words for s in segments)
    assert [s.start for s in segments] == sorted(s.start for s in segments)
    assert core.language(None, result.channels) == "en"


def test_silence_gives_no_segments_at_all(local_backend: LocalWhisperBackend) -> None:
    result = transcribe_file(local_backend, sample_path("silence"), 2)
    assert result.channels == [core.ChannelResult(), core.ChannelResult()]
    assert result.duration_seconds == pytest.approx(4.0)


def test_a_corrupt_file_cannot_be_decoded(
    local_backend: LocalWhisperBackend, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x10\x00\x00WAVEfmt " + bytes(range(256)) * 16)
    with pytest.raises(UndecodableAudio):
        transcribe_file(local_backend, corrupt, 2)


@pytest.mark.parametrize("noise", ["hiss", "mains hum"])
def test_noise_without_speech_gives_no_segments(
    local_backend: LocalWhisperBackend, tmp_path: Path, noise: str
) -> None:
    # Ungated, tiny.en answers " ." on the hum: the voice-activity gate keeps it from Whisper.
    rate, seconds = 8000, 8
    rng = np.random.default_rng(7)
    signal = rng.normal(0, 0.02, (rate * seconds, 2))
    if noise == "mains hum":
        hum = 0.1 * np.sin(2 * np.pi * 50 * np.arange(rate * seconds) / rate)
        signal = rng.normal(0, 0.01, (rate * seconds, 2)) + hum[:, None]
    path = tmp_path / "noise.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())
    result = transcribe_file(local_backend, path, 2)
    assert result.channels == [core.ChannelResult(), core.ChannelResult()]
