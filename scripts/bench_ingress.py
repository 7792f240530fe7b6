"""Benchmark: how fast the ingress answers signed Twilio webhooks with a real broker behind it.

Starts a Tansu broker (in memory) and the ingress on free local ports, posts N distinct
recording callbacks (each answered only once Kafka acknowledged its event), then the same N
again (Twilio's retries: answered from the dedupe table), and prints latency percentiles.

    .venv/bin/python scripts/bench_ingress.py [N] [CONCURRENCY]
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn
from twilio.request_validator import RequestValidator

from callpipe.bootstrap import ingress_app
from callpipe.stack import tansu_binary
from shared.settings import Settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main(count: int, concurrency: int) -> None:
    broker_port = free_port()
    url = f"tcp://127.0.0.1:{broker_port}"
    broker = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)  # the broker binds its port
        asyncio.run(bench(broker_port, count, concurrency))
    finally:
        broker.terminate()
        broker.wait()


async def bench(broker_port: int, count: int, concurrency: int) -> None:
    ingress_port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        base = f"http://127.0.0.1:{ingress_port}"
        settings = Settings(
            data_dir=Path(data_dir),
            kafka_bootstrap=f"127.0.0.1:{broker_port}",
            public_base_url=base,
        )
        server = uvicorn.Server(
            uvicorn.Config(ingress_app(settings), port=ingress_port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
        callback = f"{base}/twilio/recording-status"
        forms = [
            {
                "AccountSid": settings.twilio_account_sid,
                "CallSid": "CA" + secrets.token_hex(16),
                "RecordingSid": "RE" + secrets.token_hex(16),
                "RecordingStatus": "completed",
                "RecordingUrl": "https://api.twilio.com/recording",
                "RecordingChannels": "2",
            }
            for _ in range(count)
        ]
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=30) as client:

            async def post(form: dict[str, str]) -> float:
                signature = validator.compute_signature(callback, form)
                async with limit:
                    started = time.perf_counter()
                    answer = await client.post(
                        callback, data=form, headers={"X-Twilio-Signature": signature}
                    )
                    assert answer.status_code == 204, answer.text
                    return time.perf_counter() - started

            for label in ("new events", "retries (duplicates)"):
                started = time.perf_counter()
                latencies = sorted(await asyncio.gather(*(post(f) for f in forms)))
                elapsed = time.perf_counter() - started
                p50 = statistics.median(latencies) * 1000
                p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
                print(
                    f"{label:22} {count} webhooks, concurrency {concurrency}: "
                    f"{count / elapsed:7.0f}/s  p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  "
                    f"max {latencies[-1] * 1000:6.1f} ms"
                )
        server.should_exit = True
        await serving


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 500, int(sys.argv[2]) if len(sys.argv) > 2 else 8
    )
