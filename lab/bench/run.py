"""`callpipe bench`: every figure in one run, on a stack of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from callpipe.bootstrap import freeze_startup_objects
from callpipe.stack import Stack
from lab.bench.baseline import baseline_calls_per_s
from lab.bench.cpu import CpuSnapshot, stack_ms
from lab.bench.drain import wait_until_drained
from lab.bench.kafka_hops import raw_kafka_hops_per_s
from lab.bench.load import LoadResult
from lab.bench.pipeline import pipeline
from lab.bench.playback import playback_mb_per_s
from lab.bench.stack import bench_stack
from lab.bench.stats import Latencies, percentile, ratio
from lab.bench.status_api import call_list_at_rate, call_list_per_s, seed_calls
from lab.bench.twilio import businesses
from lab.bench.webhooks import webhooks_at_rate, webhooks_per_s
from lab.bench.whisper import whisper_rtf
from shared.settings import Settings

log = logging.getLogger(__name__)

WARM_UP_CALLS = 5
REQUEST_TIMEOUT_SECONDS = 30
# Each measurement starts once the workers have caught up with the previous one.
DRAIN_SECONDS = 60.0
# The measurements, in the order they run; `BenchConfig.phases` picks some of them.
PHASES = ("raw-kafka", "pipeline", "webhooks", "status-api", "playback", "whisper")


@dataclass(frozen=True)
class BenchConfig:
    port_offset: int = 0
    database_url: str = ""
    data_dir: Path | None = None  # kept afterwards; default: a temporary one, removed
    audio: str = "plumber_boston"
    # A business's downloads are capped (CALLPIPE_DOWNLOAD_SLOTS_PER_BUSINESS): calls are
    # spread over this many businesses, as a deployment serving many would see them.
    businesses: int = 10
    saturation_calls: int = 300
    # Offered rates of the latency runs, as fractions of the measured saturation rate...
    rate_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    # ...or as calls per second, when given.
    rates: tuple[float, ...] = ()
    rate_seconds: float = 5.0
    call_timeout_seconds: float = 60.0
    baseline_calls: int = 100
    kafka_messages: int = 5000
    webhook_rate: float = 500.0
    webhook_seconds: float = 5.0
    webhook_count: int = 2000
    status_calls: int = 100_000
    status_rate: float = 300.0
    status_seconds: float = 5.0
    status_count: int = 1000
    playback_mb: float = 20.0
    playback_runs: int = 3
    whisper_samples: tuple[str, ...] = ("plumber_boston", "electrician_denver")
    whisper_runs: int = 1
    phases: tuple[str, ...] = PHASES


@dataclass
class LoadPoint:
    offered_per_s: float
    achieved_per_s: float
    errors: int
    latency: Latencies | None  # None when no call got through
    # CPU of the stack's processes (not the bench's) per call that got through (decision 0920)
    cpu_ms_per_call: float | None = None


@dataclass
class BenchResult:
    figures: dict[str, float | None] = field(default_factory=dict)
    pipeline_load: list[LoadPoint] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # measurement → why it failed
    about: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.figures,
            "pipeline_load": [asdict(point) for point in self.pipeline_load],
            "failures": self.failures,
            "about": self.about,
        }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} vCPU {model}, {memory_kb / 1024**2:.0f} GB RAM, {platform.system()}"


def _ms(load: LoadResult, fraction: float) -> float | None:
    return round(percentile(load.latencies, fraction) * 1000, 2) if load.latencies else None


def _per_s(load: LoadResult) -> float:
    return round(load.achieved_per_s, 1)


async def _pipeline(
    config: BenchConfig, stack: Stack, http: aiohttp.ClientSession, result: BenchResult
) -> None:
    settings, figures = stack.settings, result.figures
    business_ids = businesses(settings, config.businesses)
    async with pipeline(
        settings, http, config.audio, config.call_timeout_seconds, business_ids
    ) as calls:
        await calls.saturate(WARM_UP_CALLS)
        await wait_until_drained(settings, DRAIN_SECONDS)
        cpu_before = CpuSnapshot.of(stack)
        saturation = await calls.saturate(config.saturation_calls)
        cpu = CpuSnapshot.of(stack).ms_each_since(cpu_before, config.saturation_calls)
        figures["pipeline_calls_per_s"] = _per_s(saturation)
        figures["pipeline_cpu_ms_per_call"] = stack_ms(cpu)
        result.about["pipeline_cpu_ms_per_call_by_process"] = cpu
        figures["pipeline_errors"] = saturation.errors
        rates = config.rates or tuple(
            round(max(1.0, saturation.achieved_per_s * fraction), 1)
            for fraction in config.rate_fractions
        )
        for rate in rates:
            await wait_until_drained(settings, DRAIN_SECONDS)
            log.info("pipeline at %.1f calls/s", rate)
            cpu_before = CpuSnapshot.of(stack)
            load = await calls.at_rate(rate, config.rate_seconds)
            cpu = CpuSnapshot.of(stack).ms_each_since(cpu_before, len(load.latencies))
            result.pipeline_load.append(
                LoadPoint(
                    rate,
                    _per_s(load),
                    load.errors,
                    Latencies.of(load.latencies),
                    stack_ms(cpu),
                )
            )
    half = min(
        result.pipeline_load,
        key=lambda point: abs(point.offered_per_s - saturation.achieved_per_s / 2),
    )
    figures["pipeline_p50_ms"] = half.latency.p50_ms if half.latency else None
    figures["pipeline_p95_ms"] = half.latency.p95_ms if half.latency else None
    figures["pipeline_latency_at_per_s"] = half.offered_per_s
    await wait_until_drained(settings, DRAIN_SECONDS)
    log.info("baseline")
    baseline = await baseline_calls_per_s(
        settings, http, config.audio, config.baseline_calls, business_ids
    )
    figures["baseline_calls_per_s"] = round(baseline, 1)
    figures["pipeline_vs_baseline"] = ratio(saturation.achieved_per_s, baseline)


async def _webhooks(
    config: BenchConfig, settings: Settings, http: aiohttp.ClientSession, result: BenchResult
) -> None:
    figures = result.figures
    most = await webhooks_per_s(settings, http, config.webhook_count)
    figures["webhooks_per_s"] = _per_s(most)
    # The latency at the offered rate, not while the stack still digests the burst above.
    await wait_until_drained(settings, DRAIN_SECONDS)
    hooks = await webhooks_at_rate(settings, http, config.webhook_rate, config.webhook_seconds)
    figures["webhook_p99_ms"] = _ms(hooks, 0.99)
    figures["webhook_offered_per_s"] = config.webhook_rate
    figures["webhook_achieved_per_s"] = _per_s(hooks)
    figures["webhook_errors"] = most.errors + hooks.errors


async def _status_api(
    config: BenchConfig, settings: Settings, http: aiohttp.ClientSession, result: BenchResult
) -> None:
    figures = result.figures
    await seed_calls(settings, config.status_calls)
    figures["status_api_calls_in_table"] = config.status_calls
    most = await call_list_per_s(settings, http, config.status_count)
    figures["status_api_rps"] = _per_s(most)
    listing = await call_list_at_rate(settings, http, config.status_rate, config.status_seconds)
    figures["status_api_p95_ms"] = _ms(listing, 0.95)
    figures["status_api_offered_rps"] = config.status_rate
    figures["status_api_achieved_rps"] = _per_s(listing)
    figures["status_api_errors"] = most.errors + listing.errors


async def _playback(
    config: BenchConfig, settings: Settings, http: aiohttp.ClientSession, result: BenchResult
) -> None:
    player_mb, s3_mb = await playback_mb_per_s(
        settings, http, config.playback_mb, config.playback_runs
    )
    result.figures["playback_mb_per_s"] = round(player_mb, 1)
    result.figures["s3_direct_mb_per_s"] = round(s3_mb, 1)
    result.figures["playback_vs_s3"] = ratio(player_mb, s3_mb)


async def run_bench(config: BenchConfig) -> BenchResult:
    result = BenchResult()
    result.about = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "loadavg_before": loadavg(),
        "config": {
            name: str(value) if isinstance(value, Path) else value
            for name, value in asdict(config).items()
            if name != "database_url"  # may hold a password
        },
    }
    started = time.perf_counter()

    async def phase(name: str, measure: Coroutine[Any, Any, None], settings: Settings) -> None:
        """One measurement, once the workers caught up with the one before; if it fails, the
        others still run and the reason is reported."""
        try:
            await wait_until_drained(settings, DRAIN_SECONDS)
            log.info("measuring: %s", name)
            await measure
        except Exception as error:
            log.exception("%s failed", name)
            result.failures[name] = repr(error)
            measure.close()  # not started if waiting for the workers failed

    async with bench_stack(config.port_offset, config.database_url, config.data_dir) as stack:
        settings = stack.settings
        result.about["database"] = settings.database_url.split("://", 1)[0]
        result.about["broker_log"] = settings.local.broker_storage
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
        ) as http:
            if "raw-kafka" in config.phases:
                await phase("raw Kafka hops", _raw_kafka(config, settings, result), settings)
            if "pipeline" in config.phases:
                await phase(
                    "pipeline and baseline", _pipeline(config, stack, http, result), settings
                )
            if "webhooks" in config.phases:
                await phase("webhooks", _webhooks(config, settings, http, result), settings)
            if "status-api" in config.phases:
                await phase("status API", _status_api(config, settings, http, result), settings)
            if "playback" in config.phases:
                await phase("playback", _playback(config, settings, http, result), settings)
        if "whisper" in config.phases:
            await phase("Whisper", _whisper(config, stack, result), settings)
    result.about["loadavg_after"] = loadavg()
    result.about["seconds"] = round(time.perf_counter() - started, 1)
    return result


async def _raw_kafka(config: BenchConfig, settings: Settings, result: BenchResult) -> None:
    hops = await raw_kafka_hops_per_s(settings, config.kafka_messages)
    result.figures["raw_kafka_hops_per_s"] = round(hops, 1)


async def _whisper(config: BenchConfig, stack: Stack, result: BenchResult) -> None:
    direct, through = await whisper_rtf(stack, list(config.whisper_samples), config.whisper_runs)
    result.figures["whisper_rtf_direct"] = round(direct, 4)
    result.figures["whisper_rtf_pipeline"] = round(through, 4)
    result.figures["whisper_pipeline_vs_direct"] = ratio(through, direct)


def run(config: BenchConfig) -> BenchResult:
    # The client's own full collections would show as the stack's latency (decision 0916).
    freeze_startup_objects()
    return asyncio.run(run_bench(config))
