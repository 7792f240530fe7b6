"""The OpenAI backend: the audio transcription API (or any server that speaks it).

Each channel is uploaded on its own as 16-bit PCM WAV; a channel longer than the upload limit
allows is cut into chunks at pauses and the chunks' times are moved back into channel time.
"""

from __future__ import annotations

import io
import logging
import wave
from typing import Any

import numpy as np
import openai

from services.transcriber import core
from services.transcriber.audio import SAMPLE_RATE, Samples
from services.transcriber.core import ChannelResult, RecognisedSegment, SpeechSpan
from shared.retry import carry_out, describe
from shared.transcript import Word

log = logging.getLogger(__name__)

WAV_HEADER_BYTES = 44
BYTES_PER_SAMPLE = 2


def wav_bytes(audio: Samples) -> bytes:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(BYTES_PER_SAMPLE)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        language: str | None,
        max_upload_bytes: int,
    ) -> None:
        self.model = model
        self._client = client
        self._language = language or None
        self._chunk_samples = (max_upload_bytes - WAV_HEADER_BYTES) // BYTES_PER_SAMPLE

    def transcribe(self, audio: Samples, speech: list[SpeechSpan]) -> ChannelResult:
        chunks = core.plan_chunks(len(audio), speech, self._chunk_samples)
        if len(chunks) > 1:
            log.info("channel split into %d uploads", len(chunks))
        return core.joined(
            [
                core.shifted(self._transcribe_chunk(audio[start:end]), start / SAMPLE_RATE)
                for start, end in chunks
            ]
        )

    def _transcribe_chunk(self, audio: Samples) -> ChannelResult:
        optional: dict[str, Any] = {"language": self._language} if self._language else {}
        try:
            answer = self._client.audio.transcriptions.create(
                file=("audio.wav", wav_bytes(audio), "audio/wav"),
                model=self.model,
                response_format="verbose_json",
                timestamp_granularities=["segment", "word"],
                temperature=0.0,
                **optional,
            )
        except openai.APIStatusError as error:
            carry_out(core.api_failure(error.status_code, error.message))
        except openai.APIConnectionError as error:  # a timeout is one too
            carry_out(core.api_failure(None, describe(error)))
        words = answer.words or []
        # The API gives no per-word probability: words carry their segment's confidence.
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
                        Word(
                            start=w.start,
                            end=w.end,
                            text=" " + w.word.strip(),
                            probability=core.confidence(s.avg_logprob),
                        )
                        for w in words
                        if s.start <= (w.start + w.end) / 2 <= s.end
                    ),
                )
                for s in answer.segments or ()
            ),
            _language_code(answer.language),
        )


# verbose_json names the language in English ("english"); the transcript keeps ISO codes.
_LANGUAGE_CODES = {"english": "en", "hebrew": "he", "spanish": "es", "arabic": "ar"}


def _language_code(name: str | None) -> str | None:
    if not name:
        return None
    return _LANGUAGE_CODES.get(name.lower(), name.lower())
