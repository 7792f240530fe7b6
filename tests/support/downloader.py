"""Helpers for the downloader's tests: the S3 server, the Kafka-protocol broker and the
local Twilio simulator run as processes, started as `callpipe up` starts them; the downloader
runs in the test's event loop on the same wiring as in production (callpipe.bootstrap)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer
from starlette.requests import Request
from starlette.responses import Response

from callpipe.bootstrap import open_stage_worker
from shared.call_keys import Envelopes
from shared.events import RecordingCompleted, decode, encode
from shared.kafka.producer import EventProducer
from shared.kafka.topics import dead_letter_topic
from shared.settings import Settings
from shared.storage import ObjectStore

# Clear of the end-to-end test's ports, and below the ephemeral range even for the S3
# server's gRPC twins (each port + 10000).
_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
SIMULATOR_PORT = 21090 + _OFFSET
# The test run's S3 server: its own ports (+555, +1000, +1007, +1020 and the gRPC twins), not
# the module S3 servers' (tests.support.stack.MODULE_S3_PORT), which other modules start while
# this one still runs.
S3_PORT = 26333 + _OFFSET
# Media origins of the redirect tests, each a real HTTP server of its own.
MEDIA_ORIGIN_PORTS = (21091 + _OFFSET, 21092 + _OFFSET, 21093 + _OFFSET)


def base_settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        s3={"endpoint_url": f"http://127.0.0.1:{S3_PORT}"},
        kafka={"bootstrap": f"127.0.0.1:{22092 + _OFFSET}"},
        local={"simulator_port": SIMULATOR_PORT},
        downloader={"media_allowed_origins": f"http://127.0.0.1:{SIMULATOR_PORT}"},
        retry={"base_seconds": 0.2, "max_seconds": 2.0},
    )


def add_recording(settings: Settings, **options: Any) -> dict[str, str]:
    response = httpx.post(
        f"http://127.0.0.1:{settings.local.simulator_port}/simulator/recordings", json=options
    )
    response.raise_for_status()
    return dict(response.json())


def media_requests(settings: Settings, recording_sid: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"http://127.0.0.1:{settings.local.simulator_port}/simulator/media-requests"
    )
    return [r for r in response.json() if r["recording_sid"] == recording_sid]


def recording_event(recording: dict[str, str], business_id: str = "acme") -> RecordingCompleted:
    call_sid = "CA" + secrets.token_hex(16)
    return RecordingCompleted(
        event_id=uuid.uuid4(),
        call_sid=call_sid,
        business_id=business_id,
        correlation_id=uuid.uuid4().hex,
        recording_sid=recording["recording_sid"],
        recording_status="completed",
        recording_url=recording["recording_url"] + ".json",
        channels=2,
    )


@dataclass
class MediaOrigin:
    """A media server at an origin of its own: answers every GET with a redirect to
    `redirect_to`, or with `body`, and keeps the Authorization header of each request."""

    port: int
    body: bytes = b""
    redirect_to: str | None = None
    authorizations: list[str | None] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.authorizations.append(request.headers.get("authorization"))
        if self.redirect_to is not None:
            response = Response(status_code=302, headers={"Location": self.redirect_to})
        else:
            response = Response(self.body, media_type="audio/x-wav")
        await response(scope, receive, send)


@asynccontextmanager
async def serving_media(*origins: MediaOrigin) -> AsyncIterator[None]:
    """Each origin on its own real socket, in this event loop."""
    servers = [
        uvicorn.Server(
            uvicorn.Config(o, host="127.0.0.1", port=o.port, log_config=None, lifespan="off")
        )
        for o in origins
    ]
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        deadline = time.monotonic() + 30
        while not all(server.started for server in servers):
            for task in tasks:
                if task.done():
                    task.result()
                    raise RuntimeError("a media origin stopped while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("the media origins did not start in 30 s")
            await asyncio.sleep(0.02)
        yield
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)


@asynccontextmanager
async def running_downloader(settings: Settings) -> AsyncIterator[ObjectStore]:
    """The downloader as `callpipe run downloader` wires it, in this event loop."""
    async with AsyncExitStack() as stack:
        worker, store = await open_stage_worker("downloader", settings, stack)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            # Consuming once a first recording went through: tests can count from here.
            warm_up = recording_event(add_recording(settings), business_id="warm-up")
            await publish(settings, warm_up)
            await collect(settings, {warm_up.call_sid}, lambda s: bool(downloaded(s)))
            yield store
        finally:
            stop.set()
            await task


async def publish(settings: Settings, *events: RecordingCompleted) -> None:
    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    try:
        for event in events:
            await producer.publish(event)
    finally:
        await producer.stop()


@dataclass
class Seen:
    topic: str
    value: dict[str, Any]
    headers: dict[str, bytes]


async def collect(
    settings: Settings,
    call_sids: set[str],
    done: Callable[[list[Seen]], bool],
    within_seconds: float = 90,
) -> list[Seen]:
    """Every message of these calls on the downloader's output topics, until `done`."""
    consumer = AIOKafkaConsumer(
        "recording.downloaded",
        "stage.status",
        dead_letter_topic("downloader"),
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    envelopes = Envelopes.of(settings)
    seen: list[Seen] = []
    try:
        deadline = time.monotonic() + within_seconds
        while not done(seen):
            if time.monotonic() > deadline:
                pytest.fail(f"not done in {within_seconds} s; seen: {[s.value for s in seen]}")
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    value = json.loads(record.value)
                    if record.topic != "downloader.dlq":
                        decode(record.value)  # every output honours the contract
                    if value.get("call_sid") not in call_sids:
                        continue
                    if record.topic != "downloader.dlq":
                        # Seen as its consumers open it: with the keys of this test's calls.
                        event = await envelopes.open(decode(record.value))
                        if event is not None:
                            value = json.loads(encode(event))
                    seen.append(Seen(record.topic, value, dict(record.headers)))
    finally:
        await consumer.stop()
        await envelopes.close()
    return seen


def downloaded(seen: list[Seen]) -> list[dict[str, Any]]:
    return [s.value for s in seen if s.topic == "recording.downloaded"]


def terminal_failures(seen: list[Seen]) -> list[dict[str, Any]]:
    return [
        s.value
        for s in seen
        if s.value.get("event_type") == "stage.failed" and s.value.get("terminal")
    ]
