"""The local Whisper backend's real-time factor, called directly and through the pipeline
(`callpipe bench transcriber`'s measurement), on the benchmark's stack with its transcriber
switched to the local model for this part."""

from __future__ import annotations

from callpipe.stack import Stack
from callpipe.twilio_simulator.samples import sample_path
from lab.bench.transcriber import compare


async def whisper_rtf(stack: Stack, samples: list[str], runs: int) -> tuple[float, float]:
    """(direct, through the pipeline) real-time factors."""
    await stack.restart_child("transcriber", {"CALLPIPE_TRANSCRIBER_BACKEND": "local"})
    direct, through_pipeline = await compare(
        stack.settings, [sample_path(name) for name in samples], runs
    )
    return direct.real_time_factor, through_pipeline.real_time_factor
