"""The ingress's outbox over real HTTP, a real broker and a real database (decision 0912): a
webhook is answered once its event is stored in SQL, and the event reaches Kafka exactly once
however the broker or the ingress comes and goes."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text, update

from callpipe.bootstrap import ingress_app
from services.ingress.deliveries import deliveries, outbox
from services.player import core as player
from shared.db import create_engine
from shared.events import AnyEvent, encode
from shared.settings import Settings
from tests.integration.ingress.test_webhooks import INGRESS, RECORDING_CALLBACK, post
from tests.support.ingress import INGRESS_PORT, SECOND_INGRESS_PORT, Broker, published, serving

PATIENCE_SECONDS = 60


@pytest.fixture
def database_settings(settings: Settings, database_url: str) -> Settings:
    return settings.updated(database={"url": database_url})


def fresh_callback() -> dict[str, str]:
    """A recording callback with a recording SID of its own."""
    return {**RECORDING_CALLBACK, "RecordingSid": "RE" + secrets.token_hex(16)}


async def on_kafka(settings: Settings, recording_sid: str) -> list[AnyEvent]:
    """The events of this recording on Kafka, once there is one (or after the patience)."""
    for _ in range(PATIENCE_SECONDS * 4):
        events = [
            e for e in await published(settings) if getattr(e, "recording_sid", "") == recording_sid
        ]
        if events:
            return events
        await asyncio.sleep(0.25)
    return []


async def broker_state(base: str = INGRESS) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(base + "/healthz")
    answer.raise_for_status()
    return str(answer.json()["broker"])


async def test_with_the_broker_away_at_start_webhooks_are_stored_then_published_once(
    database_settings: Settings, broker: Broker
) -> None:
    callback = fresh_callback()
    broker.stop()
    async with serving(ingress_app(database_settings), INGRESS_PORT):
        state_while_away = await broker_state()
        # Twilio's delivery and a retry of it, while the broker is away.
        answers = [await post("/twilio/recording-status", callback) for _ in range(2)]
        concurrent = await asyncio.gather(
            *(post("/twilio/recording-status", callback) for _ in range(3))
        )
        broker.start()
        events = await on_kafka(database_settings, callback["RecordingSid"])
        state_once_back = await broker_state()
    assert state_while_away == "connecting"
    assert [a.status_code for a in [*answers, *concurrent]] == [204] * 5
    assert state_once_back == "connected"
    assert [e.event_type for e in events] == ["recording.completed"]
    # Nothing more reached Kafka by the stop either.
    assert len(await on_kafka(database_settings, callback["RecordingSid"])) == 1


async def test_a_webhook_stored_while_the_broker_hangs_is_published_once_it_answers(
    database_settings: Settings, broker: Broker
) -> None:
    callback = fresh_callback()
    async with serving(ingress_app(database_settings), INGRESS_PORT):
        await wait_until_connected()
        broker.pause()
        try:
            down = await post("/twilio/recording-status", callback)
            retried_while_down = await post("/twilio/recording-status", callback)
        finally:
            broker.resume()
        events = await on_kafka(database_settings, callback["RecordingSid"])
    assert (down.status_code, retried_while_down.status_code) == (204, 204)
    assert [e.event_type for e in events] == ["recording.completed"]


def ingress_process(settings: Settings, log_file: Path) -> subprocess.Popen[bytes]:
    """`callpipe run ingress`, as the stack runs it, configured through the environment."""
    env = {
        **os.environ,
        "CALLPIPE_DATA_DIR": str(settings.data_dir),
        "CALLPIPE_DATABASE_URL": settings.database.url,
        "CALLPIPE_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
        "CALLPIPE_KAFKA_PARTITIONS": str(settings.kafka.partitions),
        "TWILIO_AUTH_TOKEN": settings.twilio.auth_token.get_secret_value(),
        "TWILIO_ACCOUNT_SID": settings.twilio.account_sid,
        "CALLPIPE_PUBLIC_BASE_URL": f"http://127.0.0.1:{SECOND_INGRESS_PORT}",
        "CALLPIPE_INGRESS_PORT": str(SECOND_INGRESS_PORT),
        # Short, so that the instance taking over does not wait long for the lease to run out.
        "CALLPIPE_INGRESS_OUTBOX_LEASE_SECONDS": "3",
    }
    with log_file.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "callpipe", "run", "ingress"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def wait_until_connected(
    base: str = INGRESS, process: subprocess.Popen[bytes] | None = None
) -> None:
    for _ in range(PATIENCE_SECONDS * 10):
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the ingress exited with {process.returncode}")
        try:
            if await broker_state(base) == "connected":
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the ingress did not connect to the broker")


async def test_an_ingress_killed_after_storing_and_before_publishing_is_taken_over(
    database_settings: Settings, broker: Broker, tmp_path: Path
) -> None:
    callback = fresh_callback()
    second = f"http://127.0.0.1:{SECOND_INGRESS_PORT}"
    process = ingress_process(database_settings, tmp_path / "killed-ingress.log")
    try:
        await wait_until_connected(second, process)
        # The broker hangs: the event is stored, under the lease of this instance, and its
        # send never finishes.
        broker.pause()
        stored = await post("/twilio/recording-status", callback, base=second)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        broker.resume()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert stored.status_code == 204, stored.text
    # Another instance (or this one restarted) publishes it once the lease ran out.
    async with serving(ingress_app(database_settings), INGRESS_PORT):
        events = await on_kafka(database_settings, callback["RecordingSid"])
    assert [e.event_type for e in events] == ["recording.completed"]


async def test_a_duplicate_on_kafka_after_a_crash_before_the_mark_is_one_call_downstream(
    database_settings: Settings, broker: Broker, tmp_path: Path
) -> None:
    """Kafka acknowledged, then the instance died before marking the event published: the
    next sweep publishes it again under the same event id, which the player's projection
    applies once."""
    callback = fresh_callback()
    async with serving(ingress_app(database_settings), INGRESS_PORT):
        assert (await post("/twilio/recording-status", callback)).status_code == 204
        [first] = await on_kafka(database_settings, callback["RecordingSid"])
    engine = create_engine(database_settings.ingress_database_url)
    async with engine.begin() as connection:
        # What a crash between the acknowledgement and the mark leaves: unpublished, its
        # payload stored, the lease run out.
        await connection.execute(
            outbox.insert().values(event_id=str(first.event_id), event_json=encode(first).decode())
        )
        await connection.execute(
            update(deliveries)
            .where(deliveries.c.event_id == str(first.event_id))
            .values(published_at=None, claimed_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    await engine.dispose()
    async with serving(ingress_app(database_settings), INGRESS_PORT):
        for _ in range(PATIENCE_SECONDS * 4):
            events = await on_kafka(database_settings, callback["RecordingSid"])
            if len(events) == 2:
                break
            await asyncio.sleep(0.25)
    assert [e.event_id for e in events] == [first.event_id] * 2
    once = player.apply(None, events[0])
    assert player.apply(once, events[1]) == once


async def test_a_webhook_is_answered_503_when_the_database_fails(
    settings: Settings, broker: Broker
) -> None:
    callback = fresh_callback()
    async with serving(ingress_app(settings), INGRESS_PORT):
        engine = create_engine(settings.ingress_database_url)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE ingress_outbox"))
        await engine.dispose()
        answer = await post("/twilio/recording-status", callback)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
    assert await published(settings) == []


async def test_on_sqlite_a_webhook_does_not_wait_for_the_other_services_write_lock(
    settings: Settings, broker: Broker
) -> None:
    """The embedded database is one writer per file: the ingress keeps its outbox in a file
    of its own, so a long write of the player or the downloader does not hold webhooks."""
    assert not settings.database.url
    shared = settings.data_dir / "callpipe.db"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sqlite3, sys, time\n"
        f"db = sqlite3.connect({str(shared)!r}, isolation_level=None)\n"
        "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and await holder.stdout.readline() == b"locked\n"
        async with serving(ingress_app(settings), INGRESS_PORT):
            started = asyncio.get_running_loop().time()
            answer = await post("/twilio/recording-status", fresh_callback())
            waited = asyncio.get_running_loop().time() - started
    finally:
        holder.kill()
        await holder.wait()
    assert answer.status_code == 204
    assert waited < 5  # SQLite's busy wait on a shared file would last the holder's 60 s
