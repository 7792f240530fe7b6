"""Audio in, speech out: decoding, the voice-activity gate and the backend port.

Blocking and CPU-heavy: callers run `transcribe_file` in a worker pool, never on the event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from faster_whisper import decode_audio
from faster_whisper.vad import VadOptions, get_speech_timestamps
from numpy.typing import NDArray

from services.transcriber.core import ChannelResult, SpeechSpan

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
Samples = NDArray[np.float32]
# Silero VAD, as faster-whisper runs it; short pauses inside a sentence stay inside its span.
VAD_OPTIONS = VadOptions(min_silence_duration_ms=500, speech_pad_ms=200)


class UndecodableAudio(Exception):
    """The file does not decode; the message says why."""


class TranscriptionBackend(Protocol):
    """Turns one channel of 16 kHz mono audio, known to hold speech, into segments."""

    name: str
    model: str

    def transcribe(self, audio: Samples, speech: list[SpeechSpan]) -> ChannelResult: ...


@dataclass(frozen=True)
class FileTranscription:
    channels: list[ChannelResult]
    duration_seconds: float


def decode(path: Path, channels: int) -> list[Samples]:
    """Each channel as 16 kHz mono float samples."""
    try:
        decoded = decode_audio(str(path), sampling_rate=SAMPLE_RATE, split_stereo=channels == 2)
    except Exception as error:  # PyAV raises many types for a corrupt file
        raise UndecodableAudio(str(error)) from error
    tracks = list(decoded) if channels == 2 else [decoded]
    if not any(len(track) for track in tracks):
        raise UndecodableAudio("no samples")
    return tracks


def speech_spans(audio: Samples) -> list[SpeechSpan]:
    return [
        SpeechSpan(span["start"], span["end"])
        for span in get_speech_timestamps(audio, VAD_OPTIONS, sampling_rate=SAMPLE_RATE)
    ]


def transcribe_file(backend: TranscriptionBackend, path: Path, channels: int) -> FileTranscription:
    """Every channel through the voice-activity gate: a channel without speech never reaches
    the recogniser, so silence cannot come back as invented text."""
    tracks = decode(path, channels)
    results: list[ChannelResult] = []
    for index, track in enumerate(tracks):
        speech = speech_spans(track)
        if not speech:
            log.info("channel %d: no speech detected", index + 1)
            results.append(ChannelResult())
            continue
        results.append(backend.transcribe(track, speech))
    return FileTranscription(results, max(len(t) for t in tracks) / SAMPLE_RATE)
