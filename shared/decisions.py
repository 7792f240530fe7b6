"""What a core can decide about a piece of work that did not succeed, as values: its handler
carries the decision out (`shared.retry.carry_out`) and the stage worker's retry policy does
the rest; and about work whose call was deleted (`Discard`), which its handler carries out
with `shared.tombstones.discard`. No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Retry:
    """Transient: try again, not sooner than `after_seconds`."""

    reason: str
    after_seconds: float = 0.0


@dataclass(frozen=True)
class GiveUp:
    """No retry can help: the input is invalid or the resource is gone for good."""

    reason: str


@dataclass(frozen=True)
class Discard:
    """The call was deleted: the objects the work stored for it (`objects`) are deleted and
    nothing is published. Not a failure: the input is done with."""

    reason: str
    objects: tuple[str, ...] = ()


# The 4xx answers a later try can change: a timeout, a conflict, a rate limit. Any other 4xx
# refuses the request itself (malformed, too large, unprocessable, unauthorised, no such model),
# so every stage gives up on it; 5xx and no answer at all are retried.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 409, 429})


def refused(status_code: int) -> bool:
    """Whether an HTTP API's answer refuses the request for good rather than failing for now."""
    return 400 <= status_code < 500 and status_code not in RETRYABLE_CLIENT_ERRORS


def for_deleted_call(deleted: bool, stored: Sequence[str] = ()) -> Discard | None:
    """Work on a call found deleted is discarded with what it `stored` (nothing before it
    began); None when the call is not deleted."""
    if not deleted:
        return None
    if not stored:
        return Discard("the call was deleted: nothing of its work is published")
    return Discard("the call was deleted while its work ran", tuple(stored))
