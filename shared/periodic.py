"""A job run again and again until the stop: the reconciler's rounds and the retention sweep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.db import database_unreachable
from shared.retry import describe

log = logging.getLogger(__name__)
Outcome = TypeVar("Outcome")


async def run_periodically(
    run_once: Callable[[], Awaitable[Outcome]],
    interval_seconds: float,
    stop: asyncio.Event,
    name: str,
    report: Callable[[Outcome], None],
) -> None:
    """`run_once` every `interval_seconds` until `stop`, its outcome given to `report`. A run
    under way at the stop is cancelled: the jobs are idempotent, the next run does what it
    left. A run that fails is logged (a warning when the database is briefly away) and the
    next comes at its time."""
    while not stop.is_set():
        running = asyncio.ensure_future(run_once())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not running.done():
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            log.info("stopping: the %s under way is left to the next one", name)
            return
        try:
            outcome = running.result()
        except Exception as error:  # the database, the broker or the store briefly away
            if database_unreachable(error):
                log.warning("%s skipped: %s", name, describe(error))
            else:
                log.exception("%s failed", name)
        else:
            report(outcome)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_seconds)
