"""The retention sweep: carries out what `services.player.retention` decides for each
business that keeps its audio or its calls for a limited time (decision 1206).

Each call it works on is claimed first (`CallRepository.claim_due`: a lease, so several
sweeps at once take different calls), a batch at a time, oldest first. Every step can be
taken again: audio deleted by prefix, then the call marked; a call deleted as
`DELETE /api/calls/{sid}` deletes it (at Twilio too, when the business chose so). A sweep
cut short leaves its claims, which run out, and the next sweep finishes those calls.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from datetime import datetime, timedelta

from services.player import retention
from services.player.data_settings import DataSettings
from services.player.deletion import Deleter, audio_folders
from shared.call_state import CallState
from shared.events import utc_now
from shared.logs import call_context
from shared.periodic import run_periodically

log = logging.getLogger(__name__)

COUNTS = ("audio_expired", "calls_deleted", "failed")


class RetentionSweep:
    def __init__(
        self,
        deleter: Deleter,
        batch_size: int,
        claim_for: timedelta,
    ) -> None:
        self._deleter = deleter
        self._repository = deleter.repository
        self._store = deleter.store
        self._batch_size = batch_size
        self._claim_for = claim_for

    async def run_once(self, as_of: datetime | None = None) -> Counter[str]:
        """One sweep over every business with a retention, as if it were `as_of` (now by
        default); how many calls' audio it expired, how many calls it deleted, and how many
        it failed on (left claimed: a later sweep takes them again)."""
        as_of = as_of or utc_now()
        done: Counter[str] = Counter(dict.fromkeys(COUNTS, 0))
        sweep = str(uuid.uuid4())
        # A call this sweep failed on is not taken again by it, even once its claim ran out.
        failed: set[str] = set()
        for business_id, settings in await self._repository.retention_settings():
            due = retention.cutoffs(settings, as_of)
            while True:
                claimed = await self._repository.claim_due(
                    business_id, due, sweep, utc_now(), self._claim_for, self._batch_size, failed
                )
                if not claimed and not await self._repository.any_due(
                    business_id, due, utc_now(), failed
                ):
                    break
                for call in claimed:
                    with call_context(call.call_sid, "-"):
                        outcome = await self._sweep(call, settings, as_of)
                    done[outcome] += 1
                    if outcome == "failed":
                        failed.add(call.call_sid)
        return done

    async def _sweep(self, call: CallState, settings: DataSettings, as_of: datetime) -> str:
        age = retention.CallAge(
            call.call_sid, call.business_id, call.created_at, call.audio_expired_at is not None
        )
        decision = retention.decide(age, settings, as_of)
        try:
            match decision:
                case retention.DeleteCall(reason=reason):
                    await self._deleter.delete_call(call)
                    log.info("call deleted: %s", reason)
                    return "calls_deleted"
                case retention.ExpireAudio(reason=reason):
                    for folder in await audio_folders(call, self._repository):
                        await self._store.delete_prefix(folder)
                    await self._repository.expire_audio(call.call_sid, utc_now(), reason)
                    log.info("audio deleted: %s", reason)
                    return "audio_expired"
        except Exception:
            log.exception("retention: could not carry out %s", decision)
            return "failed"
        await self._repository.release_claim(call.call_sid)
        return "kept"

    async def run_periodically(self, interval_seconds: float, stop: asyncio.Event) -> None:
        """A sweep every `interval_seconds` until `stop`; a sweep under way at the stop is
        cancelled: its claims run out and the next sweep finishes its calls."""
        await run_periodically(self.run_once, interval_seconds, stop, "retention sweep", _report)


def _report(done: Counter[str]) -> None:
    if any(done.values()):
        log.info("retention sweep: %s", dict(done))
