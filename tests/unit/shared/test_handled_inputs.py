"""The stage worker's memory of the events it handled to the end: what absorbs a second copy."""

from __future__ import annotations

import uuid

from shared.kafka.offsets import HandledInputs


def test_a_handled_event_is_remembered_and_another_is_not() -> None:
    handled = HandledInputs()
    first, other = uuid.uuid4(), uuid.uuid4()
    handled.add(first)
    assert first in handled
    assert other not in handled


def test_only_the_most_recent_ids_are_kept() -> None:
    handled = HandledInputs(capacity=3)
    ids = [uuid.uuid4() for _ in range(5)]
    for event_id in ids:
        handled.add(event_id)
    assert [event_id in handled for event_id in ids] == [False, False, True, True, True]
