"""The downloader's handler alone, in this process, against the bench stack's real S3 server
and Twilio simulator: its CPU per call (this process, all its threads) and its SQL statements
per call (the slot leases), without Kafka or the other services. Decision 0913.

    .venv/bin/python scripts/bench_downloader.py [--port-offset N] [--calls 300]
        [--at-once 64] [--businesses 10] [--database-url URL] [--slot-idle-seconds S]

Calls go to the businesses in turn, `--at-once` of them in flight, after a warm-up of 20.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import event
from sqlalchemy.engine import Engine

from callpipe.bench.stack import bench_stack
from callpipe.bench.twilio import Recording, businesses, register_recordings
from callpipe.bootstrap import downloader_handler
from shared.events import RecordingCompleted
from shared.settings import Settings
from shared.storage import ObjectStore

WARM_UP_CALLS = 20

statements: Counter[str] = Counter()


@event.listens_for(Engine, "before_cursor_execute")
def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
    statements[statement.split(None, 1)[0].upper()] += 1


def _event(recording: Recording) -> RecordingCompleted:
    return RecordingCompleted(
        call_sid=recording.call_sid,
        business_id=recording.business_id,
        correlation_id=uuid.uuid4().hex,
        recording_sid=recording.recording_sid,
        recording_status="completed",
        recording_url=recording.url,
        channels=2,
    )


async def _run(handler: Any, recordings: list[Recording], at_once: int) -> None:
    limit = asyncio.Semaphore(at_once)

    async def one(recording: Recording) -> None:
        async with limit:
            await handler(_event(recording))

    await asyncio.gather(*(one(recording) for recording in recordings))


async def main(args: argparse.Namespace) -> None:
    async with bench_stack(args.port_offset) as stack, aiohttp.ClientSession() as http:
        with tempfile.TemporaryDirectory() as folder:
            settings: Settings = stack.settings.model_copy(
                update={
                    "data_dir": Path(folder),
                    "database_url": args.database_url,
                    "media_allowed_origins": stack.settings.media_allowed_origins
                    + f",http://127.0.0.1:{stack.settings.simulator_port}",
                }
            )
            if args.slot_idle_seconds is not None:
                settings = settings.model_copy(
                    update={"download_slot_idle_seconds": args.slot_idle_seconds}
                )
            ids = businesses(settings, args.businesses)
            warm = await register_recordings(settings, http, "plumber_boston", WARM_UP_CALLS, ids)
            measured = await register_recordings(settings, http, "plumber_boston", args.calls, ids)
            store = ObjectStore(settings)
            await store.start()
            async with AsyncExitStack() as exits:
                exits.push_async_callback(store.stop)
                handler = await downloader_handler(settings, store, exits)
                await _run(handler, warm, args.at_once)
                statements.clear()
                cpu, wall = time.process_time(), time.perf_counter()
                await _run(handler, measured, args.at_once)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        json.dumps(
            {
                "calls": args.calls,
                "at_once": args.at_once,
                "businesses": args.businesses,
                "database": settings.effective_database_url.split(":", 1)[0],
                "cpu_ms_per_call": round(cpu * 1000 / args.calls, 2),
                "calls_per_s": round(args.calls / wall, 1),
                "sql_statements_per_call": {
                    kind: round(count / args.calls, 3) for kind, count in sorted(statements.items())
                },
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--at-once", type=int, default=64)
    parser.add_argument("--businesses", type=int, default=10)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--slot-idle-seconds", type=float, default=None)
    asyncio.run(main(parser.parse_args()))
