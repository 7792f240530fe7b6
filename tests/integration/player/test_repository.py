"""Contract tests of the player's SQL repository, run against SQLite AND PostgreSQL.

PostgreSQL (127.0.0.1:5432, user postgres, trust auth) is used for real: a fresh database
is created for each test and dropped after it. If the server is unreachable these tests
error out; they are never skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError

from services.player.data_settings import DEFAULT_DATA_SETTINGS, DataSettings
from services.player.repository import (
    AmbiguousKey,
    CallFilter,
    CallRepository,
    applied_before,
    migrate,
)
from services.player.tables import call_events, calls, deleted_calls, player_sessions
from shared.call_state import StageStatus
from shared.db import create_engine
from shared.events import (
    AnyEvent,
    CallDeleted,
    CallStarted,
    Stage,
    StageFailed,
)
from shared.redaction.kinds import EntityKind
from tests.support import events as factories
from tests.support.events import T0, at


@pytest.fixture
async def repo(database_url: str) -> AsyncIterator[CallRepository]:
    """A repository on a migrated database of the test's own."""
    await asyncio.to_thread(migrate, database_url)
    engine = create_engine(database_url)
    repository = CallRepository(engine)
    try:
        yield repository
    finally:
        repository.close()
        await engine.dispose()


# --- events -------------------------------------------------------------------------------


def envelope(call_sid: str, seconds: float, **extra: Any) -> dict[str, Any]:
    return factories.envelope(call_sid) | {"occurred_at": at(seconds), **extra}


def call_started(call_sid: str, seconds: float = 0, **extra: Any) -> CallStarted:
    return factories.call_started(call_sid, occurred_at=at(seconds), **extra)


def pipeline(call_sid: str) -> list[AnyEvent]:
    return [
        call_started(call_sid, 0),
        factories.recording_completed(call_sid, occurred_at=at(1)),
        factories.stage_started(Stage.RECORDING, call_sid, occurred_at=at(2)),
        factories.stage_failed(Stage.RECORDING, call_sid, occurred_at=at(3), error="HTTP 404"),
        factories.recording_downloaded(
            call_sid, occurred_at=at(4), size_bytes=654321, sha256="b" * 64
        ),
        factories.stage_started(Stage.TRANSCRIPT, call_sid, occurred_at=at(5)),
        factories.transcript_ready(
            call_sid,
            occurred_at=at(6),
            preview="Caller: my sink leaks. Agent: where are you? Caller: Denver.",
        ),
        factories.stage_started(Stage.SUMMARY, call_sid, occurred_at=at(7)),
        factories.summary_ready(call_sid, occurred_at=at(8)),
    ]


# --- tests --------------------------------------------------------------------------------


async def test_apply_is_idempotent_per_event_id(repo: CallRepository) -> None:
    event = call_started("CA-idem")

    assert await repo.apply(event) is True
    row = await repo.get("CA-idem")
    assert row is not None

    assert await repo.apply(event) is False
    assert await repo.get("CA-idem") == row
    assert len(await repo.timeline("CA-idem")) == 1


async def test_a_redelivered_event_after_later_ones_changes_nothing(repo: CallRepository) -> None:
    events = pipeline("CA-redeliver")
    for event in events[:5]:
        assert await repo.apply(event) is True
    before = await repo.get("CA-redeliver")

    for event in events[:5]:
        assert await repo.apply(event) is False

    assert await repo.get("CA-redeliver") == before
    assert len(await repo.timeline("CA-redeliver")) == 5


async def test_events_project_onto_the_row(repo: CallRepository) -> None:
    for event in pipeline("CA-full"):
        assert await repo.apply(event) is True

    row = await repo.get("CA-full")

    assert row is not None
    assert row.business_id == "biz-1"
    assert (row.from_number, row.to_number) == ("+15551230000", "+15559870000")
    assert row.status == "completed"
    assert (row.recording_status, row.transcript_status, row.summary_status) == (
        "completed",
        "completed",
        "completed",
    )
    assert row.recording_sid == "RE1"
    assert row.recording_key == "biz-1/CA-full/RE1.wav"
    assert row.recording_content_type == "audio/wav"
    assert row.recording_bytes == 654321
    assert row.duration_seconds == 42.5
    assert row.recording_tries == 1
    assert row.recording_error == "HTTP 404"  # the retry report stays on its stage
    assert row.last_error is None  # but is not the call's error once the stage completed
    assert row.transcript_key == "biz-1/CA-full/RE1.transcript.json"
    assert row.redacted_recording_key == "biz-1/CA-full/RE1.wav"
    assert row.transcript_preview == (
        "Caller: my sink leaks. Agent: where are you? Caller: Denver."
    )
    assert row.language == "en"
    assert row.summary == "Caller asked for plumbing in Denver."
    assert row.lead_service == "plumbing"
    assert row.lead_city == "Denver"
    assert row.lead_confidence == pytest.approx(0.8)
    assert row.created_at == at(0)
    assert row.updated_at == at(8)


async def test_partial_progress_is_visible(repo: CallRepository) -> None:
    events = pipeline("CA-partial")
    for event in events[:4]:
        await repo.apply(event)

    row = await repo.get("CA-partial")

    assert row is not None
    assert row.status == "processing"
    assert row.recording_status == "processing"
    assert row.transcript_status == "pending"
    assert row.recording_key is None
    assert row.last_error == "HTTP 404"


async def test_terminal_failure_is_stored(repo: CallRepository) -> None:
    await repo.apply(call_started("CA-fail"))
    await repo.apply(
        StageFailed(
            **envelope("CA-fail", 3),
            stage=Stage.RECORDING,
            error="HTTP 403 from Twilio",
            terminal=True,
            tries=4,
        )
    )

    row = await repo.get("CA-fail")

    assert row is not None
    assert row.status == "failed"
    assert row.recording_status == "failed"
    assert row.recording_tries == 4
    assert (row.transcript_status, row.summary_status) == ("skipped", "skipped")
    assert row.last_error == "HTTP 403 from Twilio"


async def test_get_unknown_call_is_none(repo: CallRepository) -> None:
    await repo.apply(call_started("CA-known"))
    assert await repo.get("CA-unknown") is None


async def test_page_lists_newest_first_and_paginates(repo: CallRepository) -> None:
    sids = [f"CA-page-{i}" for i in range(5)]
    # Applied in a scrambled order: the list order comes from the calls' times.
    for i in (3, 0, 4, 1, 2):
        await repo.apply(call_started(sids[i], seconds=60 * i))

    first, total = await repo.page(2, 0)
    second, _ = await repo.page(2, 2)
    third, _ = await repo.page(2, 4)
    beyond, _ = await repo.page(2, 6)

    assert total == 5
    assert [c.call_sid for c in first] == [sids[4], sids[3]]
    assert [c.call_sid for c in second] == [sids[2], sids[1]]
    assert [c.call_sid for c in third] == [sids[0]]
    assert beyond == []
    everything, _ = await repo.page(100, 0)
    assert [c.call_sid for c in everything] == sids[::-1]
    assert [c.created_at for c in everything] == sorted(
        (c.created_at for c in everything), reverse=True
    )


async def test_page_orders_ties_stably(repo: CallRepository) -> None:
    for sid in ("CA-tie-b", "CA-tie-c", "CA-tie-a"):
        await repo.apply(call_started(sid, seconds=0))

    pages = [(await repo.page(1, offset))[0] for offset in range(3)]

    assert [p[0].call_sid for p in pages] == ["CA-tie-a", "CA-tie-b", "CA-tie-c"]


async def test_timeline_is_ordered_by_time_with_details(repo: CallRepository) -> None:
    events = pipeline("CA-timeline")
    for event in reversed(events):
        await repo.apply(event)
    await repo.apply(call_started("CA-other"))

    timeline = await repo.timeline("CA-timeline")

    assert [entry["event_id"] for entry in timeline] == [str(e.event_id) for e in events]
    assert {entry["call_sid"] for entry in timeline} == {"CA-timeline"}
    times = [datetime.fromisoformat(entry["occurred_at"]) for entry in timeline]
    assert times == [e.occurred_at for e in events]
    assert all(t.tzinfo is not None for t in times)
    by_type = {(e["event_type"], e["stage"]): e for e in timeline}
    assert by_type[("stage.started", "transcript")]["detail"] == "transcript started"
    failure = by_type[("stage.failed", "recording")]
    assert "HTTP 404" in failure["detail"]
    assert "retry" in failure["detail"]
    assert by_type[("recording.completed", None)]["detail"] == "recording completed"
    assert by_type[("summary.ready", None)]["detail"] == "summary extracted"
    assert all(entry["attempt"] == 1 for entry in timeline)
    assert await repo.timeline("CA-unknown") == []


async def test_datetimes_come_back_timezone_aware(repo: CallRepository) -> None:
    for event in pipeline("CA-tz")[:3]:
        await repo.apply(event)

    row = await repo.get("CA-tz")
    listed, _ = await repo.page(10, 0)

    assert row is not None
    for value in (row.created_at, row.updated_at, listed[0].created_at):
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
    assert row.created_at == at(0)
    assert row.updated_at == at(2)
    # Comparable with aware datetimes (a naive value would raise TypeError here).
    assert row.created_at < datetime.now(UTC)


async def test_statuses_come_back_as_stage_statuses(repo: CallRepository) -> None:
    for event in pipeline("CA-enum")[:4]:
        await repo.apply(event)

    row = await repo.get("CA-enum")
    listed, _ = await repo.page(10, 0)

    assert row is not None
    for state in (row, listed[0]):
        statuses = (state.recording_status, state.transcript_status, state.summary_status)
        assert all(type(status) is StageStatus for status in statuses)


async def test_an_offset_timestamp_keeps_its_instant(
    repo: CallRepository,
) -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2026, 3, 1, 11, 30, tzinfo=plus_two)  # 09:30 UTC
    await repo.apply(call_started("CA-offset").model_copy(update={"occurred_at": moment}))

    row = await repo.get("CA-offset")

    assert row is not None
    assert row.created_at == moment


async def test_concurrent_events_of_a_new_call_are_all_applied(
    repo: CallRepository,
) -> None:
    results = []
    for i in range(10):
        events = pipeline(f"CA-race-{i}")[:3]
        results.append(await asyncio.gather(*(repo.apply(e) for e in events)))

    assert all(all(r) for r in results), results
    for i in range(10):
        assert len(await repo.timeline(f"CA-race-{i}")) == 3


async def test_migrating_twice_is_a_no_op(repo: CallRepository, database_url: str) -> None:
    for event in pipeline("CA-migrate"):
        await repo.apply(event)
    before = await repo.get("CA-migrate")

    await asyncio.to_thread(migrate, database_url)

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            versions = await connection.execute(text("SELECT version_num FROM alembic_version"))
            assert len(versions.all()) == 1
            assert (
                await connection.execute(select(func.count()).select_from(call_events))
            ).scalar_one() == len(pipeline("CA-migrate"))
            assert (
                await connection.execute(select(func.count()).select_from(calls))
            ).scalar_one() == 1
    finally:
        await engine.dispose()
    assert await repo.get("CA-migrate") == before
    assert await repo.apply(call_started("CA-after-migrate")) is True


async def test_the_unfiltered_total_is_each_businesss_own_count(repo: CallRepository) -> None:
    """The list's total without filters comes from a count the projection keeps; it must
    agree with counting the rows, through redeliveries, deletions and other businesses."""
    for index in range(4):
        for event in pipeline(f"CA-count-{index}"):
            await repo.apply(event)
    await repo.apply(pipeline("CA-count-0")[1])  # a redelivery creates nothing
    await repo.apply(call_started("CA-count-other", business_id="biz-2"))
    await repo.delete_call("biz-1", "CA-count-1")
    await repo.delete_call("biz-1", "CA-count-1")  # twice: counted once
    await repo.apply(call_started("CA-count-1"))  # in flight after the delete: ignored

    _, total = await repo.page(10, 0, business_id="biz-1")
    _, other_total = await repo.page(10, 0, business_id="biz-2")
    _, unknown_total = await repo.page(10, 0, business_id="biz-none")
    _, filtered_total = await repo.page(10, 0, "biz-1", CallFilter(phone="+1555123"))

    assert (total, other_total, unknown_total) == (3, 1, 0)
    assert filtered_total == 3


# --- batches (one transaction for the events of one poll) ---------------------------------


def _with_sid_as_x(state: Any) -> dict[str, Any]:
    return {
        name: value.replace(state.call_sid, "X") if isinstance(value, str) else value
        for name, value in vars(state).items()
    }


async def test_a_batch_projects_as_its_events_would_one_by_one(repo: CallRepository) -> None:
    """Two calls' events interleaved in one batch end where the same events applied one by
    one end; every event is on its call's timeline."""
    batched = [*zip(pipeline("CAbatchA"), pipeline("CAbatchB"), strict=True)]
    events = [event for pair in batched for event in pair]
    assert await repo.apply_batch(events) == [True] * len(events)
    for event in pipeline("CAbatchSingle"):
        assert await repo.apply(event) is True

    single = await repo.get("CAbatchSingle")
    for call_sid in ("CAbatchA", "CAbatchB"):
        row = await repo.get(call_sid)
        assert row is not None and single is not None
        assert _with_sid_as_x(row) == _with_sid_as_x(single)
        assert len(await repo.timeline(call_sid)) == len(pipeline(call_sid))
    _, total = await repo.page(10, 0, business_id="biz-1")
    assert total == 3
    assert await repo.stage_input("CAbatchA", Stage.TRANSCRIPT) == events[8]


async def test_a_duplicate_in_a_batch_or_across_batches_changes_nothing(
    repo: CallRepository,
) -> None:
    events = pipeline("CA-batch-dup")
    first = [events[0], events[1], events[0], events[2]]  # events[0] twice in one batch
    assert await repo.apply_batch(first) == [True, True, False, True]
    after_first = await repo.get("CA-batch-dup")

    assert await repo.apply_batch(events[:3]) == [False, False, False]  # a redelivery
    assert await repo.get("CA-batch-dup") == after_first

    assert await repo.apply_batch(events) == [False] * 3 + [True] * (len(events) - 3)
    assert len(await repo.timeline("CA-batch-dup")) == len(events)
    _, total = await repo.page(10, 0, business_id="biz-1")
    assert total == 1


async def test_events_after_a_deletion_in_the_same_batch_are_ignored(
    repo: CallRepository,
) -> None:
    events = pipeline("CA-batch-del")
    deleted = CallDeleted(**envelope("CA-batch-del", 5))
    later = call_started("CA-batch-del-other", 6)

    applied = await repo.apply_batch([*events[:3], deleted, *events[3:], later])

    assert applied == [True] * 3 + [True] + [False] * (len(events) - 3) + [True]
    assert await repo.get("CA-batch-del") is None
    assert await repo.timeline("CA-batch-del") == []
    assert await repo.get("CA-batch-del-other") is not None
    assert await repo.apply_batch([deleted, events[0]]) == [False, False]
    _, total = await repo.page(10, 0, business_id="biz-1")
    assert total == 1


async def test_late_events_of_every_kind_after_a_deletion_bring_the_call_back_in_no_way(
    repo: CallRepository,
) -> None:
    """The stages went on with a call deleted mid-way: each event they publish afterwards,
    alone or in a batch, is ignored, and the call counts no more."""
    events = pipeline("CA-late")
    for event in events[:3]:
        await repo.apply(event)
    await repo.delete_call("biz-1", "CA-late")

    for event in events[3:]:
        assert await repo.apply(event) is False
    retried = [e.model_copy(update={"event_id": uuid.uuid4(), "attempt": 2}) for e in events]
    assert await repo.apply_batch(retried) == [False] * len(retried)

    assert await repo.get("CA-late") is None
    assert await repo.timeline("CA-late") == []
    assert await repo.stage_input("CA-late", Stage.TRANSCRIPT) is None
    assert (await repo.page(10, 0, business_id="biz-1"))[1] == 0


async def test_the_days_a_calls_recordings_completed_on_are_read_from_its_timeline(
    repo: CallRepository,
) -> None:
    """Where the downloader filed each recording of the call: under its event's UTC day."""
    late_evening = datetime(2026, 11, 24, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    await repo.apply(call_started("CA-days"))
    await repo.apply(factories.recording_completed("CA-days", occurred_at=at(1)))
    await repo.apply(factories.recording_completed("CA-days", occurred_at=late_evening))
    await repo.apply(factories.recording_downloaded("CA-days", occurred_at=at(86400 * 3)))

    assert await repo.recording_days("CA-days") == {T0.date(), date(2026, 11, 25)}
    assert await repo.recording_days("CA-none") == set()


async def test_a_batch_that_fails_at_its_commit_leaves_nothing_behind(
    repo: CallRepository, database_url: str
) -> None:
    """A crash before the commit: none of the batch's events is applied or marked as
    processed, so their redelivery applies them all."""
    events = [*pipeline("CA-batch-crash")[:4], call_started("CA-batch-crash-2")]
    engine = create_engine(database_url)
    crashing = CallRepository(engine)

    def crash(_connection: Any) -> None:
        raise RuntimeError("process killed before the commit")

    # On every engine: on SQLite the batch commits on a driver engine of its own (0921).
    sa_event.listen(Engine, "commit", crash)
    try:
        with pytest.raises(RuntimeError, match="before the commit"):
            await crashing.apply_batch(events)
    finally:
        sa_event.remove(Engine, "commit", crash)
        crashing.close()
        await engine.dispose()

    assert await repo.get("CA-batch-crash") is None
    assert await repo.timeline("CA-batch-crash") == []
    _, total = await repo.page(10, 0, business_id="biz-1")
    assert total == 0
    assert await repo.apply_batch(events) == [True] * len(events)
    assert len(await repo.timeline("CA-batch-crash")) == 4


# --- applied before, or broken -------------------------------------------------------------

REFUSED_DIRECTION = "refused-by-check"


async def _violation(database_url: str, statement: Any) -> IntegrityError:
    engine = create_engine(database_url)
    try:
        with pytest.raises(IntegrityError) as raised:
            async with engine.begin() as connection:
                await connection.execute(statement)
    finally:
        await engine.dispose()
    return raised.value


async def test_only_the_idempotency_keys_duplicated_count_as_applied_before(
    repo: CallRepository, database_url: str
) -> None:
    event = call_started("CA-dup-keys")
    assert await repo.apply(event) is True
    await repo.delete_call("biz-1", "CA-dup-deleted")
    timeline_row = {
        "event_id": str(event.event_id),
        "call_sid": "CA-dup-keys",
        "event_type": "call.started",
        "attempt": 1,
        "occurred_at": T0,
        "detail": "",
    }
    same_event = await _violation(database_url, insert(call_events).values(timeline_row))
    deleted_again = await _violation(
        database_url, insert(deleted_calls).values(call_sid="CA-dup-deleted", deleted_at=T0)
    )
    await repo.apply(call_started("CA-dup-row"))
    row = await repo.get("CA-dup-row")
    assert row is not None
    same_call_row = await _violation(database_url, insert(calls).values(**vars(row)))

    assert applied_before(same_event)
    assert applied_before(deleted_again)
    assert not applied_before(same_call_row)
    assert await repo.apply(event) is False  # a replay is still no error


@pytest.fixture
async def refusing_direction(repo: CallRepository, database_url: str) -> AsyncIterator[None]:
    """A constraint on the status table the next call.started with REFUSED_DIRECTION breaks:
    a CHECK on PostgreSQL, a trigger raising on SQLite (no ALTER TABLE … ADD CONSTRAINT)."""
    if database_url.startswith("postgresql"):
        add = [
            "ALTER TABLE calls ADD CONSTRAINT direction_probe "
            f"CHECK (direction <> '{REFUSED_DIRECTION}')"
        ]
        drop = ["ALTER TABLE calls DROP CONSTRAINT direction_probe"]
    else:
        add = [
            f"CREATE TRIGGER direction_probe_{change} BEFORE {change} ON calls "
            f"WHEN NEW.direction = '{REFUSED_DIRECTION}' "
            "BEGIN SELECT RAISE(ABORT, 'direction refused'); END"
            for change in ("INSERT", "UPDATE")
        ]
        drop = [f"DROP TRIGGER direction_probe_{change}" for change in ("INSERT", "UPDATE")]
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            for statement in add:
                await connection.execute(text(statement))
        yield
        async with engine.begin() as connection:
            for statement in drop:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("refusing_direction")
async def test_an_event_breaking_a_constraint_raises_instead_of_counting_as_applied(
    repo: CallRepository,
) -> None:
    """Raised, the runtime retries it and then dead-letters it to player.dlq (decision 0801),
    instead of logging it as already applied and losing it."""
    broken = call_started("CA-broken", direction=REFUSED_DIRECTION)
    with pytest.raises(IntegrityError):
        await repo.apply(broken)
    assert await repo.get("CA-broken") is None
    assert await repo.timeline("CA-broken") == []


LIFETIME = timedelta(hours=12)


async def _sessions(repo: CallRepository) -> int:
    async with repo._engine.connect() as connection:
        return int(
            (
                await connection.execute(select(func.count()).select_from(player_sessions))
            ).scalar_one()
        )


async def test_a_session_belongs_to_its_keys_business_and_ends_at_logout(
    repo: CallRepository,
) -> None:
    key = await repo.create_api_key("acme", "laptop")
    assert await repo.open_session("cp_unknown", LIFETIME) is None
    session = await repo.open_session(key, LIFETIME)
    assert session is not None
    assert key not in session
    assert await repo.session_business(session) == "acme"
    assert await repo.session_business(session + "x") is None
    await repo.close_session(session)
    assert await repo.session_business(session) is None
    assert await _sessions(repo) == 0


async def test_an_expired_session_is_refused_and_deleted_when_met(repo: CallRepository) -> None:
    key = await repo.create_api_key("acme", "laptop")
    expired = await repo.open_session(key, -timedelta(seconds=1))
    assert expired is not None
    assert await _sessions(repo) == 1
    assert await repo.session_business(expired) is None
    assert await _sessions(repo) == 0


async def test_a_login_deletes_the_expired_sessions_of_everyone(repo: CallRepository) -> None:
    first = await repo.create_api_key("acme", "laptop")
    second = await repo.create_api_key("other", "phone")
    await repo.open_session(first, -timedelta(seconds=1))  # never met again
    assert await _sessions(repo) == 1
    live = await repo.open_session(second, LIFETIME)
    assert await _sessions(repo) == 1
    assert live is not None and await repo.session_business(live) == "other"


async def test_revoking_a_key_ends_its_sessions_and_refuses_it(repo: CallRepository) -> None:
    key = await repo.create_api_key("acme", "laptop")
    kept = await repo.create_api_key("acme", "phone")
    sessions = [await repo.open_session(key, LIFETIME) for _ in range(2)]
    other = await repo.open_session(kept, LIFETIME)
    assert other is not None

    revoked = await repo.revoke_api_key("laptop")
    assert revoked is not None
    assert revoked.sessions_ended == 2
    assert revoked.key.label == "laptop" and revoked.key.revoked_at is not None
    for session in sessions:
        assert session is not None and await repo.session_business(session) is None
    assert await repo.business_of_key(key) is None
    assert await repo.open_session(key, LIFETIME) is None
    await repo.add_api_key("acme", key, "configured")  # a player's start does not revive it
    assert await repo.business_of_key(key) is None
    assert await repo.session_business(other) == "acme"
    assert await repo.business_of_key(kept) == "acme"


async def test_a_key_is_listed_and_revoked_by_its_id_never_shown(repo: CallRepository) -> None:
    acme = await repo.create_api_key("acme", "laptop")
    await repo.create_api_key("other", "laptop")
    listed = await repo.api_keys()
    assert [(k.business_id, k.label, k.revoked_at) for k in listed] == [
        ("acme", "laptop", None),
        ("other", "laptop", None),
    ]
    assert all(len(k.key_id) == 12 and k.key_id not in acme for k in listed)
    with pytest.raises(AmbiguousKey):
        await repo.revoke_api_key("laptop")
    assert await repo.revoke_api_key("nobody") is None
    assert await repo.revoke_api_key("%") is None  # not a pattern
    acme_id = (await repo.api_keys("acme"))[0].key_id
    revoked = await repo.revoke_api_key(acme_id.upper())
    assert revoked is not None and revoked.key.business_id == "acme"
    assert await repo.business_of_key(acme) is None
    assert [k.revoked_at is None for k in await repo.api_keys()] == [False, True]


# --- data settings ------------------------------------------------------------------------


async def test_a_business_that_saved_no_data_settings_has_the_defaults(
    repo: CallRepository,
) -> None:
    assert await repo.data_settings("acme") == DEFAULT_DATA_SETTINGS
    assert await repo.redaction_kinds("acme") == {EntityKind.CARD, EntityKind.NUMBER}


async def test_data_settings_are_saved_replaced_and_each_businesss_own(
    repo: CallRepository,
) -> None:
    chosen = DataSettings(
        redact=["card", "phone", "iban"],
        audio_retention_days=30,
        call_retention_days=365,
        delete_from_twilio=True,
    )
    await repo.save_data_settings("acme", chosen)
    assert await repo.data_settings("acme") == chosen
    assert await repo.redaction_kinds("acme") == {
        EntityKind.CARD,
        EntityKind.PHONE,
        EntityKind.IBAN,
        EntityKind.NUMBER,
    }
    assert await repo.data_settings("other") == DEFAULT_DATA_SETTINGS

    replaced = DataSettings(
        redact=["card", "email"],
        audio_retention_days=None,
        call_retention_days=None,
        delete_from_twilio=False,
    )
    await repo.save_data_settings("acme", replaced)
    await repo.save_data_settings("other", chosen)
    assert await repo.data_settings("acme") == replaced
    assert await repo.redaction_kinds("acme") == {
        EntityKind.CARD,
        EntityKind.EMAIL,
        EntityKind.NUMBER,
    }
    assert await repo.data_settings("other") == chosen


async def test_a_settings_change_is_on_the_timeline_of_the_calls_on_their_way_only(
    repo: CallRepository,
) -> None:
    await repo.apply(factories.call_started("CA1", "acme"))
    await repo.apply_batch(
        [factories.call_started("CA2", "acme"), factories.summary_ready("CA2", "acme")]
    )
    await repo.apply(factories.call_started("CA3", "other"))
    phones = DEFAULT_DATA_SETTINGS.model_copy(update={"redact": ["card", "phone"]})
    assert await repo.save_data_settings("acme", phones) == 1
    [change] = [e for e in await repo.timeline("CA1") if e["event_type"] == "settings.changed"]
    assert change["detail"].startswith("data settings changed: redacting card, phone")
    assert datetime.fromisoformat(change["occurred_at"]).tzinfo is not None
    assert [e["event_type"] for e in await repo.timeline("CA2")] == [
        "call.started",
        "summary.ready",
    ]
    assert [e["event_type"] for e in await repo.timeline("CA3")] == ["call.started"]
    assert await repo.save_data_settings("acme", phones) == 0
    twilio = phones.model_copy(update={"delete_from_twilio": True})
    assert await repo.save_data_settings("acme", twilio) == 0
    assert await repo.data_settings("acme") == twilio


async def test_a_business_s_calls_by_batch_and_what_it_leaves_when_forgotten(
    repo: CallRepository,
) -> None:
    for call_sid in ("CA3", "CA1", "CA2"):
        await repo.apply(factories.call_started(call_sid, "acme"))
    await repo.apply(factories.call_started("CA9", "other"))
    assert [c.call_sid for c in await repo.business_calls("acme", 2)] == ["CA1", "CA2"]
    await repo.create_api_key("acme", "one")
    await repo.create_api_key("acme", "two")
    other_key = await repo.create_api_key("other", "its own")
    acme_session = await repo.open_session(await repo.create_api_key("acme", "page"), timedelta(1))
    await repo.save_data_settings(
        "acme", DEFAULT_DATA_SETTINGS.model_copy(update={"redact": ["card", "iban"]})
    )
    assert acme_session is not None
    assert await repo.forget_business("acme") == 3
    assert await repo.api_keys("acme") == []
    assert await repo.session_business(acme_session) is None
    assert await repo.data_settings("acme") == DEFAULT_DATA_SETTINGS
    assert await repo.business_of_key(other_key) == "other"
    assert await repo.forget_business("acme") == 0


async def test_twilio_deletions_are_queued_once_and_go_when_done(repo: CallRepository) -> None:
    await repo.queue_twilio_deletion("CA1", "acme")
    await repo.queue_twilio_deletion("CA2", "acme")
    await repo.queue_twilio_deletion("CA1", "acme")  # a deletion run again
    await repo.twilio_deletion_failed("CA1", "ClientConnectorError: refused")
    assert await repo.pending_twilio_deletions(10) == [
        ("CA1", "acme", "ClientConnectorError: refused"),
        ("CA2", "acme", None),
    ]
    await repo.twilio_deletion_done("CA1")
    assert await repo.pending_twilio_deletions(10) == [("CA2", "acme", None)]
