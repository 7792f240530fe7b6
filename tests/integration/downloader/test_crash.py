"""A downloader process killed in the middle of a download: its job is redelivered, archived
once with the right bytes, and the business's only slot is not held forever by the dead."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import httpx
import pytest

from callpipe.stack import settings_env
from callpipe.twilio_simulator.samples import sample_path
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.support.downloader import (
    _OFFSET,
    add_recording,
    collect,
    downloaded,
    media_requests,
    publish,
    recording_event,
)

SAMPLE = sample_path("plumber_boston").read_bytes()


class DownloaderProcess:
    """`callpipe run downloader`, as `callpipe up` runs it."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self._env = {**os.environ, **settings_env(settings)}
        self._health = f"http://127.0.0.1:{settings.downloader.health_port}/healthz"
        self._log = log
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self._log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callpipe", "run", "downloader",
                env=self._env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                assert self._process.returncode is None, self._log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(self._health)).status_code == 200:
                        return
                await asyncio.sleep(0.3)
        pytest.fail(f"the downloader did not start: {self._log.read_text()}")

    async def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()


async def _until_fetching(settings: Settings, recording_sid: str) -> None:
    for _ in range(300):
        if media_requests(settings, recording_sid):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{recording_sid} was never fetched")


async def test_a_download_cut_by_a_crash_is_redone_once_and_its_slot_comes_back(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.updated(
        downloader={
            "slots_per_business": 1,
            "slot_lease_seconds": 45.0,
            "health_port": 21101 + _OFFSET,
        }
    )
    first = DownloaderProcess(settings, tmp_path / "first.log")
    second = DownloaderProcess(settings, tmp_path / "second.log")
    try:
        await first.start()
        event = recording_event(add_recording(settings, bytes_per_second=len(SAMPLE) / 4))
        await publish(settings, event)
        await _until_fetching(settings, event.recording_sid)
        await first.kill()  # mid-download, holding the business's only slot, offset not committed
        await second.start()
        seen = await collect(settings, {event.call_sid}, lambda s: bool(downloaded(s)))
    finally:
        await first.kill()
        await second.kill()
    # The dead instance's lease still held the only slot: the new one waited it out.
    assert "every download slot of business acme is busy" in (tmp_path / "second.log").read_text()
    statuses = [r["status"] for r in media_requests(settings, event.recording_sid)]
    assert statuses == [200, 200]  # the cut download, then the complete one
    assert {d["event_id"] for d in downloaded(seen)} == {downloaded(seen)[0]["event_id"]}
    store = ObjectStore(settings.s3)
    await store.start()
    try:
        [result] = {d["object_key"] for d in downloaded(seen)}
        assert await store.get(result) == SAMPLE
        assert await store.keys(result.rsplit("/", 1)[0]) == [result, f"{result}.manifest.json"]
    finally:
        await store.stop()
