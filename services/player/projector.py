"""The player's consumer handler: projects every pipeline event into the status table."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.player.core import stored_objects
from services.player.repository import CallRepository
from shared.events import AnyEvent, Event
from shared.kafka.topics import all_topics
from shared.logs import call_context
from shared.storage import ObjectStore

log = logging.getLogger(__name__)


def projected_topics() -> list[str]:
    return [t for t in all_topics() if not t.endswith(".dlq")]


class Projector:
    """Applies the events of a poll to the status table in one transaction, or one event in
    its own (the runtime's fallback when a batch fails). An event of a deleted call is not
    applied, and the objects it announces are deleted: a stage that was still at work when
    the call was deleted stored them after the deletion."""

    def __init__(self, repository: CallRepository, store: ObjectStore) -> None:
        self._repository = repository
        self._store = store

    async def __call__(self, event: AnyEvent) -> Sequence[Event]:
        applied = await self._repository.apply(event)
        _log_applied(event, applied)
        if not applied:
            await self._delete_objects_of_deleted_calls([event])
        return []

    async def apply_batch(self, events: Sequence[AnyEvent]) -> Sequence[Event]:
        applied = await self._repository.apply_batch(events)
        for event, changed in zip(events, applied, strict=True):
            with call_context(event.call_sid, str(event.event_id)):
                _log_applied(event, changed)
        ignored = [event for event, changed in zip(events, applied, strict=True) if not changed]
        await self._delete_objects_of_deleted_calls(ignored)
        return []

    async def _delete_objects_of_deleted_calls(self, ignored: Sequence[AnyEvent]) -> None:
        announcing = [event for event in ignored if stored_objects(event)]
        if not announcing:
            return
        deleted = await self._repository.deleted_among({e.call_sid for e in announcing})
        for event in announcing:
            if event.call_sid in deleted:
                with call_context(event.call_sid, str(event.event_id)):
                    for key in stored_objects(event):
                        await self._store.delete(key)
                    log.info(
                        "deleted the objects %s announced: its call is deleted", event.event_type
                    )


def _log_applied(event: AnyEvent, applied: bool) -> None:
    if applied:
        log.info("%s applied", event.event_type)
    else:
        log.info("%s already applied (or the call was deleted)", event.event_type)
