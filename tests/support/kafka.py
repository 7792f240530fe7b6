"""Kafka helpers of the tests that drive a stage worker on a topic of their own."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.kafka.topics import dead_letter_topic
from shared.settings import Settings


async def one_partition_topic(settings: Settings, name: str) -> str:
    """Creates `<name>.in` and worker `name`'s dead-letter topic, one partition each."""
    topic = f"{name}.in"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1), NewTopic(dead_letter_topic(name), 1, 1)])
    await admin.close()
    return topic


async def committed(settings: Settings, group: str, topic: str) -> int | None:
    """The group's committed offset on the topic's partition 0."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=group)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(topic, 0))
        return offset
    finally:
        await consumer.stop()
