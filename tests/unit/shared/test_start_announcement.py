"""A stage's `stage.started` goes out only once its work has run the delay, and never after
its outcome (shared/kafka/worker.py `StartAnnouncement`, decision 0920)."""

from __future__ import annotations

import asyncio

from shared.kafka.worker import StartAnnouncement


class Publisher:
    """Counts publishes; each takes `seconds` to be acknowledged."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.begun = 0
        self.acknowledged = 0

    async def publish(self) -> None:
        self.begun += 1
        await asyncio.sleep(self.seconds)
        self.acknowledged += 1


async def test_work_done_within_the_delay_announces_nothing() -> None:
    publisher = Publisher()
    with StartAnnouncement(0.2, publisher.publish) as announcement:
        await asyncio.sleep(0.05)  # the work
        await announcement.settle()
    await asyncio.sleep(0.3)  # past the delay: the dropped announcement stays dropped
    assert publisher.begun == 0


async def test_work_outlasting_the_delay_is_announced_once_and_before_its_outcome() -> None:
    publisher = Publisher(seconds=0.2)
    with StartAnnouncement(0.05, publisher.publish) as announcement:
        await asyncio.sleep(0.1)  # the work: the announcement is being published
        assert (publisher.begun, publisher.acknowledged) == (1, 0)
        await announcement.settle()
        assert publisher.acknowledged == 1  # acknowledged before the outcome would go out
        await announcement.settle()  # settling again publishes nothing more
    assert publisher.begun == 1


async def test_a_delay_of_zero_announces_even_instant_work() -> None:
    publisher = Publisher()
    with StartAnnouncement(0.0, publisher.publish) as announcement:
        await asyncio.sleep(0)  # the work yields once
        await announcement.settle()
    assert publisher.acknowledged == 1


async def test_a_message_handed_back_before_the_delay_is_not_announced() -> None:
    publisher = Publisher()

    async def work() -> None:
        with StartAnnouncement(0.1, publisher.publish):
            await asyncio.sleep(3600)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.02)
    task.cancel()  # the shutdown's hand-back cancels the message's work
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.2)
    assert publisher.begun == 0


async def test_a_failed_announcement_fails_the_outcome_as_a_failed_publish_would() -> None:
    async def broker_down() -> None:
        raise ConnectionError("broker unreachable")

    with StartAnnouncement(0.0, broker_down) as announcement:
        await asyncio.sleep(0.01)
        try:
            await announcement.settle()
        except ConnectionError as error:
            assert "unreachable" in str(error)
        else:
            raise AssertionError("settle() hid the failed publish")
