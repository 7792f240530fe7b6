"""`callpipe chaos`: put calls through a stack of its own while killing its parts, then count
what the world saw.

It starts the whole stack (callpipe/stack.py: the broker keeps its log and offsets in the S3
server, so a broker restart loses nothing it acknowledged), by default with the instant speech
and lead backends (`real_backends`: the local faster-whisper model and the rules extractor),
places N simulated calls at a steady rate, and meanwhile kills service processes with SIGKILL
at random moments (the supervisor restarts them), restarts the broker, and optionally stops the
S3 server for a while, or the broker for a while and each service with SIGTERM while it is
away (timing each stop from outside). Then it waits until every call reached a terminal
status (or nothing moves any more) and every worker committed all it read, and counts as an
outside observer:

- outcomes from the status table (read over SQL, SQLite or PostgreSQL);
- object writes per key, from a counting proxy in front of the S3 server that the services
  use (lab/s3_proxy.py), and the objects in the bucket;
- `summary.ready` messages per call and attempt, read from the topic by a consumer: two
  messages are a duplicate even when they carry one event id (a consumer downstream sees
  both); distinct event ids of `recording.downloaded` and `transcript.ready`;
- timeline rows per call, event type and attempt in the status table;
- Twilio REST requests per call, from the Twilio simulator's request log.

A call that ended `failed` counts as lost unless its reason is in UNAVOIDABLE_FAILURES.
The Twilio simulator is never killed: it plays Twilio, which is not ours to crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import re
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, make_url, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from callpipe.bootstrap import SERVICES, open_reconciler
from callpipe.stack import START_TIMEOUT_SECONDS, STOP_TIMEOUT_SECONDS, Child, Stack
from callpipe.twilio_simulator.samples import sample_path
from lab.bench.drain import wait_until_drained
from lab.s3_proxy import S3Proxy
from services.player.tables import call_events, calls
from shared.call_keys import CallKeys, Envelopes
from shared.call_state import (
    ERROR_FIELDS,
    STATUS_FIELDS,
    TERMINAL,
    StageStatus,
    last_error,
    overall_status,
)
from shared.db import create_engine
from shared.events import Topic
from shared.kafka.topics import replay
from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

KILLABLE = ("ingress", "downloader", "transcriber", "extractor", "player")
CALL_SID = re.compile(r"CA[0-9a-f]{32}")
MESSAGE_TOPICS = (Topic.RECORDING_DOWNLOADED, Topic.TRANSCRIPT_READY, Topic.SUMMARY_READY)
# The reasons a call may end `failed` in a run without counting as lost, each one a failure
# no part of callpipe can prevent (docs/reliability.md, "The chaos run").
UNAVOIDABLE_FAILURES = (
    # The voice webhook found no ingress through all of Twilio's tries (the one ingress was
    # down throughout): Twilio never recorded the call, and the reconciler says so.
    "recording never arrived: Twilio lists none for the call",
)
# Timeline rows there must be exactly one of per call and attempt.
ONCE_PER_CALL_EVENTS = (
    "recording.completed",
    "recording.downloaded",
    "transcript.ready",
    "summary.ready",
)
# What every completed call must have made exactly once.
ONCE_PER_COMPLETED_CALL = (
    "audio_objects",
    "manifest_objects",
    "transcript_objects",
    "audio_writes",
    "manifest_writes",
    "transcript_writes",
    "recording.downloaded",
    "transcript.ready",
    "summary.ready",
    *(f"timeline:{event_type}" for event_type in ONCE_PER_CALL_EVENTS),
)


@dataclass(frozen=True)
class ChaosPlan:
    calls: int
    kills: int
    broker_restarts: int = 1
    s3_outage_seconds: float = 0.0
    calls_per_second: float = 5.0
    # The broker held down at least this long (0: never); meanwhile every service is stopped
    # with SIGTERM, one after another, and started again by the supervisor.
    broker_outage_seconds: float = 0.0
    # Give up waiting once no call changed status for this long.
    settle_seconds: float = 120.0
    audio: str = "voicemail_austin"
    # Calls last this long, as real ones do: a call outlives a service's restart, so the
    # callbacks at its end find the ingress back (those at its start may be lost for good).
    call_seconds: float = 20.0
    seed: int | None = None
    # The local faster-whisper model (the settings' own, by default the bundled tiny.en) and
    # the rules extractor, instead of the instant backends.
    real_backends: bool = False


def chaos_settings(settings: Settings, data_dir: Path, plan: ChaosPlan) -> Settings:
    """The stack under test: the instant backends unless the plan asks for the real ones (a
    run measures callpipe, not Whisper) and short download slot leases (a killed downloader's
    slots come back soon)."""
    return settings.updated(
        data_dir=data_dir,
        reconcile={
            "interval_seconds": 5.0,
            "recording_after_seconds": 10.0,
            "recording_give_up_after_seconds": plan.call_seconds + 30.0,
            "stuck_after_seconds": 60.0,
            "stuck_give_up_after_seconds": 1800.0,
        },
        transcriber={"backend": "local" if plan.real_backends else "instant"},
        extractor={"backend": "rules" if plan.real_backends else "instant"},
        downloader={"slot_lease_seconds": 10.0, "slots_per_business": 4},
    )


class Havoc:
    """Kills and restarts parts of a running stack; counts what it did."""

    def __init__(self, stack: Stack, rng: random.Random) -> None:
        self._stack = stack
        self._rng = rng
        self._last_killed: dict[str, float] = {}
        self.kills: Counter[str] = Counter()
        self.broker_restarts = 0
        self.s3_outages = 0
        self.broker_outages = 0
        self.broker_outage_seconds = 0.0
        # Per service stopped during a broker outage: how long from SIGTERM to its exit, its
        # exit status, and what its /healthz said once the supervisor had started it again;
        # first while it ran when the broker went, then while it waited for the broker.
        self.outage_stops: dict[str, dict[str, Any]] = {}
        self.connecting_stops: dict[str, dict[str, Any]] = {}

    def _child(self, name: str) -> Child:
        return next(c for c in self._stack.children if c.name == name)

    @staticmethod
    def _signal(child: Child, signum: signal.Signals) -> bool:
        process = child.process
        if process is None or process.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
            return True
        return False

    async def kill_a_service(self) -> None:
        # The service left alone longest: the supervisor's restart backoff grows when one
        # part dies again soon after its restart, and Twilio gives up on a webhook after ~15 s.
        now = time.monotonic()
        candidates = sorted(
            KILLABLE, key=lambda n: (self._last_killed.get(n, 0.0), self._rng.random())
        )
        for name in candidates:
            if self._signal(self._child(name), signal.SIGKILL):
                self._last_killed[name] = now
                self.kills[name] += 1
                log.warning("chaos: killed %s", name)
                return
        log.warning("chaos: no service running to kill")

    async def restart_broker(self) -> None:
        if self._signal(self._child("broker"), signal.SIGKILL):
            self.broker_restarts += 1
            log.warning("chaos: killed the broker; the supervisor restarts it")

    async def stop_object_store(self, seconds: float) -> None:
        s3 = self._child("s3")
        s3.held = True
        try:
            if self._signal(s3, signal.SIGTERM) and s3.process is not None:
                await s3.process.wait()
                self.s3_outages += 1
                log.warning("chaos: S3 server stopped for %.0f s", seconds)
            await asyncio.sleep(seconds)
        finally:
            s3.held = False  # the supervisor starts it again

    async def stop_broker(self, seconds: float) -> None:
        """Holds the broker down for at least `seconds` (killed, as a crash or a lost host);
        meanwhile stops each service with SIGTERM, one after another, timing its exit from
        here; once the supervisor has started each again and its /healthz answers (the
        broker still away), stops each once more the same way, and waits until each answers
        again. Returns once the broker is back."""
        broker = self._child("broker")
        broker.held = True
        began = time.monotonic()
        try:
            # A broker killed just before is restarted first (its restart was under way).
            await self._running(broker)
            if await self._stop(broker, signal.SIGKILL) is not None:
                self.broker_outages += 1
                log.warning("chaos: broker down for %.0f s at least", seconds)
            for name in KILLABLE:
                self.outage_stops[name] = await self._stop_service(name)
            # Started again, each waits for the broker: stopped once more while waiting.
            for name in KILLABLE:
                away = await self._health_state(self._child(name))
                self.outage_stops[name]["health_while_away"] = away
                self.connecting_stops[name] = await self._stop_service(name)
            for name in KILLABLE:
                away = await self._health_state(self._child(name))
                self.connecting_stops[name]["health_while_away"] = away
            await asyncio.sleep(max(0.0, began + seconds - time.monotonic()))
        finally:
            self.broker_outage_seconds = round(time.monotonic() - began, 1)
            broker.held = False  # the supervisor starts it again
        await self._healthy(broker)

    async def _stop(self, child: Child, signum: signal.Signals = signal.SIGTERM) -> float | None:
        """`signum`, and the seconds until the process exited (SIGKILL after
        STOP_TIMEOUT_SECONDS); None if it was not running."""
        process = child.process
        signalled = time.monotonic()
        if process is None or not self._signal(child, signum):
            return None
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            log.error("chaos: %s did not stop after SIGTERM; killing it", child.name)
            self._signal(child, signal.SIGKILL)
            await process.wait()
        return time.monotonic() - signalled

    async def _stop_service(self, name: str) -> dict[str, Any]:
        child = self._child(name)
        # Signalled once its /healthz answers: its handlers of SIGTERM are installed by then
        # (a process still importing would die of the signal itself).
        await self._health_state(child)
        seconds = await self._stop(child)
        process = child.process
        if seconds is None or process is None:
            log.error("chaos: %s was not running to stop", name)
            return {"seconds": None, "returncode": None}
        log.warning(
            "chaos: %s stopped %.1f s after SIGTERM, exit status %s",
            name,
            seconds,
            process.returncode,
        )
        return {"seconds": round(seconds, 2), "returncode": process.returncode}

    @staticmethod
    async def _running(child: Child) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if child.process is not None and child.process.returncode is None:
                return
            await asyncio.sleep(0.2)

    @staticmethod
    async def _healthy(child: Child) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            process = child.process
            if process is not None and process.returncode is None and await child.healthy():
                return
            await asyncio.sleep(0.3)
        log.error(
            "chaos: %s not healthy %.0f s after the outage", child.name, START_TIMEOUT_SECONDS
        )

    async def _health_state(self, child: Child) -> str | None:
        """What the running child's /healthz says (the ingress: its broker state), once it
        answers; None if it did not within START_TIMEOUT_SECONDS."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                process = child.process
                if process is not None and process.returncode is None:
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        body = (await client.get(f"{child.where}/healthz")).json()
                        return str(body.get("broker", body.get("status")))
                await asyncio.sleep(0.2)
        return None


async def _place_calls(settings: Settings, plan: ChaosPlan) -> list[str]:
    audio = str(sample_path(plan.audio))
    url = f"http://127.0.0.1:{settings.local.simulator_port}/simulator/calls"
    placed: list[str] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(plan.calls):
            call = {"audio": audio, "media_delay_seconds": 0, "call_seconds": plan.call_seconds}
            response = await client.post(url, json=call)
            response.raise_for_status()
            placed.append(str(response.json()["call_sid"]))
            await asyncio.sleep(1 / plan.calls_per_second)
    return placed


async def _make_havoc(havoc: Havoc, plan: ChaosPlan, window: float, rng: random.Random) -> None:
    moments: list[tuple[float, str]] = [(rng.uniform(2, window), "kill") for _ in range(plan.kills)]
    moments += [(rng.uniform(window / 4, window), "broker") for _ in range(plan.broker_restarts)]
    if plan.s3_outage_seconds > 0:
        # Once every call is placed: the outage meets calls in every stage, and the callbacks
        # at their end (the broker keeps its log in S3 locally, so the ingress answers 503).
        moments.append((plan.calls / plan.calls_per_second, "s3"))
    if plan.broker_outage_seconds > 0:
        # As the S3 outage: every call placed, calls in every stage.
        moments.append((plan.calls / plan.calls_per_second, "broker-outage"))
    started = time.monotonic()
    outages: list[asyncio.Task[None]] = []
    for at, what in sorted(moments):
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        if what == "kill":
            await havoc.kill_a_service()
        elif what == "broker":
            await havoc.restart_broker()
        elif what == "broker-outage":
            outages.append(asyncio.create_task(havoc.stop_broker(plan.broker_outage_seconds)))
        else:
            outages.append(asyncio.create_task(havoc.stop_object_store(plan.s3_outage_seconds)))
    await asyncio.gather(*outages)


@dataclass(frozen=True)
class CallOutcome:
    status: str
    reason: str | None


def counts_as_lost(outcome: CallOutcome | None) -> bool:
    """A call without a final status, or failed for a reason callpipe could have avoided."""
    if outcome is None or outcome.status not in TERMINAL:
        return True
    return outcome.status == StageStatus.FAILED and outcome.reason not in UNAVOIDABLE_FAILURES


async def _outcomes(engine: AsyncEngine, call_sids: set[str]) -> dict[str, CallOutcome]:
    """Each call's status and failure reason in the status table (absent: not there yet)."""
    statuses = [calls.c[name] for name in STATUS_FIELDS]
    errors = [calls.c[name] for name in ERROR_FIELDS]
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(calls.c.call_sid, *statuses, *errors).where(calls.c.call_sid.in_(call_sids))
        )
    found: dict[str, CallOutcome] = {}
    for call_sid, *fields in rows:
        stage_statuses, stage_errors = fields[: len(statuses)], fields[len(statuses) :]
        status = overall_status(stage_statuses)
        reason = last_error(stage_statuses, stage_errors) if status == StageStatus.FAILED else None
        found[call_sid] = CallOutcome(status, reason)
    return found


async def _settle(
    engine: AsyncEngine, call_sids: set[str], quiet_seconds: float
) -> dict[str, CallOutcome]:
    """Polls until every call is terminal, or nothing changed for `quiet_seconds`."""
    last: dict[str, CallOutcome] = {}
    changed_at = time.monotonic()
    while True:
        try:
            now = await _outcomes(engine, call_sids)
        except OperationalError as error:  # SQLite busy under the player's writes
            log.info("status table not readable yet: %s", error)
            now = last
        if now != last:
            last, changed_at = now, time.monotonic()
        if len(last) == len(call_sids) and all(o.status in TERMINAL for o in last.values()):
            return last
        if time.monotonic() - changed_at > quiet_seconds:
            return last
        await asyncio.sleep(2)


# What a run counts per call (and attempt, for messages and timeline rows).
PerCall = Counter[tuple[str, str, int]]


def _count_objects(per_call: PerCall, kind: str, keys: Iterable[str], call_sids: set[str]) -> None:
    """`kind`_objects / `kind`_writes per call, by what the key names: audio, its manifest, or
    the transcript. Object keys hold no attempt: a later attempt writes the same keys."""
    for key in keys:
        match = CALL_SID.search(key)
        if match is None or match.group() not in call_sids:
            continue
        if key.endswith(".transcript.json"):
            what = "transcript"
        elif key.endswith(".manifest.json"):
            what = "manifest"
        else:
            what = "audio"
        per_call[(f"{what}_{kind}", match.group(), 0)] += 1


async def _bucket_keys(settings: Settings) -> list[str]:
    store = ObjectStore(settings.s3)
    await store.start()
    try:
        return await store.keys("")
    finally:
        await store.stop()


async def _count_messages(per_call: PerCall, settings: Settings, call_sids: set[str]) -> None:
    """`summary.ready` messages per call and attempt, every copy counted; distinct event ids
    of the stages' hand-overs (a redelivered copy of those is absorbed by the next stage)."""
    event_ids: dict[tuple[str, str, int], set[str]] = {}
    keys = CallKeys.of(settings)
    try:
        async for event in replay(
            settings.kafka, [t.value for t in MESSAGE_TOPICS], Envelopes(keys)
        ):
            if event.call_sid not in call_sids:
                continue
            unit: tuple[str, str, int] = (event.event_type, event.call_sid, event.attempt)
            if event.event_type == Topic.SUMMARY_READY.value:
                per_call[unit] += 1
            else:
                event_ids.setdefault(unit, set()).add(str(event.event_id))
    finally:
        await keys.close()
    for hand_over, ids in event_ids.items():
        per_call[hand_over] = len(ids)


async def _count_timeline(per_call: PerCall, engine: AsyncEngine, call_sids: set[str]) -> None:
    """Timeline rows per call, event type and attempt, for the events that happen once."""
    rows = call_events.c
    async with engine.connect() as connection:
        found = await connection.execute(
            select(rows.call_sid, rows.event_type, rows.attempt, func.count())
            .where(rows.call_sid.in_(call_sids), rows.event_type.in_(ONCE_PER_CALL_EVENTS))
            .group_by(rows.call_sid, rows.event_type, rows.attempt)
        )
        for call_sid, event_type, attempt, count in found:
            per_call[(f"timeline:{event_type}", call_sid, attempt)] += count


async def _twilio_requests(settings: Settings) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{settings.local.simulator_port}/simulator/rest-requests"
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url)
        response.raise_for_status()
        requests: list[dict[str, Any]] = response.json()
        return requests


@dataclass
class Observed:
    side_effects: dict[str, int]
    duplicates: dict[str, int]
    missing: dict[str, int]
    doubled_calls: dict[str, list[str]]
    twilio_requests: dict[str, int]
    media_fetches_per_call: dict[str, int]


def _tally(
    per_call: PerCall,
    completed: set[str],
    twilio: list[dict[str, Any]],
    call_sids: set[str],
) -> Observed:
    seen: Counter[str] = Counter()
    extra: Counter[str] = Counter()
    doubled: dict[str, list[str]] = {}
    present: set[tuple[str, str]] = set()
    for (kind, call_sid, _), count in per_call.items():
        seen[kind] += count
        present.add((kind, call_sid))
        if count > 1:
            extra[kind] += count - 1
            doubled.setdefault(kind, []).append(call_sid)
    missing = Counter(
        kind for kind in ONCE_PER_COMPLETED_CALL for sid in completed if (kind, sid) not in present
    )
    ours = [r for r in twilio if r["call_sid"] in call_sids]
    media = Counter(r["call_sid"] for r in ours if r["kind"] == "media")
    fetches = [media[sid] for sid in completed]
    return Observed(
        side_effects=dict(seen),
        duplicates=dict(extra),
        missing=dict(missing),
        doubled_calls={kind: sorted(sids)[:5] for kind, sids in doubled.items()},
        twilio_requests=dict(Counter(r["kind"] for r in ours)),
        media_fetches_per_call={"min": min(fetches, default=0), "max": max(fetches, default=0)},
    )


async def _observe(
    settings: Settings,
    engine: AsyncEngine,
    proxy: S3Proxy,
    call_sids: set[str],
    completed: set[str],
) -> Observed:
    per_call: PerCall = Counter()
    _count_objects(per_call, "objects", await _bucket_keys(settings), call_sids)
    _count_objects(
        per_call,
        "writes",
        (
            key
            for (bucket, key), n in proxy.writes.items()
            for _ in range(n)
            if bucket == settings.s3.bucket
        ),
        call_sids,
    )
    await _count_messages(per_call, settings, call_sids)
    await _count_timeline(per_call, engine, call_sids)
    twilio = await _twilio_requests(settings)
    for request in twilio:
        if request["kind"] == "recording-start" and request["status"] == 201:
            per_call[("recording_starts", request["call_sid"], 0)] += 1
    return _tally(per_call, completed, twilio, call_sids)


def _through_proxy(stack: Stack, proxy_url: str) -> None:
    """The services reach the S3 server through the counting proxy; the broker directly."""
    for child in stack.children:
        if child.name in SERVICES:
            child.env = {**child.env, "CALLPIPE_S3_ENDPOINT_URL": proxy_url}


async def run_chaos(settings: Settings, plan: ChaosPlan) -> dict[str, Any]:
    rng = random.Random(plan.seed)
    stack = Stack(settings)
    settings = stack.settings  # with the secrets the stack made
    began = time.monotonic()
    running = asyncio.current_task()
    assert running is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # interrupted: still stop the whole stack
        asyncio.get_running_loop().add_signal_handler(signum, running.cancel)
    stop = asyncio.Event()
    havoc = Havoc(stack, rng)
    s3 = urlsplit(settings.s3.endpoint_url)
    proxy = S3Proxy(s3.hostname or "127.0.0.1", s3.port or 80)
    async with contextlib.AsyncExitStack() as resources:
        await proxy.start()
        resources.push_async_callback(proxy.stop)
        _through_proxy(stack, proxy.url)
        resources.push_async_callback(stack.stop)
        await stack.start()
        engine = create_engine(settings.database_url)
        resources.push_async_callback(engine.dispose)
        reconciler = await open_reconciler(settings, stack.twilio_api_base_url, resources)
        supervising = asyncio.gather(
            stack.supervise(stop),
            reconciler.run_periodically(settings.reconcile.interval_seconds, stop),
        )
        try:
            # Kills spread so each service runs a while between two: a part killed again
            # right after its restart would mostly measure the supervisor's crash-loop backoff.
            window = max(plan.calls / plan.calls_per_second, plan.kills * 6.0, 10.0)
            placing = asyncio.create_task(_place_calls(settings, plan))
            await _make_havoc(havoc, plan, window, rng)
            call_sids = set(await placing)
            outcomes = await _settle(engine, call_sids, plan.settle_seconds)
            seconds = time.monotonic() - began
            # A redelivery after the last kill can still double a side effect: counted once
            # every worker committed all it read.
            await wait_until_drained(settings, plan.settle_seconds)
            completed = {sid for sid, o in outcomes.items() if o.status == StageStatus.COMPLETED}
            observed = await _observe(settings, engine, proxy, call_sids, completed)
        finally:
            stop.set()
            await supervising
    status = Counter(outcomes[sid].status if sid in outcomes else "missing" for sid in call_sids)
    failures = Counter(o.reason or "" for o in outcomes.values() if o.status == StageStatus.FAILED)
    lost = sorted(sid for sid in call_sids if counts_as_lost(outcomes.get(sid)))
    return {
        "calls": len(call_sids),
        "completed": status[StageStatus.COMPLETED],
        "failed_terminal": status[StageStatus.FAILED],
        "failed_unavoidable": sum(failures[reason] for reason in UNAVOIDABLE_FAILURES),
        "lost": len(lost),
        "duplicate_side_effects": sum(observed.duplicates.values()),
        "missing_side_effects": sum(observed.missing.values()),
        "kills": sum(havoc.kills.values()),
        "broker_restarts": havoc.broker_restarts,
        "s3_outages": havoc.s3_outages,
        "broker_outages": havoc.broker_outages,
        "broker_outage_seconds": havoc.broker_outage_seconds,
        "outage_stops": havoc.outage_stops,
        "connecting_stops": havoc.connecting_stops,
        "seconds": round(seconds, 1),
        "backends": {
            "transcriber": settings.transcriber.backend,
            "extractor": settings.extractor.backend,
        },
        "database": make_url(settings.database_url).get_backend_name(),
        "kills_by_service": dict(havoc.kills),
        "side_effects_by_kind": observed.side_effects,
        "duplicates_by_kind": observed.duplicates,
        "missing_by_kind": observed.missing,
        "doubled_calls": observed.doubled_calls,
        "failures": dict(failures),
        "twilio_requests_by_kind": observed.twilio_requests,
        "media_fetches_per_call": observed.media_fetches_per_call,
        "not_terminal": {
            sid: outcomes[sid].status if sid in outcomes else "missing"
            for sid in lost
            if sid not in outcomes or outcomes[sid].status not in TERMINAL
        },
        "lost_calls": {
            sid: dataclasses.asdict(outcomes[sid]) if sid in outcomes else "missing"
            for sid in lost[:20]
        },
        "loadavg": list(os.getloadavg()),
    }


def chaos(settings: Settings, plan: ChaosPlan, data_dir: Path | None) -> dict[str, Any]:
    """Runs in `data_dir`, or in a fresh temporary directory removed afterwards."""
    directory = data_dir or Path(tempfile.mkdtemp(prefix="callpipe-chaos-"))
    try:
        return asyncio.run(run_chaos(chaos_settings(settings, directory, plan), plan))
    finally:
        if data_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
