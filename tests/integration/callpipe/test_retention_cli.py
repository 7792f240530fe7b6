"""`callpipe retention sweep` as an operator runs it, against a real broker (Tansu), the real
local S3 server and a SQLite database: `--as-of` expires audio first and whole calls later,
`--json` prints the counts, and the deletion reaches the `call.deleted` topic."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.player.data_settings import DataSettings
from services.player.repository import CallRepository, migrate
from shared.db import create_engine
from shared.events import CallDeleted, Topic
from shared.kafka.topics import ensure_topics
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.support import events as factories
from tests.support.ingress import BROKER_PORT, Broker, published
from tests.support.stack import module_s3_server

CREATED = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    broker = Broker(BROKER_PORT)
    broker.start()
    try:
        with module_s3_server(tmp_path_factory.mktemp("retention-cli")) as s3:
            yield s3.updated(kafka={"bootstrap": f"127.0.0.1:{BROKER_PORT}", "partitions": 1})
    finally:
        broker.stop()


async def _prepare(settings: Settings) -> None:
    await asyncio.to_thread(migrate, settings.database_url)
    engine = create_engine(settings.database_url)
    repository = CallRepository(engine)
    store = ObjectStore(settings.s3)
    await store.start()
    try:
        await store.ensure_bucket()
        await repository.save_data_settings(
            "acme",
            DataSettings(
                redact=["card"],
                audio_retention_days=30,
                call_retention_days=90,
                delete_from_twilio=False,
            ),
        )
        day = CREATED.date().isoformat()
        await repository.apply_batch(
            [
                factories.call_started("CAold", "acme", occurred_at=CREATED),
                factories.recording_completed("CAold", "acme", occurred_at=CREATED),
                factories.recording_downloaded(
                    "CAold", "acme", object_key=f"acme/{day}/CAold/RE1.wav", occurred_at=CREATED
                ),
            ]
        )
        await store.put(f"acme/{day}/CAold/RE1.wav", b"RIFF", "audio/wav")
        await store.put("acme/CAold/RE1.transcript.json", b"{}", "application/json")
        await ensure_topics(settings.kafka)
    finally:
        await store.stop()
        repository.close()
        await engine.dispose()


def sweep(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CALLPIPE_DATA_DIR": str(settings.data_dir),
        "CALLPIPE_DATABASE_URL": settings.database_url,
        "CALLPIPE_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
        "CALLPIPE_S3_ENDPOINT_URL": settings.s3.endpoint_url,
        "CALLPIPE_S3_ACCESS_KEY": settings.s3.access_key,
        "CALLPIPE_S3_SECRET_KEY": settings.s3.secret_key.get_secret_value(),
    }
    return subprocess.run(
        [sys.executable, "-m", "callpipe", "retention", "sweep", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_as_of_expires_audio_first_and_the_call_later(settings: Settings) -> None:
    asyncio.run(_prepare(settings))

    nothing_yet = sweep(settings, "--as-of", "2027-01-30T09:00:00Z", "--json")
    assert nothing_yet.returncode == 0, nothing_yet.stderr
    assert json.loads(nothing_yet.stdout) == {"audio_expired": 0, "calls_deleted": 0, "failed": 0}

    audio = sweep(settings, "--as-of", (CREATED + 31 * DAY).isoformat(), "--json")
    assert audio.returncode == 0, audio.stderr
    assert json.loads(audio.stdout) == {"audio_expired": 1, "calls_deleted": 0, "failed": 0}

    whole = sweep(settings, "--as-of", "2027-04-02T09:00:00")  # no offset: UTC
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.strip() == (
        "audio of 0 call(s) deleted, 1 call(s) deleted, 0 failed (a later sweep takes them again)"
    )
    deleted = asyncio.run(published(settings, [Topic.CALL_DELETED]))
    assert [(type(e), e.call_sid) for e in deleted] == [(CallDeleted, "CAold")]


def test_a_time_that_is_not_iso_is_refused(settings: Settings) -> None:
    refused = sweep(settings, "--as-of", "next tuesday", "--json")
    assert refused.returncode == 2
    assert "not an ISO 8601 time" in refused.stderr
