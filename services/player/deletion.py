"""Deleting a call, the one way every deletion takes: `DELETE /api/calls/{sid}` and the
retention sweep (decision 1203)."""

from __future__ import annotations

import uuid
from typing import Protocol

from services.player.core import recording_folder
from services.player.repository import CallRepository
from shared.call_state import CallState
from shared.events import TWILIO_NAMESPACE, CallDeleted, Event, call_correlation_id
from shared.storage import ObjectStore, audio_prefixes, call_prefixes
from shared.tombstones import delete_call_objects


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


async def delete_call(
    call: CallState, repository: CallRepository, store: ObjectStore, producer: Publisher
) -> None:
    """Records the call's tombstone, which the stages look for; deletes every object under
    the call's folders (audio of every attempt, manifests, transcripts); publishes
    `call.deleted`; then deletes the row, its timeline and retry inputs. Every step can be
    taken again, and the row goes last, so a deletion cut short leaves the call to be
    deleted again (the player applying `call.deleted` deletes the row too)."""
    prefixes = call_prefixes(call.business_id, call.call_sid, [])
    prefixes += await audio_folders(call, repository)
    await delete_call_objects(store, call.business_id, call.call_sid, prefixes)
    await producer.publish(
        CallDeleted(
            event_id=uuid.uuid5(TWILIO_NAMESPACE, f"{call.call_sid}:deleted"),
            call_sid=call.call_sid,
            business_id=call.business_id,
            correlation_id=call_correlation_id(call.call_sid),
        )
    )
    await repository.delete_call(call.call_sid)
