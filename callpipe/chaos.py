"""`callpipe chaos`: put calls through a stack of its own while killing its parts, then count.

It starts the whole stack (callpipe/stack.py: the broker keeps its log and offsets in the S3
server, so a broker restart loses nothing it acknowledged) with the instant speech and lead
backends, places N simulated calls at a steady rate, and meanwhile kills service processes
with SIGKILL at random moments (the supervisor restarts them), restarts the broker, and
optionally stops the S3 server for a while. Then it waits until every call reached a terminal
status (or nothing moves any more) and counts from the status table, the bucket and the
topics. The Twilio simulator is never killed: it plays Twilio, which is not ours to crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import shutil
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from callpipe.bootstrap import open_reconciler
from callpipe.stack import Child, Stack, local_api_key
from callpipe.twilio_simulator import sample_path
from shared.events import Topic
from shared.kafka import replay
from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

KILLABLE = ("ingress", "downloader", "transcriber", "extractor", "player")
TERMINAL = {"completed", "failed"}
CALL_SID = re.compile(r"CA[0-9a-f]{32}")
SIDE_EFFECT_TOPICS = (Topic.RECORDING_DOWNLOADED, Topic.TRANSCRIPT_READY, Topic.SUMMARY_READY)


@dataclass(frozen=True)
class ChaosPlan:
    calls: int
    kills: int
    broker_restarts: int = 1
    s3_outage_seconds: float = 0.0
    calls_per_second: float = 5.0
    # Give up waiting once no call changed status for this long.
    settle_seconds: float = 120.0
    audio: str = "voicemail_austin"
    # Calls last this long, as real ones do: a call outlives a service's restart, so the
    # callbacks at its end find the ingress back (those at its start may be lost for good).
    call_seconds: float = 20.0
    seed: int | None = None


def chaos_settings(settings: Settings, data_dir: Path, plan: ChaosPlan) -> Settings:
    """The stack under test: the instant backends (a run measures callpipe, not Whisper) and
    short download slot leases (a killed downloader's slots come back soon)."""
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            # The run is minutes long: lost callbacks are looked up at Twilio within it.
            "reconcile_interval_seconds": 5.0,
            "reconcile_recording_after_seconds": 10.0,
            "reconcile_recording_give_up_after_seconds": plan.call_seconds + 30.0,
            "reconcile_stuck_after_seconds": 60.0,
            # Far beyond a run: a backlog behind kills is not a stuck stage.
            "reconcile_stuck_give_up_after_seconds": 1800.0,
            "transcriber_backend": "instant",
            "extractor_backend": "instant",
            "download_slot_lease_seconds": 10.0,
            "download_slots_per_business": 4,
        }
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


async def _place_calls(settings: Settings, plan: ChaosPlan) -> list[str]:
    audio = str(sample_path(plan.audio))
    url = f"http://127.0.0.1:{settings.simulator_port}/simulator/calls"
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
    started = time.monotonic()
    outages: list[asyncio.Task[None]] = []
    for at, what in sorted(moments):
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        if what == "kill":
            await havoc.kill_a_service()
        elif what == "broker":
            await havoc.restart_broker()
        else:
            outages.append(asyncio.create_task(havoc.stop_object_store(plan.s3_outage_seconds)))
    await asyncio.gather(*outages)


async def _statuses(settings: Settings, call_sids: set[str]) -> dict[str, str]:
    """The status of each call the player lists (a call it does not list has none yet)."""
    url = f"http://127.0.0.1:{settings.player_port}/api/calls"
    headers = {"Authorization": f"Bearer {local_api_key(settings)}"}
    found: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=10, headers=headers) as client:
        offset = 0
        while True:
            page = (await client.get(url, params={"limit": 500, "offset": offset})).json()
            for call in page["calls"]:
                if call["call_sid"] in call_sids:
                    found[call["call_sid"]] = call["status"]
            offset += len(page["calls"])
            if not page["calls"] or offset >= page["total"]:
                return found


async def _settle(settings: Settings, call_sids: set[str], quiet_seconds: float) -> dict[str, str]:
    """Polls until every call is terminal, or nothing changed for `quiet_seconds`."""
    last: dict[str, str] = {}
    changed_at = time.monotonic()
    while True:
        try:
            now = await _statuses(settings, call_sids)
        except (httpx.HTTPError, KeyError, ValueError):  # the player restarting
            now = last
        if now != last:
            last, changed_at = now, time.monotonic()
        if len(last) == len(call_sids) and all(s in TERMINAL for s in last.values()):
            return last
        if time.monotonic() - changed_at > quiet_seconds:
            return last
        await asyncio.sleep(2)


async def _side_effects(
    settings: Settings, call_sids: set[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Side effects seen, and those beyond one per call: audio objects and transcripts in the
    bucket, and distinct events (by event id; a redelivered copy is not a second side effect)
    on the topics that announce a recording, a transcript, a summary."""
    store = ObjectStore(settings)
    await store.start()
    try:
        keys = await store.keys("")
    finally:
        await store.stop()
    per_call: Counter[tuple[str, str]] = Counter()
    for key in keys:
        match = CALL_SID.search(key)
        if match is None or match.group() not in call_sids:
            continue
        if key.endswith(".transcript.json"):
            kind = "transcript_objects"
        elif key.endswith(".manifest.json"):
            kind = "manifest_objects"
        else:
            kind = "audio_objects"
        per_call[(kind, match.group())] += 1
    event_ids: dict[tuple[str, str], set[str]] = {}
    async for event in replay(settings, [t.value for t in SIDE_EFFECT_TOPICS]):
        if event.call_sid in call_sids:
            event_ids.setdefault((event.event_type, event.call_sid), set()).add(str(event.event_id))
    for (kind, call_sid), ids in event_ids.items():
        per_call[(kind, call_sid)] = len(ids)
    seen: Counter[str] = Counter()
    extra: Counter[str] = Counter()
    for (kind, _), count in per_call.items():
        seen[kind] += count
        extra[kind] += max(0, count - 1)
    return dict(seen), dict(extra)


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
    async with contextlib.AsyncExitStack() as resources:
        resources.push_async_callback(stack.stop)
        await stack.start()
        reconciler = await open_reconciler(settings, stack.twilio_api_base_url, resources)
        supervising = asyncio.gather(
            stack.supervise(stop),
            reconciler.run_periodically(settings.reconcile_interval_seconds, stop),
        )
        try:
            # Kills spread so each service runs a while between two: a part killed again
            # right after its restart would mostly measure the supervisor's crash-loop backoff.
            window = max(plan.calls / plan.calls_per_second, plan.kills * 6.0, 10.0)
            placing = asyncio.create_task(_place_calls(settings, plan))
            await _make_havoc(havoc, plan, window, rng)
            call_sids = set(await placing)
            statuses = await _settle(settings, call_sids, plan.settle_seconds)
            seconds = time.monotonic() - began
            side_effects, duplicates = await _side_effects(settings, call_sids)
        finally:
            stop.set()
            await supervising
    outcome = Counter(statuses.get(sid, "missing") for sid in call_sids)
    lost = sorted(sid for sid in call_sids if statuses.get(sid) not in TERMINAL)
    return {
        "calls": len(call_sids),
        "completed": outcome["completed"],
        "failed_terminal": outcome["failed"],
        "lost": len(lost),
        "duplicate_side_effects": sum(duplicates.values()),
        "kills": sum(havoc.kills.values()),
        "broker_restarts": havoc.broker_restarts,
        "s3_outages": havoc.s3_outages,
        "seconds": round(seconds, 1),
        "kills_by_service": dict(havoc.kills),
        "side_effects_by_kind": side_effects,
        "duplicates_by_kind": duplicates,
        "not_terminal": {sid: statuses.get(sid, "missing") for sid in lost[:20]},
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
