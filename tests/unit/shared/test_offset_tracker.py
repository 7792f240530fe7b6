"""The commit point of a partition only advances over its contiguous prefix of finished
offsets (shared/kafka/offsets.py `OffsetTracker`)."""

from __future__ import annotations

import random

from aiokafka import TopicPartition

from shared.kafka.offsets import OffsetTracker

P0 = TopicPartition("recording.completed", 0)
P1 = TopicPartition("recording.completed", 1)
OTHER_TOPIC = TopicPartition("stage.status", 0)


def tracker_with(tp: TopicPartition, offsets: range | list[int]) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.add(tp, offset)
    return tracker


def test_nothing_finished_nothing_to_commit() -> None:
    tracker = tracker_with(P0, [0, 1, 2])
    assert tracker.commit_points() == {}


def test_finishing_in_order_commits_past_each_offset() -> None:
    tracker = tracker_with(P0, [0, 1, 2])

    tracker.finish(P0, 0)
    assert tracker.commit_points() == {P0: 1}
    tracker.finish(P0, 1)
    tracker.finish(P0, 2)
    assert tracker.commit_points() == {P0: 3}


def test_a_later_offset_finishing_first_is_not_committed_past_an_unfinished_one() -> None:
    tracker = tracker_with(P0, [0, 1, 2])
    tracker.finish(P0, 0)
    assert tracker.commit_points() == {P0: 1}

    tracker.finish(P0, 2)
    assert tracker.commit_points() == {}  # 1 still running: the point stays at 1

    tracker.finish(P0, 1)
    assert tracker.commit_points() == {P0: 3}


def test_unfinished_first_offset_blocks_everything_after_it() -> None:
    tracker = tracker_with(P0, range(10, 20))
    for offset in range(11, 20):
        tracker.finish(P0, offset)
    assert tracker.commit_points() == {}

    tracker.finish(P0, 10)
    assert tracker.commit_points() == {P0: 20}
    assert tracker.commit_points() == {}  # already reported, nothing new


def test_offsets_with_gaps_commit_past_the_last_finished() -> None:
    # Compacted topics and transaction markers leave gaps between offsets.
    tracker = tracker_with(P0, [3, 7, 8])
    tracker.finish(P0, 7)
    tracker.finish(P0, 3)
    assert tracker.commit_points() == {P0: 8}
    tracker.finish(P0, 8)
    assert tracker.commit_points() == {P0: 9}


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    for tp in (P0, P1, OTHER_TOPIC):
        for offset in range(3):
            tracker.add(tp, offset)

    tracker.finish(P1, 0)
    tracker.finish(P1, 1)
    tracker.finish(P0, 1)  # P0's 0 is still running
    tracker.finish(OTHER_TOPIC, 0)

    assert tracker.commit_points() == {P1: 2, OTHER_TOPIC: 1}

    tracker.finish(P0, 0)
    assert tracker.commit_points() == {P0: 2}


def test_random_finish_order_commits_exactly_the_contiguous_prefix() -> None:
    rng = random.Random(20261124)
    offsets = list(range(50))
    tracker = tracker_with(P0, offsets)
    finished: set[int] = set()
    committed = 0
    for offset in rng.sample(offsets, len(offsets)):
        tracker.finish(P0, offset)
        finished.add(offset)
        expected = committed
        while expected in finished:
            expected += 1
        points = tracker.commit_points()
        if expected > committed:
            assert points == {P0: expected}
        else:
            assert points == {}
        committed = expected
    assert committed == 50


def test_forget_drops_only_the_revoked_partitions() -> None:
    tracker = OffsetTracker()
    for tp in (P0, P1):
        tracker.add(tp, 0)
        tracker.add(tp, 1)

    tracker.forget([P0])
    tracker.finish(P1, 0)
    assert tracker.commit_points() == {P1: 1}

    # P0 assigned again later: its old offsets are gone, it starts over.
    tracker.add(P0, 5)
    tracker.finish(P0, 5)
    assert tracker.commit_points() == {P0: 6}


def test_forget_unknown_partition_is_harmless() -> None:
    tracker = tracker_with(P0, [0])
    tracker.forget([P1])
    tracker.finish(P0, 0)
    assert tracker.commit_points() == {P0: 1}
