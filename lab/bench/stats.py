"""Pure helpers of the benchmark: percentiles, summaries and offered-load schedules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in [0, 1]): a value that was measured."""
    if not values:
        raise ValueError("no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} not in [0, 1]")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Latencies:
    """Seconds per request (or call), summarised in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latencies | None:
        """None when nothing succeeded."""
        if not seconds:
            return None
        return cls(
            count=len(seconds),
            p50_ms=round(percentile(seconds, 0.50) * 1000, 2),
            p95_ms=round(percentile(seconds, 0.95) * 1000, 2),
            p99_ms=round(percentile(seconds, 0.99) * 1000, 2),
            max_ms=round(max(seconds) * 1000, 2),
        )


def schedule(rate_per_s: float, seconds: float) -> list[float]:
    """Start offsets of an open-loop load: `rate_per_s` evenly spaced arrivals for `seconds`
    (at least one). Open loop: a slow answer does not delay the next arrival, so queueing
    shows in the latency instead of hiding in a lower offered rate."""
    if rate_per_s <= 0 or seconds <= 0:
        raise ValueError("rate and duration must be positive")
    count = max(1, round(rate_per_s * seconds))
    return [index / rate_per_s for index in range(count)]


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else 0.0
