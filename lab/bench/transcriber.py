"""`callpipe bench transcriber`: the local backend's real-time factor (processing time over
audio time, lower is faster), called directly in this process and through the running
pipeline, on the same recordings, one at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from callpipe.simulate import place_call, wait_for_call
from callpipe.twilio_simulator.samples import audio_facts
from services.transcriber.audio import transcribe_file
from services.transcriber.whisper import LocalWhisperBackend
from shared.events import Stage
from shared.settings import Settings

CALL_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True)
class Measurement:
    audio_seconds: float
    processing_seconds: float

    @property
    def real_time_factor(self) -> float:
        return self.processing_seconds / self.audio_seconds


def total(measurements: list[Measurement]) -> Measurement:
    return Measurement(
        sum(m.audio_seconds for m in measurements),
        sum(m.processing_seconds for m in measurements),
    )


def local_backend(settings: Settings) -> LocalWhisperBackend:
    return LocalWhisperBackend(
        settings.transcriber.whisper_model,
        settings.transcriber.whisper_compute_type,
        settings.transcriber.whisper_threads,
        settings.transcriber.whisper_language,
    )


def direct(backend: LocalWhisperBackend, path: Path) -> Measurement:
    """Decoding, the voice-activity gate and Whisper, as the transcriber's pool runs them."""
    started = time.perf_counter()
    result = transcribe_file(backend, path, audio_facts(path)[0])
    return Measurement(result.duration_seconds, time.perf_counter() - started)


async def through_pipeline(settings: Settings, path: Path) -> Measurement:
    """One call on the running stack: the time from the transcriber taking the recording
    (`stage.started`) to its `transcript.ready`, which includes fetching the audio from S3
    and storing the transcript."""
    call_sid = await place_call(settings, str(path))
    call = await wait_for_call(settings, call_sid, CALL_TIMEOUT_SECONDS)
    return Measurement(audio_facts(path)[1], _transcriber_seconds(call))


async def compare(
    settings: Settings, samples: list[Path], runs: int
) -> tuple[Measurement, Measurement]:
    """Both ways on the same recordings, one at a time, alternating so that load from
    elsewhere on the machine falls on both alike; one warm-up each way is not counted."""
    backend = local_backend(settings)
    direct(backend, samples[0])
    await through_pipeline(settings, samples[0])
    direct_runs: list[Measurement] = []
    pipeline_runs: list[Measurement] = []
    for _ in range(runs):
        for path in samples:
            direct_runs.append(direct(backend, path))
            pipeline_runs.append(await through_pipeline(settings, path))
    return total(direct_runs), total(pipeline_runs)


def _transcriber_seconds(call: dict[str, Any]) -> float:
    def at(event_type: str, stage: str | None) -> datetime:
        return next(
            datetime.fromisoformat(e["occurred_at"])
            for e in call["timeline"]
            if e["event_type"] == event_type and e["stage"] == stage
        )

    started = at("stage.started", Stage.TRANSCRIPT.value)
    return (at("transcript.ready", None) - started).total_seconds()


def report(direct_run: Measurement, pipeline_run: Measurement) -> str:
    overhead = pipeline_run.real_time_factor / direct_run.real_time_factor - 1
    rows = [
        ("", "audio s", "processing s", "real-time factor"),
        ("direct", *_figures(direct_run)),
        ("pipeline", *_figures(pipeline_run)),
    ]
    table = "\n".join(f"{a:<10}{b:>10}{c:>14}{d:>18}" for a, b, c, d in rows)
    return f"{table}\npipeline vs direct: {overhead:+.1%}"


def _figures(measurement: Measurement) -> tuple[str, str, str]:
    return (
        f"{measurement.audio_seconds:.1f}",
        f"{measurement.processing_seconds:.2f}",
        f"{measurement.real_time_factor:.3f}",
    )
