"""The retention sweep on SQLite and PostgreSQL with the real local S3 server: the audio of a
call past its business's audio retention is deleted and the call marked (playback answers
410), a call past its call retention is deleted as `DELETE /api/calls/{sid}` deletes it;
twice does nothing more, a sweep cut short is finished by the next, and two sweeps at once
share the work."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from callpipe.bootstrap import player_app
from services.player.data_settings import DataSettings
from services.player.deletion import Deleter, audio_folders
from services.player.repository import CallRepository, migrate
from services.player.retention import cutoffs
from services.player.sweep import RetentionSweep
from shared.db import create_engine
from shared.events import CallDeleted, Event
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.tombstones import delete_call_objects, tombstone_key
from shared.transcript import AudioRedaction
from shared.twilio_rest import RecordingDeleter
from tests.support import events as factories
from tests.support.stack import module_s3_server

CREATED = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CLAIM = timedelta(minutes=10)


class Published:
    """Stands in for the producer: what the sweep published."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with module_s3_server(tmp_path_factory.mktemp("retention-s3")) as settings:
        yield settings


@pytest.fixture
async def store(s3: Settings) -> AsyncIterator[ObjectStore]:
    store = ObjectStore(s3.s3)
    await store.start()
    await store.ensure_bucket()
    for prefix in ("acme/", "other/", "_tombstones/"):
        if await store.keys(prefix):
            await store.delete_prefix(prefix)
    yield store
    await store.stop()


@pytest.fixture
async def database(database_url: str) -> str:
    await asyncio.to_thread(migrate, database_url)
    return database_url


@pytest.fixture
async def repo(database: str) -> AsyncIterator[CallRepository]:
    engine = create_engine(database)
    repository = CallRepository(engine)
    yield repository
    repository.close()
    await engine.dispose()


def keys_of(business: str, sid: str, day: datetime) -> dict[str, list[str]]:
    """A call's objects as the stages store them: two attempts' audio with manifests in the
    dated folder, the transcript in the call's own."""
    folder = f"{business}/{day.date().isoformat()}/{sid}"
    return {
        "audio": [
            f"{folder}/RE0.wav",
            f"{folder}/RE1.wav",
            f"{folder}/RE1.wav.manifest.json",
        ],
        "transcript": [f"{business}/{sid}/RE1.transcript.json"],
    }


async def add_call(
    repo: CallRepository, store: ObjectStore, business: str, sid: str, created: datetime
) -> dict[str, list[str]]:
    """A call created at `created`, recorded, downloaded and transcribed, with its objects."""
    keys = keys_of(business, sid, created)
    minute = timedelta(minutes=1)
    await repo.apply_batch(
        [
            factories.call_started(sid, business, occurred_at=created),
            factories.recording_completed(sid, business, occurred_at=created + minute),
            factories.recording_downloaded(
                sid, business, object_key=keys["audio"][1], occurred_at=created + 2 * minute
            ),
            factories.transcript_ready(
                sid,
                business,
                transcript_key=keys["transcript"][0],
                occurred_at=created + 3 * minute,
                audio_redaction=AudioRedaction(
                    object_key=keys["audio"][1], sound="tone", padding_seconds=0.25
                ),
            ),
        ]
    )
    for key in keys["audio"] + keys["transcript"]:
        await store.put(key, b"bytes", "audio/wav" if key.endswith(".wav") else "application/json")
    return keys


async def keep(repo: CallRepository, business: str, audio: int | None, calls: int | None) -> None:
    await repo.save_data_settings(
        business,
        DataSettings(
            redact=["card"],
            audio_retention_days=audio,
            call_retention_days=calls,
            delete_from_twilio=False,
        ),
    )


def no_twilio() -> RecordingDeleter:
    raise AssertionError("no business here chose to delete its recordings at Twilio")


def sweep_of(
    repo: CallRepository,
    store: ObjectStore,
    batch_size: int = 100,
    producer: Published | None = None,
    claim_for: timedelta = CLAIM,
) -> RetentionSweep:
    deleter = Deleter(repo, store, producer or Published(), no_twilio)
    return RetentionSweep(deleter, batch_size, claim_for)


def published(sweep: RetentionSweep) -> list[Event]:
    producer = sweep._deleter.producer
    assert isinstance(producer, Published)
    return producer.events


def counts(audio_expired: int = 0, calls_deleted: int = 0, failed: int = 0) -> Counter[str]:
    return Counter(audio_expired=audio_expired, calls_deleted=calls_deleted, failed=failed)


async def test_audio_goes_first_then_the_whole_call_and_twice_does_nothing_more(
    repo: CallRepository, store: ObjectStore
) -> None:
    await keep(repo, "acme", 30, 90)
    old = await add_call(repo, store, "acme", "CAold", CREATED)
    young = await add_call(repo, store, "acme", "CAyoung", CREATED + 20 * DAY)
    # Another business keeps everything: its calls stay whatever their age.
    kept = await add_call(repo, store, "other", "CAkept", CREATED - 1000 * DAY)
    sweep = sweep_of(repo, store)

    assert await sweep.run_once(CREATED + 31 * DAY) == counts(audio_expired=1)
    assert await store.keys("acme/") == sorted(
        old["transcript"] + young["audio"] + young["transcript"]
    )
    call = await repo.get("CAold")
    assert call is not None and call.audio_expired_at is not None
    assert call.audio_expired_reason == "older than the audio retention (30 days)"
    assert abs(datetime.now(UTC) - call.audio_expired_at) < timedelta(minutes=1)
    young_call = await repo.get("CAyoung")
    assert young_call is not None and young_call.audio_expired_at is None
    assert await sweep.run_once(CREATED + 31 * DAY) == counts()
    assert published(sweep) == []

    assert await sweep.run_once(CREATED + 91 * DAY) == counts(calls_deleted=1, audio_expired=1)
    assert await repo.get("CAold") is None
    assert await repo.deleted_among(["CAold"]) == {"CAold"}
    assert await store.keys("acme/") == young["transcript"]
    assert await store.head(tombstone_key("acme", "CAold")) is not None
    [deleted] = published(sweep)
    assert isinstance(deleted, CallDeleted)
    assert (deleted.call_sid, deleted.business_id) == ("CAold", "acme")
    assert await sweep.run_once(CREATED + 91 * DAY) == counts()
    assert len(published(sweep)) == 1

    assert await store.keys("other/") == sorted(kept["audio"] + kept["transcript"])
    assert await repo.get("CAkept") is not None


async def test_a_call_past_its_call_retention_goes_whole_at_once(
    repo: CallRepository, store: ObjectStore
) -> None:
    await keep(repo, "acme", 10, 10)
    await add_call(repo, store, "acme", "CAold", CREATED)
    sweep = sweep_of(repo, store)
    assert await sweep.run_once(CREATED + 11 * DAY) == counts(calls_deleted=1)
    assert await store.keys("acme/") == []
    assert await repo.get("CAold") is None


async def test_playback_of_expired_audio_answers_410_with_the_reason(
    repo: CallRepository, store: ObjectStore, s3: Settings, database: str, tmp_path: object
) -> None:
    await keep(repo, "acme", 30, None)
    await add_call(repo, store, "acme", "CAold", CREATED)
    key = await repo.create_api_key("acme", "test")
    settings = s3.updated(database={"url": database}, kafka={"bootstrap": "127.0.0.1:1"})
    app = player_app(settings)
    async with app.router.lifespan_context(app):
        api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://player.test",
            headers={"Authorization": f"Bearer {key}"},
        )
        async with api:
            before = await api.get("/api/recordings/CAold/file")
            assert before.status_code == 307  # to the object store
            await sweep_of(repo, store).run_once(CREATED + 31 * DAY)

            played = await api.get("/api/recordings/CAold/file")
            assert played.status_code == 410
            answer = played.json()
            assert answer["detail"] == "expired by the business's retention policy"
            assert answer["status"] == "expired"
            assert answer["reason"] == "older than the audio retention (30 days)"
            assert (await api.head("/api/recordings/CAold/file")).status_code == 410
            prepared = await api.post("/api/recordings/CAold/prepare")
            assert prepared.status_code == 410
            assert prepared.json()["detail"] == "expired by the business's retention policy"
            call = (await api.get("/api/calls/CAold")).json()
            assert call["audio_expired_at"] is not None
            assert call["audio_expired_reason"] == answer["reason"]
            assert call["transcript_status"] == "completed"  # the call stays


async def test_a_sweep_cut_short_is_finished_by_the_next(
    repo: CallRepository, store: ObjectStore
) -> None:
    """A sweep died with two calls claimed: one's audio deleted but the call not marked, the
    other's objects deleted and its deletion published, but its row still there."""
    await keep(repo, "acme", 30, 90)
    half_expired = await add_call(repo, store, "acme", "CAhalf", CREATED + 30 * DAY)
    await add_call(repo, store, "acme", "CAgone", CREATED)
    as_of = CREATED + 91 * DAY
    dead = datetime.now(UTC) - CLAIM * 2  # when the dead sweep claimed them
    due = cutoffs(await repo.data_settings("acme"), as_of)
    claimed = {
        call.call_sid: call for call in await repo.claim_due("acme", due, "dead", dead, CLAIM, 10)
    }
    assert set(claimed) == {"CAhalf", "CAgone"}
    for folder in await audio_folders(claimed["CAhalf"], repo):
        await store.delete_prefix(folder)
    gone = await audio_folders(claimed["CAgone"], repo)
    await delete_call_objects(store, "acme", "CAgone", ["acme/CAgone/", *gone])
    assert await store.keys("acme/") == half_expired["transcript"]

    sweep = sweep_of(repo, store)
    assert await sweep.run_once(as_of) == counts(audio_expired=1, calls_deleted=1)
    assert await repo.get("CAgone") is None
    half = await repo.get("CAhalf")
    assert half is not None and half.audio_expired_at is not None
    assert await store.keys("acme/") == half_expired["transcript"]
    assert await sweep.run_once(as_of) == counts()


async def test_a_call_another_sweep_holds_is_left_alone_until_its_claim_runs_out(
    repo: CallRepository, store: ObjectStore
) -> None:
    await keep(repo, "acme", 30, None)
    keys = await add_call(repo, store, "acme", "CAold", CREATED)
    as_of = CREATED + 31 * DAY
    due = cutoffs(await repo.data_settings("acme"), as_of)
    now = datetime.now(UTC)
    assert [c.call_sid for c in await repo.claim_due("acme", due, "other", now, CLAIM, 10)] == [
        "CAold"
    ]
    assert await repo.claim_due("acme", due, "third", now, CLAIM, 10) == []

    assert await sweep_of(repo, store).run_once(as_of) == counts()
    assert await store.keys("acme/") == sorted(keys["audio"] + keys["transcript"])
    retaken = await repo.claim_due("acme", due, "third", now + CLAIM, CLAIM, 10)
    assert [call.call_sid for call in retaken] == ["CAold"]


async def test_a_failure_is_counted_and_the_call_taken_again_later(
    repo: CallRepository, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await keep(repo, "acme", 30, None)
    await add_call(repo, store, "acme", "CAold", CREATED)
    await add_call(repo, store, "acme", "CAnext", CREATED + DAY)
    real_delete = store.delete_prefix

    async def failing(prefix: str, page_size: int = 1000) -> int:
        if "CAold" in prefix:
            raise OSError("the store refused")
        return await real_delete(prefix, page_size)

    monkeypatch.setattr(store, "delete_prefix", failing)
    sweep = sweep_of(repo, store, 1, claim_for=timedelta(0))
    assert await sweep.run_once(CREATED + 40 * DAY) == counts(audio_expired=1, failed=1)
    monkeypatch.setattr(store, "delete_prefix", real_delete)
    assert await sweep.run_once(CREATED + 40 * DAY) == counts(audio_expired=1)


async def test_two_sweeps_at_once_share_the_calls_and_do_each_once(
    database: str, store: ObjectStore
) -> None:
    engines = [create_engine(database) for _ in range(2)]
    repos = [CallRepository(engine) for engine in engines]
    try:
        await keep(repos[0], "acme", 30, 90)
        for n in range(24):
            # Even calls are past the call retention, odd ones past the audio retention only.
            created = CREATED + (0 if n % 2 == 0 else 30) * DAY + n * timedelta(minutes=1)
            await add_call(repos[0], store, "acme", f"CA{n:02}", created)
        sweeps = [sweep_of(repo, store, batch_size=3) for repo in repos]
        handled: list[list[str]] = [[], []]
        for index, sweep in enumerate(sweeps):
            real = sweep._sweep

            async def noting(call, settings, as_of, real=real, index=index):  # type: ignore[no-untyped-def]
                handled[index].append(call.call_sid)
                await asyncio.sleep(0.01)  # each holds its batch a while: the other goes on
                return await real(call, settings, as_of)

            sweep._sweep = noting  # type: ignore[method-assign]
        as_of = CREATED + 91 * DAY
        done = await asyncio.gather(*(sweep.run_once(as_of) for sweep in sweeps))

        assert done[0] + done[1] == counts(audio_expired=12, calls_deleted=12)
        assert sorted(handled[0] + handled[1]) == [f"CA{n:02}" for n in range(24)]
        assert handled[0] and handled[1], "one sweep did all the work: no concurrency shown"
        deletions = published(sweeps[0]) + published(sweeps[1])
        assert sorted(event.call_sid for event in deletions) == [
            f"CA{n:02}" for n in range(0, 24, 2)
        ]
        for n in range(24):
            call = await repos[0].get(f"CA{n:02}")
            assert (call is None) == (n % 2 == 0)
            assert call is None or call.audio_expired_at is not None
        assert [key for key in await store.keys("acme/") if key.endswith(".wav")] == []
        assert await asyncio.gather(*(sweep.run_once(as_of) for sweep in sweeps)) == [counts()] * 2
    finally:
        for repo, engine in zip(repos, engines, strict=True):
            repo.close()
            await engine.dispose()


class RefusingOnce(Published):
    """A broker that does not take the first event."""

    async def publish(self, event: Event) -> None:
        if not hasattr(self, "refused"):
            self.refused = event
            raise OSError("the broker did not answer")
        await super().publish(event)


async def test_a_deletion_whose_event_the_broker_refused_is_done_again_by_the_next_sweep(
    repo: CallRepository, store: ObjectStore
) -> None:
    await keep(repo, "acme", 10, 10)
    await add_call(repo, store, "acme", "CAold", CREATED)
    producer = RefusingOnce()
    sweep = sweep_of(repo, store, 100, producer, timedelta(0))
    assert await sweep.run_once(CREATED + 11 * DAY) == counts(failed=1)
    assert await repo.get("CAold") is not None  # the row goes last: the call is found again
    assert await sweep.run_once(CREATED + 11 * DAY) == counts(calls_deleted=1)
    assert await repo.get("CAold") is None
    assert [event.call_sid for event in producer.events] == ["CAold"]


async def test_on_postgresql_a_claim_made_meanwhile_is_not_taken_over(
    postgres_database_url: str, store: ObjectStore
) -> None:
    """Two sweeps claim the same call at the same moment: the second's statement waits for
    the first's transaction, then finds the call claimed and leaves it."""
    await asyncio.to_thread(migrate, postgres_database_url)
    engine = create_engine(postgres_database_url)
    repo = CallRepository(engine)
    try:
        await keep(repo, "acme", 30, None)
        await add_call(repo, store, "acme", "CAold", CREATED)
        due = cutoffs(await repo.data_settings("acme"), CREATED + 31 * DAY)
        now = datetime.now(UTC)
        claim = functools.partial(repo._claim_due, "acme", due, "first", now, CLAIM, 10, ())
        async with engine.begin() as first:
            assert [c.call_sid for c in await first.run_sync(claim)] == ["CAold"]
            second = asyncio.create_task(repo.claim_due("acme", due, "second", now, CLAIM, 10))
            await asyncio.sleep(0.5)
            assert not second.done()  # waiting for the first's claim to commit or roll back
        assert await second == []
    finally:
        repo.close()
        await engine.dispose()
