"""What a stage worker may commit, and which inputs it already handled.

A message's offset is finished once its output events are acknowledged by the broker
(acks=all), or once it has been dead-lettered. The commit point of a partition advances over
the contiguous prefix of finished offsets, so a slow call never lets a later offset be
committed past it: at-least-once, nothing skipped (decision 0004)."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Sequence

from aiokafka import TopicPartition


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
