"""The idempotent producer follows the broker: on where it grants producer ids (Apache Kafka),
off where it does not (Tansu, the local broker), unless set explicitly."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka_errors

from shared.call_keys import Envelopes
from shared.kafka.producer import EventProducer
from shared.kafka.tansu_workarounds import broker_supports_idempotence, grants_producer_ids
from shared.settings import Settings
from tests.support.stack import PORTS, RunningStack


@pytest.mark.parametrize(
    ("answer", "granted"),
    [
        (kafka_errors.NoError, True),
        (kafka_errors.CoordinatorLoadInProgressError, True),  # a broker still starting
        (kafka_errors.UnknownError, False),  # Tansu 0.6's answer
        (kafka_errors.UnsupportedVersionError, False),
        (kafka_errors.ClusterAuthorizationFailedError, False),
    ],
)
def test_a_producer_id_or_a_retriable_error_means_granted(
    answer: type[kafka_errors.KafkaError], granted: bool
) -> None:
    assert grants_producer_ids(answer.errno) is granted


def _settings(idempotent: bool | str) -> Settings:
    return Settings(
        kafka={"bootstrap": PORTS["CALLPIPE_KAFKA_BOOTSTRAP"], "idempotent_producer": idempotent}
    )


@pytest.mark.stack
async def test_auto_turns_idempotence_off_on_tansu_and_publishes_with_acks_all(
    stack: RunningStack,
) -> None:
    bootstrap = PORTS["CALLPIPE_KAFKA_BOOTSTRAP"]
    assert await broker_supports_idempotence(_settings("auto").kafka) is False
    topic = f"probe.{uuid.uuid4().hex}"
    producer = EventProducer(_settings("auto").kafka, Envelopes.of(_settings("auto")))
    await producer.start()
    try:
        assert producer.idempotent is False
        await producer.publish_raw(topic, b"acknowledged", b"CAprobe", [])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"CAprobe", b"acknowledged")


@pytest.mark.stack
async def test_forcing_idempotence_on_tansu_fails_at_start_as_the_probe_predicts(
    stack: RunningStack,
) -> None:
    producer = EventProducer(_settings(True).kafka, Envelopes.of(_settings(True)))
    with pytest.raises(kafka_errors.UnknownError):
        await producer.start()
    await producer.stop()
