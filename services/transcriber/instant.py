"""The instant backend, for benchmarks and chaos runs only: no decoding, no model.

It answers every recording with one fixed caller utterance, so a run measures callpipe's own
work (Kafka hops, object store, status table) rather than the speech model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.transcriber.audio import FileTranscription, Samples, TranscriptionBackend
from services.transcriber.core import ChannelResult, RecognisedSegment, SpeechSpan

INSTANT_TEXT = "Hello, I need a plumber in Springfield tomorrow morning."


_NO_SAMPLES: Samples = np.zeros(0, dtype=np.float32)


class InstantBackend:
    name = "instant"
    model = "none"

    def transcribe(self, audio: Samples, speech: list[SpeechSpan]) -> ChannelResult:
        return _instant_channel()


def transcribe_instantly(
    backend: TranscriptionBackend, path: Path, channels: int
) -> FileTranscription:
    """Stands in for `audio.transcribe_file`: no decoding and no voice detection either."""
    results = [backend.transcribe(_NO_SAMPLES, [])] + [ChannelResult()] * (channels - 1)
    return FileTranscription(results, duration_seconds=1.0 if path.stat().st_size else 0.0)


def _instant_channel() -> ChannelResult:
    return ChannelResult((RecognisedSegment(0.0, 1.0, INSTANT_TEXT, avg_logprob=-0.1),), "en")
