"""Drives an async operation at an offered rate (open loop) and times each call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lab.bench.stats import schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    latencies: list[float]  # seconds, of the operations that succeeded
    elapsed_seconds: float  # first arrival to last answer
    errors: int = 0  # operations that failed or timed out: counted, not timed

    @property
    def achieved_per_s(self) -> float:
        return len(self.latencies) / self.elapsed_seconds if self.elapsed_seconds else 0.0


def _result(outcomes: list[float | None], elapsed_seconds: float) -> LoadResult:
    latencies = [seconds for seconds in outcomes if seconds is not None]
    return LoadResult(latencies, elapsed_seconds, len(outcomes) - len(latencies))


async def _timed(operation: Callable[[int], Awaitable[None]], index: int) -> bool:
    """Runs the operation; False (logged) if it failed, so one slow answer or error does
    not end a whole run."""
    try:
        await operation(index)
    except Exception as error:
        log.warning("operation %d failed: %r", index, error)
        return False
    return True


async def offer(
    operation: Callable[[int], Awaitable[None]], rate_per_s: float, seconds: float
) -> LoadResult:
    """Starts `operation(index)` at the scheduled arrival times without waiting for earlier
    ones; latency counts from the scheduled time, so a client that falls behind does not
    hide queueing (no coordinated omission)."""
    offsets = schedule(rate_per_s, seconds)
    started = time.perf_counter()

    async def one(index: int, offset: float) -> float | None:
        await asyncio.sleep(max(0.0, started + offset - time.perf_counter()))
        if not await _timed(operation, index):
            return None
        return time.perf_counter() - (started + offset)

    outcomes = await asyncio.gather(*(one(i, offset) for i, offset in enumerate(offsets)))
    return _result(list(outcomes), time.perf_counter() - started)


async def as_fast_as_possible(
    operation: Callable[[int], Awaitable[None]], count: int, concurrency: int
) -> LoadResult:
    """`count` calls with at most `concurrency` at once (closed loop): throughput."""
    limit = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(index: int) -> float | None:
        async with limit:
            begun = time.perf_counter()
            if not await _timed(operation, index):
                return None
            return time.perf_counter() - begun

    outcomes = await asyncio.gather(*(one(i) for i in range(count)))
    return _result(list(outcomes), time.perf_counter() - started)
