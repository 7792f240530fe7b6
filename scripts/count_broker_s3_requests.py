"""Counts the broker's (Tansu's) requests to the object store by method and key kind, while
idle and per call, on the bench's stack. Decision 0911 holds the tables this printed.

    .venv/bin/python scripts/count_broker_s3_requests.py [--port-offset N] [--calls 20]

The broker is pointed at a pass-through proxy in front of the S3 server that notes each
request line (method, key, query) and forwards the bytes untouched (the Host header is kept,
so the signatures stay valid). After a warm-up it prints the requests of `--idle-seconds`
idle seconds, then those of `--calls` calls sent one after another (each visible in the
player before the next) or, with `--at-once`, offered as fast as the ingress takes them; per
call and with the idle rate taken out.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp

from callpipe.bench.drain import wait_until_drained
from callpipe.bench.pipeline import pipeline
from callpipe.bench.s3_proxy import Forward, start_proxy
from callpipe.bench.stack import PORT_SHIFT, bench_stack
from callpipe.bench.twilio import businesses
from callpipe.stack import Child

# Clear of the ports the bench's S3 server takes (its S3 port + 0, 555, 1000, 1007, 1020).
PROXY_PORT_ABOVE_S3 = 1066
NUMBERS = re.compile(r"\d+|[0-9a-f]{8}-[0-9a-f-]{27}")

seen: Counter[tuple[str, str]] = Counter()


def kind_of(method: str, target: str) -> tuple[str, str]:
    """(method, key pattern): digits and UUIDs folded, LIST requests named by their prefix."""
    url = urlsplit(target)
    query = parse_qs(url.query)
    if method == "GET" and "list-type" in query:
        prefix = query.get("prefix", [""])[0]
        return "LIST", NUMBERS.sub("N", unquote(prefix)) + "*"
    key = unquote(url.path).split("/", 2)[-1]
    return method, NUMBERS.sub("N", key)


def note(method: str, target: str) -> Forward:
    seen[kind_of(method, target)] += 1
    return Forward()


def broker_through(proxy_url: str) -> Callable[[Child], None]:
    """Tells the bench's broker to reach the S3 server through the proxy."""

    def adjust(child: Child) -> None:
        if child.name == "broker":
            child.env["AWS_ENDPOINT"] = proxy_url

    return adjust


def kafka_operation(method: str, key: str) -> str:
    """The Kafka request behind an object-store request (from Tansu's dynostore)."""
    if "/records/" in key:
        return {"PUT": "produce: the batch", "LIST": "fetch: list", "GET": "fetch: the batch"}[
            method
        ]
    if key.endswith("watermark.json"):
        return "produce: watermark" if method == "PUT" else "fetch/list offsets: watermark"
    if "/offsets/" in key:
        return "offset commit: per partition"
    if "/groups/" in key:
        return "group: offset commit, heartbeat, join/sync"
    return f"other: {method} {key}"


def show(title: str, counts: Counter[tuple[str, str]], per: float, unit: str) -> None:
    print(f"{title}: {sum(counts.values())} requests, {sum(counts.values()) / per:.2f} {unit}")
    by_operation: Counter[str] = Counter()
    for (method, key), count in counts.items():
        by_operation[kafka_operation(method, key)] += count
    for operation, count in sorted(by_operation.items()):
        print(f"  {operation:45} {count / per:7.2f} {unit}")
    for (method, key), count in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"  {method:6} {key:70} {count:6}  {count / per:7.2f} {unit}")


async def main(port_offset: int, calls: int, idle_seconds: float, at_once: bool) -> None:
    s3_port = 8333 + PORT_SHIFT + port_offset
    proxy_port = s3_port + PROXY_PORT_ABOVE_S3
    proxy = await start_proxy(proxy_port, s3_port, note)
    through_proxy = broker_through(f"http://127.0.0.1:{proxy_port}")
    async with (
        bench_stack(port_offset, adjust_child=through_proxy) as stack,
        aiohttp.ClientSession() as http,
    ):
        settings = stack.settings
        async with pipeline(
            settings, http, "plumber_boston", 60.0, businesses(settings, 10)
        ) as through:
            await through.saturate(5)
            await wait_until_drained(settings, 60.0)
            idle_from = seen.copy()
            await asyncio.sleep(idle_seconds)
            idle = seen - idle_from
            show(f"idle, {idle_seconds:.0f} s", idle, idle_seconds, "/s")
            calls_from = seen.copy()
            started = time.monotonic()
            if at_once:
                await through.saturate(calls)
            else:
                for _ in range(calls):
                    await through.saturate(1)
            took = time.monotonic() - started
            during = seen - calls_from
            how = "offered at once" if at_once else "one after another"
            show(f"{calls} calls {how}, {took:.1f} s", during, calls, "/call")
            idle_share = Counter(
                {kind: round(count * took / idle_seconds) for kind, count in idle.items()}
            )
            show("the same, idle rate taken out", during - idle_share, calls, "/call")
    proxy.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--at-once", action="store_true", help="offer the calls all at once")
    arguments = parser.parse_args()
    asyncio.run(
        main(arguments.port_offset, arguments.calls, arguments.idle_seconds, arguments.at_once)
    )
