"""What a core can decide about a piece of work that did not succeed, as values: its handler
carries the decision out (`shared.retry.carry_out`) and the stage worker's retry policy does
the rest. No I/O."""

from __future__ import annotations

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
