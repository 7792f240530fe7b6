"""A consumer group after its broker restarts: every partition of the topics it consumes is
assigned again, and events on each are handled, within seconds, even when the rebalance after
the restart was made while the broker answered a topic's metadata with an error (as Tansu can
right after a restart: UnknownError). aiokafka refreshes metadata on its own only every
`metadata_max_age_ms` (five minutes), so such a topic's partitions would wait that long."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.cluster import ClusterMetadata

from callpipe.stack import Stack
from services.player.projector import projected_topics
from shared.call_keys import Envelopes
from shared.events import AnyEvent, Event, encode
from shared.kafka.connection import client_options
from shared.kafka.producer import EventProducer
from shared.kafka.topics import ensure_topics
from shared.kafka.worker import StageWorker, StageWorkerSettings
from shared.settings import Settings
from shared.storage import transcript_key
from tests.support import events as factories
from tests.support.stack import start_child

# Ports of this file's broker and S3 server (it also takes +555…+1020 and each +10000): clear
# of every other module's servers.
_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
BROKER_PORT = 27892 + _OFFSET
S3_PORT = 27833 + _OFFSET

# As the player runs them: this many members of one group, on every topic it projects.
MEMBERS = 3
GROUP = "player"
# The topic whose metadata the broker answers with an error while the group rebalances.
FAILING_TOPIC = "transcript.ready"
# Down this long, the broker forgets the group's members (past their session timeout): the
# group rebalances once the broker is back.
DOWN_SECONDS = 12.0
JOIN_SECONDS = 45.0
# Far below aiokafka's own metadata refresh (five minutes).
RECOVERY_SECONDS = 30.0
UNKNOWN_SERVER_ERROR = -1


@dataclass
class MetadataFault:
    """While on, every metadata answer the consumers take in carries UnknownError for
    FAILING_TOPIC, as the broker's answer did."""

    on: bool = False
    answers_changed: int = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = ClusterMetadata.update_metadata

        def update_metadata(cluster: ClusterMetadata, metadata: Any) -> None:
            if self.on:
                topics = []
                for topic in metadata.topics:
                    if topic[1] == FAILING_TOPIC:
                        topic = (UNKNOWN_SERVER_ERROR, topic[1], topic[2], [])
                        self.answers_changed += 1
                    topics.append(topic)
                metadata.topics = topics
            original(cluster, metadata)

        monkeypatch.setattr(ClusterMetadata, "update_metadata", update_metadata)


class Servers:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        stack = Stack(
            Settings(
                data_dir=data_dir,
                kafka={"bootstrap": f"127.0.0.1:{BROKER_PORT}"},
                s3={"endpoint_url": f"http://127.0.0.1:{S3_PORT}"},
            )
        )
        self.settings = stack.settings
        self.children = {child.name: child for child in stack.children}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    async def start(self, name: str) -> None:
        self.processes[name] = await asyncio.to_thread(
            start_child, self.children[name], self.data_dir, self.data_dir
        )

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes.pop(name)
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    running = Servers(tmp_path)
    try:
        await running.start("s3")
        await running.start("broker")
        yield running
    finally:
        running.stop_all()


async def all_partitions(settings: Settings, topics: list[str]) -> set[TopicPartition]:
    producer = AIOKafkaProducer(**client_options(settings.kafka))
    await producer.start()
    try:
        return {
            TopicPartition(topic, partition)
            for topic in topics
            for partition in await producer.partitions_for(topic)
        }
    finally:
        await producer.stop()


async def until(condition: Any, seconds: float) -> float | None:
    """Seconds until `condition()` held, or None if it did not within `seconds`."""
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        if condition():
            return time.monotonic() - began
        await asyncio.sleep(0.1)
    return None


@pytest.mark.stack
async def test_after_a_broker_restart_every_partition_is_assigned_and_handled_in_seconds(
    servers: Servers, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = servers.settings
    await ensure_topics(settings.kafka)
    topics = projected_topics()
    partitions = await all_partitions(settings, topics)
    assert TopicPartition(FAILING_TOPIC, 0) in partitions

    fault = MetadataFault()
    fault.install(monkeypatch)
    caplog.set_level(logging.INFO, logger="shared.kafka")

    def assignments() -> list[str]:
        """The members' assignments, as the workers log each."""
        return [
            record.getMessage()
            for record in caplog.records
            if record.getMessage().startswith(f"{GROUP} assigned")
        ]

    handled: set[str] = set()

    async def handle(event: AnyEvent) -> list[Event]:
        handled.add(event.call_sid)
        return []

    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    workers = [
        StageWorker(GROUP, topics, handle, StageWorkerSettings.of(settings), producer)
        for _ in range(MEMBERS)
    ]
    stop = asyncio.Event()
    running = [asyncio.create_task(worker.run(stop)) for worker in workers]

    def assigned() -> set[TopicPartition]:
        return {
            tp
            for worker in workers
            if worker._consumer is not None
            for tp in worker._consumer.assignment()
        }

    try:
        assert await until(lambda: assigned() == partitions, JOIN_SECONDS) is not None, (
            assignments()
        )
        # The broker dies and comes back; until every member has its assignment of the
        # rebalance that follows, it answers FAILING_TOPIC's metadata with UnknownError.
        fault.on = True
        servers.kill("broker")
        await asyncio.sleep(DOWN_SECONDS)
        before = len(assignments())
        await servers.start("broker")
        restarted = time.monotonic()
        # Each member takes in such an answer (aiokafka asks again once a connection is back;
        # asked here, so that every member, the group's next leader among them, has).
        consumers = [worker._consumer for worker in workers if worker._consumer is not None]
        await asyncio.gather(*(consumer._client.force_metadata_update() for consumer in consumers))
        assert [c.partitions_for_topic(FAILING_TOPIC) for c in consumers] == [None] * MEMBERS
        rebalanced = await until(lambda: len(assignments()) >= before + MEMBERS, JOIN_SECONDS)
        fault.on = False
        assert rebalanced is not None, f"no rebalance after the restart: {assignments()}"
        assert fault.answers_changed, "no metadata answer was taken in during the rebalance"

        all_assigned = await until(lambda: assigned() == partitions, RECOVERY_SECONDS)
        after = time.monotonic() - restarted
        print(f"every partition assigned {after:.1f} s after the broker was back")
        assert all_assigned is not None, (
            f"unassigned {RECOVERY_SECONDS:.0f} s after the rebalance: "
            f"{sorted(partitions - assigned())}; {assignments()}"
        )

        sent = await publish_one_to_each(settings, partitions)
        took = await until(lambda: sent <= handled, RECOVERY_SECONDS)
        assert took is not None, f"not handled: {sorted(sent - handled)}"
        print(f"an event on each partition handled in {took:.1f} s")
    finally:
        stop.set()
        await asyncio.gather(*running, return_exceptions=True)
        await producer.stop()


async def publish_one_to_each(settings: Settings, partitions: set[TopicPartition]) -> set[str]:
    """A transcript.ready on every partition (the workers here take any event): their SIDs."""
    producer = AIOKafkaProducer(**client_options(settings.kafka))
    await producer.start()
    sent = set()
    try:
        for tp in sorted(partitions):
            call_sid = f"CA{tp.topic.replace('.', '')}{tp.partition}"
            event = factories.transcript_ready(
                call_sid,
                "restart",
                outcome="no_speech",
                transcript_key=transcript_key("restart", call_sid, "RE" + call_sid[2:]),
            )
            await producer.send_and_wait(
                tp.topic, encode(event), key=call_sid.encode(), partition=tp.partition
            )
            sent.add(call_sid)
    finally:
        await producer.stop()
    return sent
