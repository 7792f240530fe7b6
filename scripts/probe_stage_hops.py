"""Where a call's time goes, hop by hop: calls offered at a rate on the bench stack, and for
each worker and topic the mean time it spent handling an event (`callpipe_handle_seconds`)
and from the event's `occurred_at` to having handled it (`callpipe_stage_latency_seconds`),
read from the workers' own /metrics before and after (decisions 0918 and 0919), and the CPU
each process of the stack spent per call meanwhile (decision 0920). With --s3-cpu-profile
FILE the S3 server (SeaweedFS) writes its Go CPU profile there when the stack stops: read it
with `go tool pprof -top -cum .venv/bin/weed FILE` (Debian's golang-go).

    .venv/bin/python scripts/probe_stage_hops.py [--port-offset N] [--rate 25] [--seconds 8]
        [--s3-cpu-profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

from callpipe.bench.cpu import CpuSnapshot
from callpipe.bench.pipeline import pipeline
from callpipe.bench.stack import bench_stack
from callpipe.bench.stats import percentile
from callpipe.bench.twilio import businesses
from callpipe.stack import Child
from shared.settings import Settings

HISTOGRAMS = ("callpipe_handle_seconds", "callpipe_stage_latency_seconds")
Sample = tuple[str, str, str]  # histogram, worker, topic


def metrics_urls(settings: Settings) -> dict[str, str]:
    ports = {
        "downloader": settings.downloader_health_port,
        "transcriber": settings.transcriber_health_port,
        "extractor": settings.extractor_health_port,
        "player": settings.player_port,
    }
    return {worker: f"http://127.0.0.1:{port}/metrics" for worker, port in ports.items()}


def scrape(url: str) -> dict[tuple[Sample, str], float]:
    """(histogram, worker, topic) and sum or count → value."""
    values: dict[tuple[Sample, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            for histogram in HISTOGRAMS:
                for part in ("sum", "count"):
                    if sample.name == f"{histogram}_{part}":
                        key = (histogram, sample.labels["worker"], sample.labels["topic"])
                        values[(key, part)] = sample.value
    return values


async def main(port_offset: int, rate: float, seconds: float, s3_profile: str | None) -> None:
    def profile_s3(child: Child) -> None:
        if s3_profile and child.name == "s3":
            child.argv.insert(2, f"-cpuprofile={s3_profile}")  # weed mini's own flag

    async with bench_stack(port_offset, adjust_child=profile_s3) as stack:
        settings = stack.settings
        urls = metrics_urls(settings)
        async with (
            aiohttp.ClientSession() as http,
            pipeline(settings, http, "plumber_boston", 60.0, businesses(settings, 10)) as calls,
        ):
            await calls.saturate(20)  # warm-up
            await asyncio.sleep(3)
            before = {worker: scrape(url) for worker, url in urls.items()}
            cpu_before = CpuSnapshot.of(stack)
            load = await calls.at_rate(rate, seconds)
            cpu = CpuSnapshot.of(stack).ms_each_since(cpu_before, len(load.latencies))
            await asyncio.sleep(3)
            after = {worker: scrape(url) for worker, url in urls.items()}
    print(
        f"{rate:g} calls/s offered for {seconds:g} s: achieved {load.achieved_per_s:.1f}/s, "
        f"p50 {percentile(load.latencies, 0.5) * 1000:.0f} ms, "
        f"p95 {percentile(load.latencies, 0.95) * 1000:.0f} ms"
    )
    print("  CPU ms per call: " + ", ".join(f"{part} {ms}" for part, ms in cpu.items()))
    for worker in urls:
        for key in sorted({key for key, part in after[worker] if part == "sum"}):
            count = after[worker][(key, "count")] - before[worker].get((key, "count"), 0)
            if count:
                total = after[worker][(key, "sum")] - before[worker].get((key, "sum"), 0)
                what = "handling" if key[0] == HISTOGRAMS[0] else "occurred → handled"
                print(
                    f"  {worker:11} {key[2]:22} {what:19} {total / count * 1000:7.1f} ms"
                    f"  ({count:.0f} events)"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--s3-cpu-profile", help="where the S3 server writes its CPU profile")
    arguments = parser.parse_args()
    asyncio.run(
        main(arguments.port_offset, arguments.rate, arguments.seconds, arguments.s3_cpu_profile)
    )
