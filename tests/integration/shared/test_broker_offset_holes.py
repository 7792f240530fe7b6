"""Holes in a partition's offsets on the local broker: Tansu gives a produce its offset before
it writes the records to S3, so while one producer's write is slow another producer's later
record is readable first. A worker must neither skip the late record nor stall for good on a
record that is never written (decision 0914).

The broker reaches its S3 server through a proxy that can hold or refuse the write of one
record batch, which makes the slow write happen every time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from callpipe.stack import Stack
from lab.s3_proxy import Forward, Refuse, S3Proxy
from shared import metrics
from shared.call_keys import Envelopes
from shared.events import AnyEvent, encode
from shared.kafka.producer import EventProducer
from shared.kafka.worker import StageWorker, StageWorkerSettings
from shared.settings import Settings
from tests.support import events as factories
from tests.support.kafka import committed, one_partition_topic
from tests.support.stack import start_child

pytestmark = pytest.mark.stack

# Clear of the other tests' servers (the S3 server also takes +555…+1020, each +10000 too).
_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
S3_PORT = 24333 + _OFFSET
PROXY_PORT = S3_PORT + 1066
BROKER_PORT = 24092 + _OFFSET
HOLD_SECONDS = 3.0
FIRST_BATCH = "/records/00000000000000000000.batch"


@dataclass
class SlowWrites:
    """What the proxy does to the write of offset 0's batch of `topic` (once)."""

    topic: str = ""
    refuse: bool = False
    met: threading.Event = field(default_factory=threading.Event)

    def on_request(self, method: str, target: str) -> Forward | Refuse:
        if (
            method == "PUT"
            and self.topic
            and f"/topics/{self.topic}/" in target
            and target.endswith(FIRST_BATCH)
            and not self.met.is_set()
        ):
            self.met.set()
            return Refuse() if self.refuse else Forward(hold_seconds=HOLD_SECONDS)
        return Forward()


@pytest.fixture(scope="module")
def slow_writes() -> Iterator[SlowWrites]:
    """The proxy runs in a thread of its own: the broker uses it between tests too."""
    writes = SlowWrites()
    proxy = S3Proxy("127.0.0.1", S3_PORT, writes.on_request)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(proxy.start(port=PROXY_PORT))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield writes
    asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, slow_writes: SlowWrites) -> Iterator[Settings]:
    data_dir: Path = tmp_path_factory.mktemp("offset-holes")
    stack = Stack(
        Settings(
            data_dir=data_dir,
            s3={"endpoint_url": f"http://127.0.0.1:{S3_PORT}"},
            kafka={"bootstrap": f"127.0.0.1:{BROKER_PORT}"},
        )
    )
    settings = stack.settings
    s3, broker = stack.children[:2]
    assert (s3.name, broker.name) == ("s3", "broker")
    broker.env["AWS_ENDPOINT"] = f"http://127.0.0.1:{PROXY_PORT}"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(start_child(s3, data_dir, data_dir))
        processes.append(start_child(broker, data_dir, data_dir))
        yield settings
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(30)


def call_started(call_sid: str) -> bytes:
    return encode(factories.call_started(call_sid, "holes"))


def holes(worker: str, outcome: str) -> float:
    return metrics.OFFSET_HOLES.labels(worker, outcome)._value.get()  # type: ignore[no-any-return]


async def first_offset_a_plain_consumer_reads(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=None, fetch_max_wait_ms=50
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        while True:
            records = (await consumer.getmany(timeout_ms=100)).get(tp)
            if records:
                return records[0].offset
    finally:
        await consumer.stop()


class Recorder:
    def __init__(self, expected: int) -> None:
        self.handled: list[str] = []
        self._expected = expected
        self.all_seen = asyncio.Event()

    async def handle(self, event: AnyEvent) -> list[Any]:
        self.handled.append(event.call_sid)
        if len(self.handled) >= self._expected:
            self.all_seen.set()
        return []


async def test_a_record_written_late_is_handled_before_the_later_one_and_not_skipped(
    broker: Settings, slow_writes: SlowWrites
) -> None:
    name = f"holes-{secrets.token_hex(4)}"
    topic = await one_partition_topic(broker, name)
    slow_writes.topic, slow_writes.refuse = topic, False
    slow_writes.met.clear()
    first, second = (
        EventProducer(broker.kafka, Envelopes.of(broker)),
        EventProducer(broker.kafka, Envelopes.of(broker)),
    )
    await first.start()
    await second.start()
    recorder = Recorder(expected=2)
    worker = StageWorker(name, [topic], recorder.handle, StageWorkerSettings.of(broker), first)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 30)
    waited_before = holes(name, "waited")

    slow = asyncio.create_task(first.publish_raw(topic, call_started("CAfirst"), b"k", []))
    # Offset 0 is taken once its write reaches the proxy; offset 1 is written at once.
    await asyncio.to_thread(slow_writes.met.wait, 30)
    plain_reader = asyncio.create_task(first_offset_a_plain_consumer_reads(broker, topic))
    await second.publish_raw(topic, call_started("CAsecond"), b"k", [])
    # The broker shows offset 1 while 0 is still being written: a plain consumer skips 0.
    assert await asyncio.wait_for(plain_reader, 30) == 1
    await slow

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(recorder.all_seen.wait(), 30)
    stop.set()
    await running
    await first.stop()
    await second.stop()

    assert recorder.handled == ["CAfirst", "CAsecond"]
    assert holes(name, "waited") == waited_before + 1
    assert await committed(broker, name, topic) == 2


async def test_a_hole_that_never_fills_is_gone_past_after_the_patience(
    broker: Settings, slow_writes: SlowWrites
) -> None:
    name = f"holes-{secrets.token_hex(4)}"
    topic = await one_partition_topic(broker, name)
    slow_writes.topic, slow_writes.refuse = topic, True
    slow_writes.met.clear()
    settings = broker.updated(kafka={"offset_hole_patience_seconds": 1.0})
    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    recorder = Recorder(expected=1)
    worker = StageWorker(name, [topic], recorder.handle, StageWorkerSettings.of(settings), producer)
    skipped_before = holes(name, "skipped")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 30)

    # The write of offset 0 is refused after the offset was taken: a hole for good.
    with contextlib.suppress(KafkaError):
        await producer.publish_raw(topic, call_started("CAlost"), b"k", [])
    assert slow_writes.met.is_set()
    await producer.publish_raw(topic, call_started("CAafter"), b"k", [])
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(recorder.all_seen.wait(), 30)
    stop.set()
    await running
    await producer.stop()

    assert recorder.handled[-1] == "CAafter"
    assert holes(name, "skipped") == skipped_before + 1
    assert await committed(settings, name, topic) == 2
