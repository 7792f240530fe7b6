"""Holes in a partition's offsets while its log is still being written: wait, then go on.

Tansu 0.6 gives a produce its offsets (it moves the partition's high watermark) before it
writes the records. When two producers write to one partition, a fetch can so return offset
N+1 while N is not readable yet, and a consumer that took that answer would move past N for
good: a silent loss (docs/decisions/0914-offset-holes.md). Kafka's own log has no holes in
callpipe's topics (no transactions, no compaction). So a consumer hands on a partition's
records only up to a hole, fetches again from the hole, and goes past it only once it has
stayed open for `patience_seconds` (a produce whose records were never written, after an
object-store error, leaves a hole for good).

Pure: the caller fetches, seeks and logs.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Admitted:
    """How many of a fetch's records (in offset order) may be handled now; if fewer than all,
    fetch again from `refetch_from`. `opened`: that hole was first met now. `skipped`: the
    hole gone past, if any."""

    count: int
    refetch_from: int | None = None
    opened: bool = False
    skipped: range | None = None


class OffsetHoles:
    def __init__(self, patience_seconds: float) -> None:
        self._patience_seconds = patience_seconds
        self._next: dict[Hashable, int] = {}
        self._open_since: dict[Hashable, tuple[int, float]] = {}

    def expect(self, partition: Hashable, offset: int) -> None:
        """The partition's next record is at `offset` (its committed offset, on assignment)."""
        self._next[partition] = offset
        self._open_since.pop(partition, None)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        for partition in partitions:
            self._next.pop(partition, None)
            self._open_since.pop(partition, None)

    def admit(self, partition: Hashable, offsets: Sequence[int], now: float) -> Admitted:
        expected = self._next.get(partition)
        for index, offset in enumerate(offsets):
            if expected is not None and offset > expected:
                hole_at, since = self._open_since.get(partition, (None, now))
                if hole_at != expected:
                    self._open_since[partition] = (expected, now)
                    return Admitted(index, refetch_from=expected, opened=True)
                if now - since < self._patience_seconds:
                    return Admitted(index, refetch_from=expected)
                del self._open_since[partition]
                self._next[partition] = offset + 1
                rest = self.admit(partition, offsets[index + 1 :], now)
                return Admitted(
                    index + 1 + rest.count,
                    rest.refetch_from,
                    rest.opened,
                    skipped=range(expected, offset),
                )
            # A record below the expected offset is a redelivery: handlers are idempotent.
            expected = max(expected if expected is not None else offset, offset + 1)
            self._next[partition] = expected
        if offsets:
            self._open_since.pop(partition, None)
        return Admitted(len(offsets))
