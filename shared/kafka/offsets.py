"""What a stage worker commits and when, and which inputs it already handled.

A message's offset is finished once its output events are acknowledged by the broker
(acks=all), or once it has been dead-lettered. The commit point of a partition advances over
the contiguous prefix of finished offsets, so a slow call never lets a later offset be
committed past it: at-least-once, nothing skipped (decision 0004)."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka.failures import WorkerFailure
from shared.retry import describe
from shared.shutdown import Shutdown


class OffsetTracker:
    """Per partition: offsets in arrival order, and which are finished."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, deque[int]] = {}
        self._done: dict[TopicPartition, set[int]] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        self._pending.setdefault(tp, deque()).append(offset)
        self._done.setdefault(tp, set())

    def finish(self, tp: TopicPartition, offset: int) -> None:
        self._done[tp].add(offset)

    def commit_points(self) -> dict[TopicPartition, int]:
        points: dict[TopicPartition, int] = {}
        for tp, pending in self._pending.items():
            done = self._done[tp]
            while pending and pending[0] in done:
                offset = pending.popleft()
                done.discard(offset)
                points[tp] = offset + 1
        return points

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.pop(tp, None)
            self._done.pop(tp, None)


class Commits:
    """When a stage worker commits what its OffsetTracker says is finished: at most every
    `interval_ms` while it runs (each commit is several writes to the local broker's object
    store, decision 0911), at once on a revoke or a stop. Nothing at all once an output did
    not reach the broker (WorkerFailure): all since the last commit come again."""

    def __init__(self, tracker: OffsetTracker, failure: WorkerFailure, interval_ms: int) -> None:
        self._tracker = tracker
        self._failure = failure
        self._interval_ms = interval_ms
        self._last_commit = float("-inf")

    def due(self) -> bool:
        """Whether a running worker's next commit may go now."""
        return (time.monotonic() - self._last_commit) * 1000 >= self._interval_ms

    async def commit(self, consumer: AIOKafkaConsumer | None) -> None:
        self._failure.raise_if_any()
        points = self._tracker.commit_points()
        if points and consumer is not None:
            await consumer.commit(points)
            self._last_commit = time.monotonic()

    async def commit_at_stop(self, consumer: AIOKafkaConsumer | None, shutdown: Shutdown) -> None:
        """The last commit, within `shutdown`'s bound: a commit the broker does not take in
        time is given up, and those messages come again."""
        if self._failure.error is not None:
            shutdown.abandon(
                "every commit: an output did not reach the broker "
                f"({describe(self._failure.error)}), so all since the last commit come again"
            )
            return
        points = self._tracker.commit_points()
        if points and consumer is not None:
            await shutdown.within_bound(
                f"committing {len(points)} partitions' finished offsets",
                consumer.commit(points),
            )


class HandledInputs:
    """The event ids a stage worker handled to the end (its outputs acknowledged), the most
    recent `capacity` of them. A broker without idempotent producers can store one event
    twice (a send retried through a stall); its second copy meets the same worker moments
    later, in order behind the first, and is absorbed here instead of making its side
    effects again. A copy that arrives after a restart is handled again: at-least-once."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._capacity = capacity
        self._ids: dict[uuid.UUID, None] = {}

    def add(self, event_id: uuid.UUID) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids
