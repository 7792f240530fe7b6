"""LOCAL OPENAI SIMULATOR: for tests and the demo only, never used in production.

It plays the one part of the OpenAI API that callpipe talks to, over real HTTP:
`POST /v1/audio/transcriptions` (multipart upload; `json`, `text` or `verbose_json` answers
with segments and, on request, words), transcribing with the bundled Whisper model like a
compatible server would. It refuses uploads over its size limit (413) and undecodable files
(400), and answers queued faults (429 with Retry-After, 5xx) before real answers, in OpenAI's
error format. Every request it received is kept, for tests to check what the client sent.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Form, Header, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from faster_whisper import WhisperModel, decode_audio

from services.transcriber.whisper import bundled_model_path

OPENAI_UPLOAD_LIMIT_BYTES = 25 * 1024 * 1024
# The API names the detected language in English.
LANGUAGE_NAMES = {"en": "english", "he": "hebrew", "es": "spanish", "ar": "arabic"}


@dataclass(frozen=True)
class ReceivedRequest:
    authorization: str
    fields: dict[str, list[str]]
    filename: str
    content_type: str
    size: int


@dataclass
class OpenAISimulator:
    max_upload_bytes: int = OPENAI_UPLOAD_LIMIT_BYTES
    received: list[ReceivedRequest] = field(default_factory=list)
    # HTTP statuses to answer the next requests with, in order, before real answers.
    faults: deque[int] = field(default_factory=deque)
    _model: WhisperModel | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def model(self) -> WhisperModel:
        with self._lock:
            if self._model is None:
                self._model = WhisperModel(bundled_model_path(), device="cpu", compute_type="int8")
            return self._model

    def transcribe(
        self, audio: bytes, language: str | None, words: bool, temperature: float
    ) -> dict[str, Any]:
        samples = decode_audio(io.BytesIO(audio), sampling_rate=16000)
        segments, info = self.model().transcribe(
            samples,
            language=language,
            temperature=temperature,
            word_timestamps=words,
            condition_on_previous_text=False,
        )
        segments = list(segments)
        answer: dict[str, Any] = {
            "task": "transcribe",
            "language": LANGUAGE_NAMES.get(info.language, info.language),
            "duration": round(len(samples) / 16000, 3),
            "text": "".join(s.text for s in segments).strip(),
            "segments": [
                {
                    "id": s.id,
                    "seek": s.seek,
                    "start": round(s.start, 2),
                    "end": round(s.end, 2),
                    "text": s.text,
                    "tokens": s.tokens,
                    "temperature": s.temperature or 0.0,
                    "avg_logprob": s.avg_logprob,
                    "compression_ratio": s.compression_ratio,
                    "no_speech_prob": s.no_speech_prob,
                }
                for s in segments
            ],
        }
        if words:
            answer["words"] = [
                {"word": w.word.strip(), "start": round(w.start, 2), "end": round(w.end, 2)}
                for s in segments
                for w in s.words or ()
            ]
        return answer


def _error(status: int, message: str, kind: str, **headers: str) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(simulator: OpenAISimulator) -> FastAPI:
    app = FastAPI(title="LOCAL OPENAI SIMULATOR (tests and demo only)")

    @app.post("/v1/audio/transcriptions", response_model=None)
    def transcriptions(
        file: UploadFile,
        model: Annotated[str, Form()],
        authorization: Annotated[str, Header()] = "",
        response_format: Annotated[str, Form()] = "json",
        language: Annotated[str | None, Form()] = None,
        temperature: Annotated[float, Form()] = 0.0,
        granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
    ) -> JSONResponse | PlainTextResponse | dict[str, Any]:
        audio = file.file.read()
        fields = {"model": [model], "response_format": [response_format]}
        if language:
            fields["language"] = [language]
        fields["temperature"] = [str(temperature)]
        fields["timestamp_granularities[]"] = granularities or []
        simulator.received.append(
            ReceivedRequest(
                authorization=authorization,
                fields=fields,
                filename=file.filename or "",
                content_type=file.content_type or "",
                size=len(audio),
            )
        )
        if simulator.faults:
            status = simulator.faults.popleft()
            if status == 429:
                return _error(429, "Rate limit reached", "requests", **{"retry-after-ms": "50"})
            return _error(status, "The server had an error", "server_error")
        if not authorization.startswith("Bearer ") or len(authorization) <= len("Bearer "):
            return _error(401, "You didn't provide an API key.", "invalid_request_error")
        if len(audio) > simulator.max_upload_bytes:
            limit = simulator.max_upload_bytes
            return _error(413, f"Maximum content size limit ({limit}) exceeded", "server_error")
        try:
            answer = simulator.transcribe(
                audio, language, "word" in (granularities or []), temperature
            )
        except Exception:  # PyAV raises many types for a corrupt file
            return _error(400, "Invalid file format.", "invalid_request_error")
        if response_format == "text":
            return PlainTextResponse(answer["text"])
        if response_format == "json":
            return {"text": answer["text"]}
        return answer

    return app
