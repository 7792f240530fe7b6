"""Benchmark: the webhook phase of `callpipe bench` alone, on the bench's own stack (S3-backed
broker, the ingress and the other services as processes), with the CPU each process used.

    .venv/bin/python scripts/bench_webhooks.py [--port-offset N] [--database-url URL]
        [--count 2000] [--rate 500] [--seconds 5] [--profile DIR] [--data-dir DIR]

Prints `webhooks_per_s` (32 at once), `webhook_p99_ms` at the offered rate, the load average
around the run, and the CPU time each process of the stack spent per webhook (the figure that
other people's load on the machine disturbs least). With --profile, py-spy records the
ingress during both parts (`DIR/ingress.txt`, raw: summarise with scripts/profile_top.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import aiohttp

from callpipe.bench.cpu import CpuSnapshot
from callpipe.bench.drain import wait_until_drained
from callpipe.bench.load import LoadResult
from callpipe.bench.run import loadavg
from callpipe.bench.stack import bench_stack
from callpipe.bench.stats import percentile
from callpipe.bench.webhooks import webhooks_at_rate, webhooks_per_s
from callpipe.bootstrap import freeze_startup_objects


def ms(load: LoadResult, fraction: float) -> float | None:
    return round(percentile(load.latencies, fraction) * 1000, 1) if load.latencies else None


async def bench(args: argparse.Namespace) -> dict[str, object]:
    async with bench_stack(args.port_offset, args.database_url, args.data_dir) as stack:
        ingress = next(c.process.pid for c in stack.children if c.name == "ingress" and c.process)
        spy = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"),
                "record", "-p", str(ingress), "-r", "100", "-f", "raw",
                "-o", str(args.profile / "ingress.txt"),
                stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(1)
        result: dict[str, object] = {"loadavg_before": loadavg()}
        cpu_before = CpuSnapshot.of(stack)
        started = time.perf_counter()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as http:
            most = await webhooks_per_s(stack.settings, http, args.count)
            await wait_until_drained(stack.settings, 60)
            hooks = await webhooks_at_rate(stack.settings, http, args.rate, args.seconds)
        elapsed = time.perf_counter() - started
        # Under other people's load the latencies say mostly how much CPU the machine had to
        # spare; the CPU each webhook cost says what the code costs.
        webhooks = args.count + round(args.rate * args.seconds)
        per_webhook = CpuSnapshot.of(stack).ms_each_since(cpu_before, webhooks)
        result["cpu_ms_per_webhook"] = per_webhook
        result["cpu_share"] = {
            name: round(ms * webhooks / 1000 / elapsed, 2) for name, ms in per_webhook.items()
        }
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            await spy.wait()
        result |= {
            "database": stack.settings.effective_database_url.split("://", 1)[0],
            "webhooks_per_s": round(most.achieved_per_s, 1),
            "webhooks_p50_ms_32_at_once": ms(most, 0.5),
            "webhook_p50_ms": ms(hooks, 0.5),
            "webhook_p99_ms": ms(hooks, 0.99),
            "webhook_offered_per_s": args.rate,
            "webhook_achieved_per_s": round(hooks.achieved_per_s, 1),
            "webhook_errors": most.errors + hooks.errors,
            "loadavg_after": loadavg(),
        }
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--data-dir", type=Path, help="kept afterwards (logs, database)")
    args = parser.parse_args()
    freeze_startup_objects()  # the client's full collections are not the ingress's latency
    print(json.dumps(asyncio.run(bench(args)), indent=1))


if __name__ == "__main__":
    main()
