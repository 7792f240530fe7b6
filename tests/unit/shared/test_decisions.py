"""Work on a deleted call: discarded with what it stored, or not at all when the call lives."""

from __future__ import annotations

from datetime import date

from shared.decisions import Discard, for_deleted_call
from shared.storage import call_prefixes


def test_work_on_a_deleted_call_is_discarded_with_what_it_stored() -> None:
    assert for_deleted_call(False) is None
    assert for_deleted_call(False, ["acme/CA1/RE1.transcript.json"]) is None
    assert for_deleted_call(True) == Discard(
        "the call was deleted: nothing of its work is published"
    )
    stored = for_deleted_call(True, ["acme/CA1/RE1.transcript.json"])
    assert stored is not None and stored.objects == ("acme/CA1/RE1.transcript.json",)


def test_a_calls_folders_are_its_own_and_one_per_day_a_recording_completed() -> None:
    days = [date(2026, 11, 25), date(2026, 11, 24), date(2026, 11, 25)]
    assert call_prefixes("acme", "CA1", days) == [
        "acme/CA1/",
        "acme/2026-11-24/CA1/",
        "acme/2026-11-25/CA1/",
    ]
