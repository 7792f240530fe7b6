"""Real parts for the ingress tests: a Kafka-protocol broker (Tansu, in memory) as a process,
the ingress and the Twilio simulator as real HTTP servers, and a reader of what reached Kafka.

CALLPIPE_TEST_PORT_OFFSET moves every port, so several checkouts can test side by side.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from callpipe.stack import tansu_binary
from services.ingress.deliveries import deliveries
from shared.call_keys import Envelopes
from shared.db import create_engine
from shared.events import AnyEvent, Topic, decode
from shared.settings import Settings

_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
BROKER_PORT = 20092 + _OFFSET
INGRESS_PORT = 20000 + _OFFSET
SECOND_INGRESS_PORT = 20001 + _OFFSET
SIMULATOR_PORT = 20090 + _OFFSET
AUTH_TOKEN = "ingress-test-auth-token"
ACCOUNT_SID = "AC" + "a1" * 16


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """Tansu with in-memory storage: a restart starts it empty."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not start on port {self.port}")
            time.sleep(0.05)

    def pause(self) -> None:
        """Freezes the broker: connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def ingress_settings(data_dir: Path, broker: Broker) -> Settings:
    return Settings(
        data_dir=data_dir,
        kafka={"bootstrap": f"127.0.0.1:{broker.port}", "partitions": 1},
        twilio={
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "api_base_url": f"http://127.0.0.1:{SIMULATOR_PORT}",
        },
        ingress={
            "public_base_url": f"http://127.0.0.1:{INGRESS_PORT}",
            "outbox_sweep_seconds": 0.2,
        },
        local={"simulator_port": SIMULATOR_PORT},
    )


@asynccontextmanager
async def serving(app: FastAPI, port: int) -> AsyncIterator[None]:
    """Runs an ASGI app on a real socket in this event loop, lifespan included."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"server on port {port} stopped while starting")
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


def signed_headers(url: str, params: dict[str, str], token: str | None = None) -> dict[str, str]:
    """What Twilio sends: a signature made with twilio's own RequestValidator."""
    headers = {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, params)}
    if token is not None:
        headers["I-Twilio-Idempotency-Token"] = token
    return headers


async def published(settings: Settings, topics: list[Topic] | None = None) -> list[AnyEvent]:
    """Every event on the given topics (all of callpipe's by default), from the beginning,
    opened with the calls' keys as a consumer does."""
    names = [t.value for t in (topics or list(Topic))]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(name, p)
            for name in names
            for p in sorted(consumer.partitions_for_topic(name) or ())
        ]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        raw: list[bytes] = []
        for _ in range(30):
            if not [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                return await _opened(settings, raw)
            batches = await consumer.getmany(timeout_ms=1000)
            raw.extend(record.value for batch in batches.values() for record in batch)
        raise AssertionError(f"the broker does not deliver up to its end offsets {ends}")
    finally:
        await consumer.stop()


async def _opened(settings: Settings, raw: list[bytes]) -> list[AnyEvent]:
    envelopes = Envelopes.of(settings)
    try:
        opened = await envelopes.open_all([decode(value) for value in raw])
    finally:
        await envelopes.close()
    return [event for event in opened if event is not None]


async def published_once_there(
    settings: Settings, call_sid: str, within_seconds: float = 60, count: int = 1
) -> list[AnyEvent]:
    """Every event on Kafka, once `count` of `call_sid` are there: the relay is connected and
    published them, and with them what was stored before them. A test that stops the
    ingress after fewer hands the rest back to the outbox unpublished."""
    deadline = time.monotonic() + within_seconds
    while True:
        events = await published(settings)
        if sum(e.call_sid == call_sid for e in events) >= count:
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"no event of {call_sid} on Kafka in {within_seconds} s")
        await asyncio.sleep(0.1)


async def stored_event_ids(settings: Settings) -> set[str]:
    """Every event the ingress stored, published or not: its dedupe table keeps them all."""
    engine = create_engine(settings.ingress_database_url)
    try:
        async with engine.connect() as connection:
            return set((await connection.execute(select(deliveries.c.event_id))).scalars())
    finally:
        await engine.dispose()
