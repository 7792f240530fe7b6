"""`stage.status` is shared out among the stages (decision 0918): no two stages write one
partition, whose concurrent writers the local broker holds up to a second each, and a call's
events of one stage stay on one partition, in order. A stage announces only the work that
outlasts a delay (decision 0920)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.call_keys import Envelopes
from shared.events import (
    AnyEvent,
    Event,
    Stage,
    StageStarted,
    Topic,
    encode,
    stage_status_partition,
)
from shared.kafka.producer import EventProducer
from shared.kafka.topics import records_to_end
from shared.kafka.worker import StageWorker, StageWorkerSettings
from shared.settings import Settings
from tests.support import events as factories
from tests.support.kafka import one_partition_topic
from tests.support.stack import PORTS, RunningStack

STAGES = list(Stage)


@pytest.mark.parametrize("partitions", [3, 4, 12, 13])
def test_each_stage_has_partitions_of_its_own(partitions: int) -> None:
    used = {
        stage: {stage_status_partition(stage, f"CA{n}", partitions) for n in range(500)}
        for stage in STAGES
    }
    assert all(used.values())
    assert sum(len(p) for p in used.values()) == len(set().union(*used.values()))  # disjoint
    assert set().union(*used.values()) <= set(range(partitions))
    assert all(len(p) == partitions // len(STAGES) for p in used.values())  # spread evenly


@pytest.mark.parametrize("partitions", [1, 2])
def test_with_fewer_partitions_than_stages_every_partition_is_valid(partitions: int) -> None:
    assert {stage_status_partition(s, "CA1", partitions) for s in STAGES} == set(range(partitions))


def test_a_calls_events_of_one_stage_stay_on_one_partition() -> None:
    assert len({stage_status_partition(Stage.TRANSCRIPT, "CA7", 12) for _ in range(10)}) == 1


@pytest.mark.stack
async def test_the_producer_sends_each_stages_status_to_that_stages_partition(
    stack: RunningStack,
) -> None:
    settings = Settings(kafka={"bootstrap": PORTS["CALLPIPE_KAFKA_BOOTSTRAP"]})
    call_sid = f"CA{uuid.uuid4().hex}"
    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    try:
        for stage in STAGES:
            await producer.publish(factories.stage_started(stage, call_sid, "demo"))
    finally:
        await producer.stop()
    topic = Topic.STAGE_STATUS.value
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        where = {
            StageStarted.model_validate_json(record.value).stage: record.partition
            async for record in records_to_end(consumer, partitions)
            if record.key == call_sid.encode()
        }
    finally:
        await consumer.stop()
    assert len(partitions) >= len(STAGES)
    assert where == {s: stage_status_partition(s, call_sid, len(partitions)) for s in STAGES}
    assert len(set(where.values())) == len(STAGES)


@pytest.mark.stack
async def test_a_stage_announces_only_the_work_that_outlasts_the_delay(
    stack: RunningStack,
) -> None:
    """Decision 0920: `stage.started` goes out once a stage's work has run
    `stage_started_after_ms`; work done sooner shows only its outcome."""
    settings = Settings(
        kafka={"bootstrap": PORTS["CALLPIPE_KAFKA_BOOTSTRAP"]},
        worker={"stage_started_after_ms": 300},
    )
    name = f"announce-{uuid.uuid4().hex[:8]}"
    topic = await one_partition_topic(settings, name)
    quick, slow = f"CA{uuid.uuid4().hex}", f"CA{uuid.uuid4().hex}"
    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    handled: set[str] = set()
    both_handled = asyncio.Event()

    async def handle(event: AnyEvent) -> list[Event]:
        if event.call_sid == slow:
            await asyncio.sleep(1.5)
        handled.add(event.call_sid)
        if handled == {quick, slow}:
            both_handled.set()
        return []

    worker = StageWorker(
        name, [topic], handle, StageWorkerSettings.of(settings), producer, stage=Stage.TRANSCRIPT
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        for sid in (quick, slow):
            event = factories.call_started(sid, "demo")
            await producer.publish_raw(topic, encode(event), sid.encode(), [])
        await asyncio.wait_for(both_handled.wait(), 60)
    finally:
        stop.set()
        await running
        await producer.stop()

    status = Topic.STAGE_STATUS.value
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap)
    await consumer.start()
    try:
        numbers = consumer.partitions_for_topic(status) or ()
        partitions = [TopicPartition(status, p) for p in numbers]
        consumer.assign(partitions)
        announced = [
            record.key.decode()
            async for record in records_to_end(consumer, partitions)
            if record.key in (quick.encode(), slow.encode())
        ]
    finally:
        await consumer.stop()
    assert announced == [slow]
