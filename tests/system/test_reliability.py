"""Failure handling on the shared test stack: poison messages, transient failures, dead letters
re-driven after a fix (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from callpipe.dlq import list_dead_letters
from shared.call_keys import Envelopes
from shared.events import AnyEvent, encode
from shared.kafka.producer import EventProducer
from shared.kafka.topics import dead_letter_topic
from shared.kafka.worker import StageWorker, StageWorkerSettings
from shared.retry import TerminalError
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.support import events as factories
from tests.support.kafka import committed, one_partition_topic
from tests.support.stack import RunningStack

pytestmark = pytest.mark.stack


def call_started(call_sid: str, **changes: Any) -> bytes:
    event = factories.call_started(call_sid, "reliability")
    return encode(event.model_copy(update=changes))


@contextlib.asynccontextmanager
async def working(worker: StageWorker) -> AsyncIterator[None]:
    """The worker running while the block runs, then stopped as SIGTERM stops it."""
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await running


async def handled_until(
    settings: Settings, name: str, topic: str, producer: EventProducer, last_call_sid: str
) -> list[AnyEvent]:
    """What a worker of group `name` handles of `topic` until it has handled `last_call_sid`
    (60 s at the most)."""
    handled: list[AnyEvent] = []
    last_seen = asyncio.Event()

    async def handle(event: AnyEvent) -> list[Any]:
        handled.append(event)
        if event.call_sid == last_call_sid:
            last_seen.set()
        return []

    worker = StageWorker(name, [topic], handle, StageWorkerSettings.of(settings), producer)
    async with working(worker):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(last_seen.wait(), 60)
    return handled


async def test_poison_messages_go_to_the_dead_letter_topic_and_the_partition_keeps_flowing(
    stack: RunningStack,
) -> None:
    settings = stack.settings.updated(kafka={"partitions": 1})
    name = f"poison-{secrets.token_hex(4)}"
    topic = f"{name}.in"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1), NewTopic(dead_letter_topic(name), 1, 1)])
    await admin.close()

    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    key = b"CApoison"  # one key: everything lands on the one partition, in this order
    poison = [
        b"\x00\xffnot json",
        b'{"event_type": "call.started", "call_sid": "CApoison"}',
        call_started("CApoison", schema_version=99),
        # Forged: it names another business's audio from outside its own business.
        call_started("CApoison", business_id="../electrician"),
    ]
    for value in [*poison, call_started("CAhealthy")]:
        await producer.publish_raw(topic, value, key, [])

    events = await handled_until(settings, name, topic, producer, "CAhealthy")
    handled = [event.call_sid for event in events]

    assert handled == ["CAhealthy"]
    letters = await list_dead_letters(settings, [name])
    await producer.stop()
    assert [letter.value for letter in letters] == poison
    assert [letter.source_offset for letter in letters] == [0, 1, 2, 3]
    assert {letter.source_topic for letter in letters} == {topic}
    assert all(letter.tries == 0 and letter.key is not None for letter in letters)
    reasons = [letter.reason for letter in letters]
    assert reasons[0].startswith("invalid event")
    assert "business_id" in reasons[1]  # the wrong schema names the missing field
    assert reasons[2].startswith("unknown schema version 99")
    assert "business_id is not a slug" in reasons[3]

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=name)
    await consumer.start()
    committed = await consumer.committed(TopicPartition(topic, 0))
    await consumer.stop()
    assert committed == 5  # past the poison: nothing is redelivered


async def test_a_second_copy_of_a_handled_event_is_absorbed_and_a_retry_is_not(
    stack: RunningStack,
) -> None:
    """A send the broker stored twice puts one event on the topic twice, same id: the worker
    handles it once. A retry (the same input under the next attempt's id) is handled."""
    settings = stack.settings.updated(kafka={"partitions": 1})
    name = f"copies-{secrets.token_hex(4)}"
    topic = await one_partition_topic(settings, name)
    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    first = factories.call_started("CAcopy", "reliability")
    retry = first.model_copy(update={"event_id": uuid.uuid4(), "attempt": 2})
    last = call_started("CAlast")
    for value in [encode(first), encode(first), encode(retry), last]:
        await producer.publish_raw(topic, value, b"CAcopy", [])

    events = await handled_until(settings, name, topic, producer, "CAlast")
    handled = [(event.call_sid, event.attempt) for event in events]
    await producer.stop()

    assert handled == [("CAcopy", 1), ("CAcopy", 2), ("CAlast", 1)]
    assert await committed(settings, name, topic) == 4  # the copy is committed, not redelivered


async def test_on_sigterm_a_worker_commits_what_it_finished_and_hands_back_the_rest(
    stack: RunningStack,
) -> None:
    settings = stack.settings.updated(shutdown={"grace_seconds": 1.0})
    name = f"shutdown-{secrets.token_hex(4)}"
    topic = await one_partition_topic(settings, name)
    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    sids = ["CAfirst", "CAstuck", "CAthird"]
    for sid in sids:
        await producer.publish_raw(topic, call_started(sid), sid.encode(), [])

    seen: list[str] = []
    third_done = asyncio.Event()

    async def handle(event: AnyEvent) -> list[Any]:
        seen.append(event.call_sid)
        if event.call_sid == "CAstuck":
            await asyncio.sleep(3600)  # e.g. waiting out a retry backoff
        if event.call_sid == "CAthird":
            third_done.set()
        return []

    worker = StageWorker(name, [topic], handle, StageWorkerSettings.of(settings), producer)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(third_done.wait(), 60)
    stop.set()  # what the SIGTERM handler does
    began = time.monotonic()
    await asyncio.wait_for(running, 30)
    assert time.monotonic() - began < 10  # the grace period, not the stuck message's hour
    # Offset 0 is done; 1 was handed back, so 2 waits behind it: both come again.
    assert await committed(settings, name, topic) == 1

    events = await handled_until(settings, name, topic, producer, "CAthird")
    again = [event.call_sid for event in events]
    await producer.stop()
    assert again == ["CAstuck", "CAthird"]
    assert await committed(settings, name, topic) == 3


async def _publish_together(settings: Settings, topic: str, call_sids: list[str]) -> None:
    """One produce request for all of them, so that one poll fetches them together."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, linger_ms=500)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, call_started(sid), key=sid.encode(), partition=0)
            for sid in call_sids
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _wait_for_commit(settings: Settings, group: str, topic: str, offset: int) -> None:
    deadline = time.monotonic() + 60
    while (committed_at := await committed(settings, group, topic)) != offset:
        assert time.monotonic() < deadline, f"committed {committed_at}, not {offset}, in 60 s"
        await asyncio.sleep(0.5)


async def test_a_poison_event_in_a_batch_is_dead_lettered_and_the_rest_applied(
    stack: RunningStack,
) -> None:
    settings = stack.settings
    name = f"batch-poison-{secrets.token_hex(4)}"
    topic = await one_partition_topic(settings, name)
    sids = ["CAbatch1", "CAbatchpoison", "CAbatch3"]
    await _publish_together(settings, topic, sids)

    batches: list[list[str]] = []
    applied: list[str] = []  # what a transaction committed

    def check(event: AnyEvent) -> None:
        if event.call_sid == "CAbatchpoison":
            raise TerminalError("cannot be projected")

    async def handle_batch(events: Sequence[AnyEvent]) -> list[Any]:
        batches.append([event.call_sid for event in events])
        for event in events:
            check(event)  # before anything is applied: all or nothing
        applied.extend(event.call_sid for event in events)
        return []

    async def handle(event: AnyEvent) -> list[Any]:
        check(event)
        applied.append(event.call_sid)
        return []

    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    worker = StageWorker(
        name, [topic], handle, StageWorkerSettings.of(settings), producer, handle_batch=handle_batch
    )
    async with working(worker):
        await _wait_for_commit(settings, name, topic, 3)
    letters = await list_dead_letters(settings, [name])
    await producer.stop()

    assert batches[0] == sids  # the three came in one poll and went to the batch handler
    assert sorted(applied) == ["CAbatch1", "CAbatch3"]
    assert [(letter.source_offset, letter.tries) for letter in letters] == [(1, 1)]
    assert json.loads(letters[0].value)["call_sid"] == "CAbatchpoison"
    assert "cannot be projected" in letters[0].reason


async def test_a_batch_worker_killed_before_its_transaction_commits_commits_no_offset(
    stack: RunningStack,
) -> None:
    settings = stack.settings
    name = f"batch-crash-{secrets.token_hex(4)}"
    topic = await one_partition_topic(settings, name)
    sids = ["CAcrash1", "CAcrash2", "CAcrash3"]
    await _publish_together(settings, topic, sids)
    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()

    in_transaction = asyncio.Event()

    async def hang_in_transaction(events: Sequence[AnyEvent]) -> list[Any]:
        in_transaction.set()
        await asyncio.Event().wait()  # the process dies here
        return []

    async def handle(event: AnyEvent) -> list[Any]:
        raise AssertionError("a batch that did not fail is not handled one by one")

    worker = StageWorker(
        name,
        [topic],
        handle,
        StageWorkerSettings.of(settings),
        producer,
        handle_batch=hang_in_transaction,
    )
    running = asyncio.create_task(worker.run(asyncio.Event()))
    await asyncio.wait_for(in_transaction.wait(), 60)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert await committed(settings, name, topic) is None

    again: list[str] = []
    all_again = asyncio.Event()

    async def apply_again(events: Sequence[AnyEvent]) -> list[Any]:
        again.extend(event.call_sid for event in events)
        if len(again) >= len(sids):
            all_again.set()
        return []

    restarted = StageWorker(
        name, [topic], handle, StageWorkerSettings.of(settings), producer, handle_batch=apply_again
    )
    async with working(restarted):
        await asyncio.wait_for(all_again.wait(), 60)
        await _wait_for_commit(settings, name, topic, 3)
    await producer.stop()
    assert again == sids


async def test_a_running_worker_commits_at_most_once_per_interval_and_everything_at_stop(
    stack: RunningStack,
) -> None:
    settings = stack.settings.updated(kafka={"commit_interval_ms": 3_600_000})
    name = f"interval-{secrets.token_hex(4)}"
    topic = await one_partition_topic(settings, name)
    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    await producer.start()
    handled: list[str] = []
    later_done = asyncio.Event()

    async def handle(event: AnyEvent) -> list[Any]:
        handled.append(event.call_sid)
        if len(handled) == 3:
            later_done.set()
        return []

    stop = asyncio.Event()
    running = asyncio.create_task(
        StageWorker(name, [topic], handle, StageWorkerSettings.of(settings), producer).run(stop)
    )
    await producer.publish_raw(topic, call_started("CAfirst"), b"CAfirst", [])
    deadline = time.monotonic() + 60
    while await committed(settings, name, topic) != 1:  # the first commit is not held back
        assert time.monotonic() < deadline, "the first message was never committed"
        await asyncio.sleep(0.2)
    for sid in ("CAsecond", "CAthird"):
        await producer.publish_raw(topic, call_started(sid), sid.encode(), [])
    await asyncio.wait_for(later_done.wait(), 60)
    # Finished, but within the interval of the first commit: not committed yet (a worker
    # committing at every poll would have within a few hundred milliseconds).
    watch_until = time.monotonic() + 2
    while time.monotonic() < watch_until:
        assert await committed(settings, name, topic) == 1
    stop.set()
    await asyncio.wait_for(running, 30)
    await producer.stop()
    assert await committed(settings, name, topic) == 3


async def _objects_of(stack: RunningStack, call: dict[str, Any]) -> list[str]:
    store = ObjectStore(stack.settings.s3)
    await store.start()
    try:
        return [key for key in await store.keys("") if call["call_sid"] in key]
    finally:
        await store.stop()


def test_a_stage_failing_transiently_three_times_then_succeeding_completes_once(
    stack: RunningStack,
) -> None:
    call_sid = stack.place_call(
        "plumber_boston", media_delay_seconds=0, media_error_status=503, media_error_count=3
    )
    call = stack.wait_for_call(call_sid)

    assert call["status"] == "completed", json.dumps(call, indent=2)
    events = [e["event_type"] for e in call["timeline"]]
    assert events.count("stage.failed") == 3, events  # three tries reported "will retry"
    assert call["recording_tries"] == 3
    assert "503" in (call["recording_error"] or "")  # history, on its stage
    assert call["last_error"] is None  # not the error of a call that completed
    for once in ("recording.downloaded", "transcript.ready", "summary.ready"):
        assert events.count(once) == 1, events
    objects = asyncio.run(_objects_of(stack, call))
    assert len(objects) == 3, objects  # the audio, its manifest, the transcript


def _callpipe(stack: RunningStack, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "callpipe", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _wait_until(stack: RunningStack, call_sid: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    call: dict[str, Any] = {}
    while time.monotonic() < deadline:
        call = stack.api.get(f"/api/calls/{call_sid}").json()
        if call["status"] == status:
            return call
        time.sleep(0.5)
    pytest.fail(f"call {call_sid} not {status} in 90 s: {call}")


def test_redriving_a_dead_letter_after_the_fix_completes_the_call(stack: RunningStack) -> None:
    # Twilio refuses the media once (403: terminal, no retry), then serves it: "the fix".
    call_sid = stack.place_call(
        "plumber_boston", media_delay_seconds=0, media_error_status=403, media_error_count=1
    )
    failed = stack.wait_for_call(call_sid)
    assert failed["status"] == "failed"
    assert failed["recording_status"] == "failed"

    listed = [json.loads(line) for line in _callpipe(stack, "dlq", "list").splitlines()]
    mine = [letter for letter in listed if letter["call_sid"] == call_sid]
    assert len(mine) == 1, listed
    assert mine[0]["worker"] == "downloader"
    assert "403" in mine[0]["reason"]
    assert mine[0]["source"].startswith("recording.completed:")

    for _ in range(2):  # a second re-drive of the same dead letter changes nothing
        _callpipe(
            stack, "dlq", "redrive", "--worker", "downloader", "--offset", mine[0]["dlq_offset"]
        )
        call = _wait_until(stack, call_sid, "completed")
    time.sleep(3)
    call = stack.api.get(f"/api/calls/{call_sid}").json()
    assert call["status"] == "completed"
    assert call["recording_attempt"] == 2
    events = [e["event_type"] for e in call["timeline"]]
    for once in ("recording.downloaded", "transcript.ready", "summary.ready"):
        assert events.count(once) == 1, events
    assert len(asyncio.run(_objects_of(stack, call))) == 3


def test_a_lost_recording_callback_is_reconciled_from_twilios_recording_list(
    stack: RunningStack,
) -> None:
    call_sid = stack.place_call(
        "voicemail_austin", media_delay_seconds=0, lose_recording_callback=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = stack.api.get(f"/api/calls/{call_sid}")
        if response.status_code == 200 and any(
            e["event_type"] == "call.status" and "completed" in (e["detail"] or "")
            for e in stack.api.get(f"/api/calls/{call_sid}/timeline").json()
        ):
            break
        time.sleep(0.5)
    assert stack.api.get(f"/api/calls/{call_sid}").json()["recording_status"] == "pending"

    env = {
        **stack.env,
        "CALLPIPE_RECONCILE_RECORDING_AFTER_SECONDS": "0",
        "CALLPIPE_TWILIO_API_BASE_URL": stack.simulator,
    }
    result = subprocess.run(
        [sys.executable, "-m", "callpipe", "reconcile", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout).get("replayed_recording", 0) >= 1, result.stdout

    call = stack.wait_for_call(call_sid)
    assert call["status"] == "completed", json.dumps(call, indent=2)
    assert call["recording_status"] == "completed"
