"""The retry policy shared by every stage: transient vs terminal, capped backoff with jitter."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from shared.decisions import GiveUp, Retry

log = logging.getLogger(__name__)


class TerminalError(Exception):
    """No retry can help: the input is invalid or the resource is gone for good."""


class Misconfigured(TerminalError):
    """A dependency answers, but no wait can help: its address, credentials or name are
    wrong."""


class RetryLater(Exception):
    """Transient, with a lower bound on the wait (e.g. HTTP Retry-After, or a resource
    known to need a moment): the next try waits at least `after_seconds`."""

    def __init__(self, message: str, after_seconds: float) -> None:
        super().__init__(message)
        self.after_seconds = after_seconds


def _at_least_as_asked(backoff: wait_base) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = error.after_seconds if isinstance(error, RetryLater) else 0.0
        return max(backoff(state), asked)

    return wait


def retrying(
    max_attempts: int | None,
    base_seconds: float,
    max_seconds: float,
    on_retry: Callable[[RetryCallState], Awaitable[None]],
) -> AsyncRetrying:
    """Retries anything but TerminalError, `max_attempts` tries in all (None: until it
    succeeds), waiting
    base, 2·base, 4·base… capped at `max_seconds`, plus up to `base` of random jitter (so
    that calls failing together do not retry together), and never less than a RetryLater
    asks; the last error is re-raised."""
    return AsyncRetrying(
        stop=stop_never if max_attempts is None else stop_after_attempt(max_attempts),
        wait=_at_least_as_asked(
            wait_exponential_jitter(multiplier=base_seconds, max=max_seconds, jitter=base_seconds)
        ),
        # A cancelled try (shutdown handing work back) must end the retrying, not be retried.
        retry=retry_if_not_exception_type((TerminalError, asyncio.CancelledError)),
        before_sleep=on_retry,
        reraise=True,
    )


def describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:2000]


async def wait_until_reached(
    what: str,
    reach: Callable[[], Awaitable[None]],
    unreachable: Callable[[BaseException], bool],
    stop: asyncio.Event,
    base_seconds: float,
    max_seconds: float,
) -> bool:
    """Calls `reach` until it succeeds, waiting with the capped, jittered backoff while the
    error says `what` is unreachable: one log line when it is not there, one when it is. True
    once reached, False if `stop` came first. Any other error is raised at once, as
    Misconfigured unless it is terminal already."""
    began = time.monotonic()

    async def reach_once() -> None:
        try:
            await reach()
        except TerminalError:
            raise
        except Exception as error:
            if unreachable(error):
                raise
            raise Misconfigured(f"{what}: {describe(error)}") from error

    async def log_unreachable(state: RetryCallState) -> None:
        if state.attempt_number == 1:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s unreachable (%s): waiting for it, trying again every %.0f s at most",
                what,
                describe(error) if error else "no answer",
                max_seconds,
            )

    async def until_reached() -> None:
        async for attempt in retrying(None, base_seconds, max_seconds, log_unreachable):
            with attempt:
                await reach_once()

    reaching = asyncio.create_task(until_reached())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([reaching, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not reaching.done():
        reaching.cancel()
        await asyncio.gather(reaching, return_exceptions=True)
        return False
    reaching.result()
    log.info("%s reached in %.1f s", what, time.monotonic() - began)
    return True


def carry_out(decision: Retry | GiveUp) -> NoReturn:
    """Hands a core's decision to the retry policy: RetryLater is retried after at least its
    wait, TerminalError is not retried."""
    match decision:
        case Retry(reason, after_seconds):
            raise RetryLater(reason, after_seconds)
        case GiveUp(reason):
            raise TerminalError(reason)
