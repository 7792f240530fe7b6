"""Counts the object-store requests of calls through the bench's stack, by bucket, method and
status, from the S3 server's own Prometheus counters (`SeaweedFS_s3_request_total`; it counts
a HEAD as a GET). Decision 0910 holds the table this printed.

    .venv/bin/python scripts/count_s3_requests.py [--port-offset N] [--calls 20]

After a warm-up, prints the requests of 10 idle seconds (the broker's own traffic), then those
of `--calls` calls sent one after another (each visible in the player before the next).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable

import aiohttp

from callpipe.bench.drain import wait_until_drained
from callpipe.bench.pipeline import pipeline
from callpipe.bench.stack import PORT_SHIFT, bench_stack
from callpipe.bench.twilio import businesses
from callpipe.stack import Child

# Clear of the ports the bench's S3 server takes (its S3 port + 0, 555, 1000, 1007, 1020).
METRICS_PORT_ABOVE_S3 = 1064
IDLE_SECONDS = 10.0
REQUESTS = re.compile(r"^SeaweedFS_s3_request_total\{(?P<labels>.*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')

Counts = Counter[tuple[str, str, str]]


def with_metrics(port: int) -> Callable[[Child], None]:
    """Tells the bench's S3 server to serve its metrics on `port`."""

    def adjust(child: Child) -> None:
        if child.name == "s3":
            child.argv.append(f"-metricsPort={port}")

    return adjust


async def requests_so_far(http: aiohttp.ClientSession, port: int) -> Counts:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    counts: Counts = Counter()
    for line in text.splitlines():
        if found := REQUESTS.match(line):
            labels = dict(LABEL.findall(found["labels"]))
            key = (labels.get("bucket", "?"), labels.get("type", "?"), labels.get("code", "?"))
            counts[key] += int(float(found["value"]))
    return counts


def show(title: str, before: Counts, after: Counts, calls: int = 0) -> None:
    print(title)
    for (bucket, method, status), count in sorted((after - before).items()):
        per_call = f"  {count / calls:.2f} per call" if calls else ""
        print(f"  {bucket:12} {method:6} {status}  {count:6}{per_call}")


async def main(port_offset: int, calls: int) -> None:
    port = 8333 + PORT_SHIFT + port_offset + METRICS_PORT_ABOVE_S3
    async with (
        bench_stack(port_offset, adjust_child=with_metrics(port)) as stack,
        aiohttp.ClientSession() as http,
    ):
        settings = stack.settings
        async with pipeline(
            settings, http, "plumber_boston", 60.0, businesses(settings, 10)
        ) as through:
            await through.saturate(5)
            await wait_until_drained(settings, 60.0)
            idle_from = await requests_so_far(http, port)
            await asyncio.sleep(IDLE_SECONDS)
            show(f"idle, {IDLE_SECONDS:.0f} s:", idle_from, await requests_so_far(http, port))
            calls_from = await requests_so_far(http, port)
            started = time.monotonic()
            for _ in range(calls):
                await through.saturate(1)
            took = time.monotonic() - started
            after = await requests_so_far(http, port)
            show(f"{calls} calls one after another, {took:.1f} s:", calls_from, after, calls)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--calls", type=int, default=20)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.port_offset, arguments.calls))
