"""Deleting a call everywhere, and a whole business call by call: the one way every deletion
takes, `DELETE /api/calls/{sid}`, `DELETE /api/business`, `callpipe business delete` and the
retention sweep (decisions 1203, 1206, 1207).

A call: its Twilio deletion queued first when its business chose `delete_from_twilio`, then
its tombstone and every object under its folders, `call.deleted`, and its rows last: a row
still there is a deletion not finished, which a second run finds and finishes (each step
may be done again). Then its recordings are deleted at Twilio; a failure there leaves the
call queued (`twilio_deletions`), retried every `CALLPIPE_PLAYER_TWILIO_DELETE_RETRY_SECONDS`
by the player, and never holds the local deletion back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from twilio.base.exceptions import TwilioRestException

from services.player.core import recording_folder
from services.player.repository import CallRepository
from shared.call_state import CallState
from shared.events import TWILIO_NAMESPACE, CallDeleted, Event, call_correlation_id
from shared.storage import ObjectStore, audio_prefixes, call_prefixes
from shared.tombstones import delete_call_objects
from shared.twilio_rest import RecordingDeleter

log = logging.getLogger(__name__)

BUSINESS_BATCH = 100
TWILIO_RETRY_BATCH = 100
TWILIO_FAILURES = (TwilioRestException, aiohttp.ClientError, TimeoutError, OSError)


class Publisher(Protocol):
    async def publish(self, event: Event) -> None: ...


async def audio_folders(call: CallState, repository: CallRepository) -> list[str]:
    """The dated folders holding the call's audio and manifests: one per day a recording of
    it completed on, and the folder of the recording its row names."""
    folders = audio_prefixes(
        call.business_id, call.call_sid, await repository.recording_days(call.call_sid)
    )
    own = f"{call.business_id}/{call.call_sid}/"  # its transcripts: no audio folder
    if (folder := recording_folder(call)) and folder not in folders and folder != own:
        folders.append(folder)
    return folders


@dataclass(frozen=True)
class BusinessDeleted:
    business_id: str
    calls_deleted: int
    api_keys_deleted: int
    twilio_deletions_pending: int


@dataclass(frozen=True)
class Deleter:
    repository: CallRepository
    store: ObjectStore
    producer: Publisher
    open_twilio: Callable[[], RecordingDeleter]

    async def delete_call(self, call: CallState) -> bool:
        """Deletes the call everywhere; whether its recordings are still to be deleted at
        Twilio (the business chose so and Twilio could not be reached or refused)."""
        queued = await self._delete_here(call)
        return await self._at_twilio(queued) > 0

    async def delete_business(
        self, business_id: str, batch: int = BUSINESS_BATCH
    ) -> BusinessDeleted:
        """Deletes every call of the business as `delete_call` does, `batch` at a time, then
        its data settings, sessions and API keys. A run cut short leaves the calls not yet
        deleted (and the settings and keys): running it again finishes it."""
        deleted = 0
        pending = 0
        while calls := await self.repository.business_calls(business_id, batch):
            queued: list[str] = []
            for call in calls:
                queued += await self._delete_here(call)
            deleted += len(calls)
            pending += await self._at_twilio(queued)
        keys = await self.repository.forget_business(business_id)
        log.info("business %s deleted: %d calls, %d API keys", business_id, deleted, keys)
        return BusinessDeleted(business_id, deleted, keys, pending)

    async def retry_twilio(self) -> int:
        """Tries again the Twilio deletions that failed; how many are still to do."""
        pending = await self.repository.pending_twilio_deletions(TWILIO_RETRY_BATCH)
        return await self._at_twilio([call_sid for call_sid, _, _ in pending])

    async def retry_twilio_periodically(self, interval_seconds: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)
                return
            try:
                await self.retry_twilio()
            except Exception:  # the database away: the next round tries again
                log.exception("retrying the deletions at Twilio failed")

    async def _delete_here(self, call: CallState) -> list[str]:
        """The call's local deletion; its SID in a list when its recordings are queued for
        deletion at Twilio."""
        queued = []
        if (await self.repository.data_settings(call.business_id)).delete_from_twilio:
            await self.repository.queue_twilio_deletion(call.call_sid, call.business_id)
            queued.append(call.call_sid)
        prefixes = call_prefixes(call.business_id, call.call_sid, [])
        prefixes += await audio_folders(call, self.repository)
        await delete_call_objects(self.store, call.business_id, call.call_sid, prefixes)
        await self.producer.publish(
            CallDeleted(
                event_id=uuid.uuid5(TWILIO_NAMESPACE, f"{call.call_sid}:deleted"),
                call_sid=call.call_sid,
                business_id=call.business_id,
                correlation_id=call_correlation_id(call.call_sid),
            )
        )
        await self.repository.delete_call(call.business_id, call.call_sid)
        return queued

    async def _at_twilio(self, call_sids: Collection[str]) -> int:
        """Deletes the calls' recordings at Twilio, each call's queue entry going once
        Twilio holds none; how many calls are left queued."""
        if not call_sids:
            return 0
        left = 0
        twilio = self.open_twilio()
        try:
            for call_sid in call_sids:
                try:
                    await twilio.delete_of_call(call_sid)
                except TWILIO_FAILURES as error:
                    left += 1
                    reason = f"{type(error).__name__}: {error}"
                    log.warning("recordings of %s not deleted at Twilio: %s", call_sid, reason)
                    await self.repository.twilio_deletion_failed(call_sid, reason[:2000])
                    continue
                await self.repository.twilio_deletion_done(call_sid)
        finally:
            await twilio.close()
        return left
