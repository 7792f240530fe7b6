"""Deleted calls as every stage sees them, without a database: a tombstone object per deleted
call, outside the call's folders and never removed (decision 1203).

The deletion writes the tombstone before it deletes the call's objects, and a stage looks for
it after it stored its work: either the deletion's listing finds the stage's objects, or the
stage finds the tombstone and deletes them itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from shared.decisions import Discard
from shared.events import Event, utc_now
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

# No business's folder: a business id begins with a letter or a digit.
TOMBSTONES = "_tombstones"


def tombstone_key(business_id: str, call_sid: str) -> str:
    return f"{TOMBSTONES}/{business_id}/{call_sid}"


async def delete_call_objects(
    store: ObjectStore, business_id: str, call_sid: str, prefixes: Iterable[str]
) -> int:
    """Records the call's tombstone, then deletes every object under its `prefixes`; how
    many objects were deleted."""
    tombstone = json.dumps({"call_sid": call_sid, "deleted_at": utc_now().isoformat()})
    await store.put(tombstone_key(business_id, call_sid), tombstone.encode(), "application/json")
    deleted = 0
    for prefix in prefixes:
        deleted += await store.delete_prefix(prefix)
    return deleted


async def is_deleted(store: ObjectStore, event: Event) -> bool:
    """Whether the call of `event` was deleted: its tombstone is in the store."""
    return await store.head(tombstone_key(event.business_id, event.call_sid)) is not None


async def discard(store: ObjectStore, decision: Discard) -> list[Event]:
    """Carries out a core's `Discard`: deletes the objects the work stored; nothing to
    publish, so the input is done with (its offset committed)."""
    for key in decision.objects:
        await store.delete(key)
    if decision.objects:
        log.info("%s: ignored, deleted %s", decision.reason, ", ".join(decision.objects))
    else:
        log.info("%s: ignored", decision.reason)
    return []
