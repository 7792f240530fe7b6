"""`callpipe bench download`: archive one large recording through the real download path
(Twilio simulator → downloader → S3 server of a running `callpipe up`) and report the time
and the process's resident memory before and at its peak."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import threading
import time
import uuid
import wave
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

from callpipe.bootstrap import downloader_handler
from shared.events import RecordingCompleted
from shared.settings import Settings
from shared.storage import ObjectStore

MIB = 1024 * 1024


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakMemory:
    """Samples the resident set from a thread, so a busy event loop cannot hide a peak."""

    def __init__(self) -> None:
        self.peak = _resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _resident_bytes())

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _write_recording(path: Path, size_mb: int) -> str:
    """A two-channel WAV of noise of about `size_mb` MiB; returns its SHA-256."""
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(2)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        for _ in range(size_mb):
            audio.writeframes(os.urandom(MIB))
    digest = hashlib.sha256()
    with path.open("rb") as written:
        while block := written.read(MIB):
            digest.update(block)
    return digest.hexdigest()


async def bench_download(settings: Settings, size_mb: int) -> dict[str, Any]:
    simulator = f"http://127.0.0.1:{settings.local.simulator_port}"
    with tempfile.TemporaryDirectory() as folder:
        audio = Path(folder) / "long.wav"
        expected_sha256 = await asyncio.to_thread(_write_recording, audio, size_mb)
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{simulator}/simulator/recordings", json={"audio": str(audio)}
            )
            response.raise_for_status()
            recording = response.json()
        settings = settings.updated(
            data_dir=Path(folder),
            downloader={
                "media_allowed_origins": f"{settings.downloader.media_allowed_origins},{simulator}",
                "max_bytes": (size_mb + 1) * MIB,
            },
        )
        event = RecordingCompleted(
            call_sid="CA" + uuid.uuid4().hex,
            business_id="bench",
            correlation_id=uuid.uuid4().hex,
            recording_sid=recording["recording_sid"],
            recording_status="completed",
            recording_url=recording["recording_url"],
            channels=2,
        )
        store = ObjectStore(settings.s3)
        await store.start()
        async with AsyncExitStack() as stack:
            stack.push_async_callback(store.stop)
            handler = await downloader_handler(settings, store, stack)
            before = _resident_bytes()
            started = time.perf_counter()
            with _PeakMemory() as memory:
                [downloaded] = await handler(event)
            seconds = time.perf_counter() - started
    size = getattr(downloaded, "size_bytes", 0)
    return {
        "recording_mib": round(size / MIB, 1),
        "sha256_matches": getattr(downloaded, "sha256", None) == expected_sha256,
        "seconds": round(seconds, 2),
        "mib_per_second": round(size / MIB / seconds, 1),
        "part_mib": round(settings.downloader.part_bytes / MIB, 1),
        "rss_before_mib": round(before / MIB, 1),
        "rss_peak_mib": round(memory.peak / MIB, 1),
        "rss_growth_mib": round((memory.peak - before) / MIB, 1),
    }
