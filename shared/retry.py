"""The retry policy shared by every stage: transient vs terminal, capped backoff with jitter."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base


class TerminalError(Exception):
    """No retry can help: the input is invalid or the resource is gone for good."""


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
