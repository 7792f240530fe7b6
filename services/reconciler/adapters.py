"""The reconciler's I/O: the status table (the player's, read through the `StatusTable` it is
handed), Twilio's REST API (the real twilio client, pointed at the local simulator in tests and
the demo), and the broker."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Protocol

from twilio.rest import Client

from services.reconciler import core
from shared.call_state import CallState
from shared.events import AnyEvent, Stage, utc_now
from shared.kafka.producer import EventProducer
from shared.logs import call_context
from shared.periodic import run_periodically
from shared.settings import ReconcileSettings
from shared.twilio_rest import BaseUrlHttpClient

log = logging.getLogger(__name__)


class StatusTable(Protocol):
    """What the reconciler reads of the status table the player keeps."""

    async def unfinished(self, created_before: datetime) -> list[CallState]: ...

    async def stage_input(self, call_sid: str, stage: Stage) -> AnyEvent | None: ...


class TwilioRecordings:
    """Lists a call's recordings over Twilio's REST API. Created inside the event loop."""

    def __init__(self, account_sid: str, auth_token: str, api_base_url: str) -> None:
        self._api_base_url = api_base_url.rstrip("/")
        self._http = BaseUrlHttpClient(api_base_url, timeout=10)
        self._client = Client(account_sid, auth_token, http_client=self._http)

    async def of_call(self, call_sid: str) -> list[core.TwilioRecording]:
        found = await self._client.recordings.list_async(call_sid=call_sid)
        return [
            core.TwilioRecording(
                sid=str(r.sid),
                status=str(r.status),
                channels=int(r.channels or 1),
                duration_seconds=float(r.duration) if r.duration not in (None, "", "-1") else None,
                error_code=str(r.error_code) if r.error_code else None,
                # Where the recording callback's RecordingUrl points: the media resource.
                media_url=self._api_base_url + str(r.uri).removesuffix(".json"),
            )
            for r in found
        ]

    async def close(self) -> None:
        await self._http.close()


class Reconciler:
    def __init__(
        self,
        table: StatusTable,
        producer: EventProducer,
        twilio: TwilioRecordings,
        account_sid: str,
        deadlines: core.Deadlines,
    ) -> None:
        self._table = table
        self._producer = producer
        self._twilio = twilio
        self._account_sid = account_sid
        self._deadlines = deadlines
        # Each call's recording is replayed, and a stuck stage's input emitted again, once
        # per attempt by this process: the table may lag, a second time adds nothing.
        self._replayed: set[str] = set()
        self._reemitted: set[tuple[str, str, int]] = set()

    async def run_once(self) -> Counter[str]:
        """One pass over the unfinished calls; how many of each action it took."""
        done: Counter[str] = Counter()
        for state in await self._table.unfinished(utc_now() - self._deadlines.earliest):
            with call_context(state.call_sid, "-"):
                try:
                    done[await self._reconcile(state)] += 1
                except Exception:
                    log.exception("could not reconcile the call")
                    done["error"] += 1
        return done

    async def run_periodically(self, interval_seconds: float, stop: asyncio.Event) -> None:
        """A round every `interval_seconds` until `stop`; a round under way at the stop (one
        waiting for a broker or database that does not answer) is left to the next."""
        await run_periodically(
            self.run_once, interval_seconds, stop, "reconciliation round", _report_round
        )

    async def _reconcile(self, state: CallState) -> str:
        now = utc_now()
        stage = core.open_stage(state)
        stage_input = await self._table.stage_input(state.call_sid, stage) if stage else None
        action = core.decide(state, stage_input is not None, now, self._deadlines)
        if isinstance(action, core.AskTwilio):
            recordings = await self._twilio.of_call(state.call_sid)
            action = core.recording_action(
                state, recordings, self._account_sid, now, self._deadlines
            )
        match action:
            case core.ReplayRecording(event=event):
                if state.call_sid in self._replayed:
                    return "waiting"
                log.warning("recording callback never arrived; replaying it from Twilio's list")
                await self._producer.publish(event)
                self._replayed.add(state.call_sid)
                return "replayed_recording"
            case core.ReEmit(stage=stuck) if stage_input is not None:
                key = (state.call_sid, stuck.value, stage_input.attempt)
                if key in self._reemitted:
                    return "waiting"
                log.warning("the %s stage made no progress; emitting its input again", stuck)
                await self._producer.publish(stage_input)
                self._reemitted.add(key)
                return "re_emitted"
            case core.GiveUp(event=failed):
                log.error("giving up on the %s stage: %s", failed.stage, failed.error)
                await self._producer.publish(failed)
                return "gave_up"
        return "waiting"


def deadlines(settings: ReconcileSettings) -> core.Deadlines:
    return core.Deadlines(
        recording_after=timedelta(seconds=settings.recording_after_seconds),
        recording_give_up_after=timedelta(seconds=settings.recording_give_up_after_seconds),
        stuck_after=timedelta(seconds=settings.stuck_after_seconds),
        stuck_give_up_after=timedelta(seconds=settings.stuck_give_up_after_seconds),
    )


def _report_round(done: Counter[str]) -> None:
    if acted := {outcome: n for outcome, n in done.items() if outcome != "waiting"}:
        log.info("reconciled: %s", acted)
