"""The wait-then-go-on rule for holes in a partition's offsets (`OffsetHoles` in
shared/kafka/tansu_workarounds.py)."""

from shared.kafka.tansu_workarounds import Admitted, OffsetHoles

PATIENCE = 5.0


def test_contiguous_records_are_all_admitted_and_the_next_is_expected_after_them() -> None:
    holes = OffsetHoles(PATIENCE)
    assert holes.admit("p", [0, 1, 2], now=0.0) == Admitted(3)
    assert holes.admit("p", [4], now=1.0) == Admitted(0, refetch_from=3, opened=True)


def test_records_after_a_hole_wait_until_it_fills() -> None:
    holes = OffsetHoles(PATIENCE)
    holes.expect("p", 10)
    assert holes.admit("p", [10, 11, 13, 14], now=0.0) == Admitted(2, refetch_from=12, opened=True)
    # Fetched again from 12 while 12 is still missing: still held, and not a new hole.
    assert holes.admit("p", [13, 14], now=1.0) == Admitted(0, refetch_from=12)
    # 12 became readable.
    assert holes.admit("p", [12, 13, 14], now=1.5) == Admitted(3)
    assert holes.admit("p", [15], now=2.0) == Admitted(1)


def test_a_hole_right_at_the_committed_offset_is_one_too() -> None:
    holes = OffsetHoles(PATIENCE)
    holes.expect("p", 7)
    assert holes.admit("p", [8, 9], now=0.0) == Admitted(0, refetch_from=7, opened=True)


def test_a_hole_still_open_after_the_patience_is_gone_past_and_reported() -> None:
    holes = OffsetHoles(PATIENCE)
    holes.expect("p", 0)
    assert holes.admit("p", [0, 3, 4], now=100.0) == Admitted(1, refetch_from=1, opened=True)
    assert holes.admit("p", [3, 4], now=104.9) == Admitted(0, refetch_from=1)
    assert holes.admit("p", [3, 4], now=105.0) == Admitted(2, skipped=range(1, 3))
    assert holes.admit("p", [5], now=105.1) == Admitted(1)


def test_the_patience_counts_from_when_that_hole_was_met_not_an_earlier_one() -> None:
    holes = OffsetHoles(PATIENCE)
    holes.expect("p", 0)
    assert holes.admit("p", [1], now=0.0).opened
    assert holes.admit("p", [0, 1, 3], now=4.0) == Admitted(2, refetch_from=2, opened=True)
    assert holes.admit("p", [3], now=8.0) == Admitted(0, refetch_from=2)
    assert holes.admit("p", [3], now=9.0).skipped == range(2, 3)


def test_an_unknown_start_takes_the_first_record_as_it() -> None:
    holes = OffsetHoles(PATIENCE)
    assert holes.admit("p", [42, 43], now=0.0) == Admitted(2)


def test_a_redelivered_record_below_the_expected_offset_is_admitted() -> None:
    holes = OffsetHoles(PATIENCE)
    holes.expect("p", 5)
    assert holes.admit("p", [3, 4, 5, 6], now=0.0) == Admitted(4)
    assert holes.admit("p", [8], now=0.0).refetch_from == 7


def test_partitions_are_independent_and_a_forgotten_one_starts_over() -> None:
    holes = OffsetHoles(PATIENCE)
    holes.expect("a", 0)
    holes.expect("b", 0)
    assert holes.admit("a", [1], now=0.0).refetch_from == 0
    assert holes.admit("b", [0, 1], now=0.0) == Admitted(2)
    holes.forget(["a"])
    assert holes.admit("a", [1], now=0.0) == Admitted(1)


def test_an_empty_fetch_does_not_restart_the_patience() -> None:
    holes = OffsetHoles(PATIENCE)
    holes.expect("p", 0)
    assert holes.admit("p", [1], now=0.0).opened
    assert holes.admit("p", [], now=3.0) == Admitted(0)
    assert holes.admit("p", [1], now=5.0).skipped == range(0, 1)
