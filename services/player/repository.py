"""SQL adapter of the player: applies events to the status table, idempotently, and reads it.

The same code runs on SQLite (the embedded default) and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import secrets
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    DateTime,
    Select,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.player import core
from services.player.data_settings import DEFAULT_DATA_SETTINGS, DataSettings, change_detail
from services.player.retention import Cutoffs
from services.player.tables import (
    api_keys,
    business_call_counts,
    business_data_settings,
    call_events,
    calls,
    deleted_calls,
    player_sessions,
    retention_claims,
    stage_inputs,
    twilio_deletions,
)
from shared.call_keys import destroy_call_key
from shared.call_state import STAGES, STATUS_FIELDS, TERMINAL, CallState, StageStatus
from shared.db import WriteTransactions, write_lock
from shared.events import (
    TWILIO_NAMESPACE,
    AnyEvent,
    CallDeleted,
    Stage,
    decode,
    encode,
    input_of_stage,
    utc_now,
)
from shared.redaction.kinds import EntityKind

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(database_url: str) -> None:
    """Brings the schema to the newest revision. Blocking: run it in a thread."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")


# The duplicates idempotency expects: the event's id already in the timeline, or the call
# already marked deleted (two deletions at once). Any other violation is a real failure.
_APPLIED_BEFORE_CONSTRAINTS = frozenset({"call_events_pkey", "deleted_calls_pkey"})
_APPLIED_BEFORE_SQLITE = frozenset(
    {
        "UNIQUE constraint failed: call_events.event_id",
        "UNIQUE constraint failed: deleted_calls.call_sid",
    }
)
UNIQUE_VIOLATION = "23505"


def applied_before(error: IntegrityError) -> bool:
    """Whether `error` says the event was applied before, rather than that it breaks a
    constraint: PostgreSQL's unique_violation on the idempotency keys by SQLSTATE and
    constraint name, SQLite's by its message."""
    driver_error = getattr(error.orig, "driver_exception", error.orig)
    sqlstate = getattr(driver_error, "sqlstate", None)
    if sqlstate is not None:
        constraint = getattr(driver_error, "constraint_name", None)
        return sqlstate == UNIQUE_VIOLATION and constraint in _APPLIED_BEFORE_CONSTRAINTS
    return str(error.orig) in _APPLIED_BEFORE_SQLITE


def _utc_values(values: dict[str, Any]) -> dict[str, Any]:
    """Datetimes as UTC before they are written: SQLite keeps no offset."""
    return {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in values.items()}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


CALL_COLUMNS = tuple(calls.c.keys())


def _row_values(keys: tuple[str, ...], row: Any) -> dict[str, Any]:
    """A status table row as column → value, its times aware (UTC); columns of the result
    after `keys` (the page's total) are left out."""
    values = dict(zip(keys, row, strict=False))
    values["created_at"] = _aware(values["created_at"])
    values["updated_at"] = _aware(values["updated_at"])
    if values["audio_expired_at"] is not None:
        values["audio_expired_at"] = _aware(values["audio_expired_at"])
    return values


def _state(row: Any) -> CallState:
    return _call_state(_row_values(tuple(row._fields), row))


def _call_state(values: dict[str, Any]) -> CallState:
    """A call's state from its row's values: the stages' statuses, stored as text, as enums."""
    statuses = {field: StageStatus(values[field]) for field in STATUS_FIELDS}
    return CallState(**{**values, **statuses})


def key_digest(api_key: str) -> str:
    """The SHA-256 of an API key or a session id: all the database keeps of either."""
    return hashlib.sha256(api_key.encode()).hexdigest()


UNFINISHED_PAGE = 500
# The timeline entry of a change of the business's data settings (not an event on a topic).
SETTINGS_CHANGED = "settings.changed"
KEY_ID_LENGTH = 12  # of the digest's hex: how `callpipe api-key list` names a key
KEY_ID_PATTERN = re.compile(r"[0-9a-fA-F]{8,64}")  # a key id, or a longer digest prefix


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as an operator sees it: never the key, only the start of its digest."""

    key_id: str
    business_id: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Revoked:
    key: ApiKeyInfo
    sessions_ended: int


class AmbiguousKey(Exception):
    """More than one key matches what names the key to revoke."""

    def __init__(self, matches: list[ApiKeyInfo]) -> None:
        super().__init__(", ".join(key.key_id for key in matches))
        self.matches = matches


def _key_info(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row.key_sha256[:KEY_ID_LENGTH],
        business_id=row.business_id,
        label=row.label,
        created_at=_aware(row.created_at),
        revoked_at=_aware(row.revoked_at) if row.revoked_at else None,
    )


@dataclass(frozen=True)
class CallFilter:
    """What the call list can be narrowed to; every field optional."""

    status: str | None = None  # overall: pending, processing, completed, failed
    stage: Stage | None = None  # with stage_status: that stage's status
    stage_status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    phone: str | None = None  # caller or called number, substring
    text: str | None = None  # in the transcript preview or the summary


def _overall_status_clause(status: str) -> Any:
    stage_columns = [calls.c[f"{s.value}_status"] for s in STAGES]
    if status == StageStatus.FAILED:
        return or_(*(c == StageStatus.FAILED for c in stage_columns))
    if status == StageStatus.COMPLETED:
        return and_(*(c.in_(TERMINAL - {StageStatus.FAILED}) for c in stage_columns))
    if status == StageStatus.PENDING:
        return and_(*(c == StageStatus.PENDING for c in stage_columns))
    return and_(
        *(c != StageStatus.FAILED for c in stage_columns),
        or_(*(c.notin_(TERMINAL) for c in stage_columns)),
        or_(*(c != StageStatus.PENDING for c in stage_columns)),
    )


def _conditions(where: CallFilter) -> list[Any]:
    conditions = []
    if where.status:
        conditions.append(_overall_status_clause(where.status))
    if where.stage and where.stage_status:
        conditions.append(calls.c[f"{where.stage.value}_status"] == where.stage_status)
    if where.since:
        conditions.append(calls.c.created_at >= where.since)
    if where.until:
        conditions.append(calls.c.created_at < where.until)
    if where.phone:
        pattern = f"%{where.phone}%"
        conditions.append(or_(calls.c.from_number.like(pattern), calls.c.to_number.like(pattern)))
    if where.text:
        pattern = f"%{where.text.lower()}%"
        conditions.append(
            or_(
                func.lower(calls.c.transcript_preview).like(pattern),
                func.lower(calls.c.summary).like(pattern),
            )
        )
    return conditions


def _page_query(conditions: list[Any]) -> Select[Any]:
    """Newest first; `limit` and `offset` are parameters of the execution."""
    return (
        select(calls)
        .where(*conditions)
        .order_by(calls.c.created_at.desc(), calls.c.call_sid)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )


# A business's unfiltered list, the status page's usual request, is built once: building the
# statement and its cache key per request showed in the call list's profile. Its total is the
# count the projection keeps (business_call_counts), read in the same statement, as a last
# column: each statement is several round trips to aiosqlite's thread.
_BUSINESS_TOTAL = select(func.coalesce(func.sum(business_call_counts.c.calls), 0)).where(
    business_call_counts.c.business_id == bindparam("business_id")
)
_BUSINESS_PAGE = _page_query([calls.c.business_id == bindparam("business_id")]).add_columns(
    _BUSINESS_TOTAL.scalar_subquery()
)


def _upsert_insert(dialect: Dialect) -> Any:
    """The dialect's INSERT, whose ON CONFLICT DO UPDATE both databases have."""
    return (postgresql if dialect.name == "postgresql" else sqlite).insert


def count_calls(connection: Connection, business_id: str, added: int) -> None:
    """Adds `added` (negative: removes) to the business's call count, in the caller's
    transaction."""
    upsert = _upsert_insert(connection.dialect)(business_call_counts).values(
        business_id=business_id, calls=added
    )
    connection.execute(
        upsert.on_conflict_do_update(
            index_elements=[business_call_counts.c.business_id],
            set_={"calls": business_call_counts.c.calls + added},
        )
    )


class CallRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._write_lock = write_lock(engine)
        self._transactions = WriteTransactions(engine, self._write_lock)

    def close(self) -> None:
        self._transactions.dispose()

    async def apply(self, event: AnyEvent) -> bool:
        """Applies one event; False when it was applied before (a redelivery) or its call was
        deleted. A constraint it breaks raises: the runtime retries it, then dead-letters it."""
        try:
            return (await self.apply_batch([event]))[0]
        except IntegrityError as error:
            if not applied_before(error):
                raise
            return False

    async def apply_batch(self, events: Sequence[AnyEvent]) -> list[bool]:
        """Applies `events` in order in one transaction; for each, whether it changed anything
        (False: applied before, earlier in the batch, or its call was deleted). If any of them
        fails, none is applied."""
        return await self._transactions.run(partial(self._apply_batch, events))

    def _apply_batch(self, events: Sequence[AnyEvent], connection: Connection) -> list[bool]:
        applied: list[bool] = []
        run: list[AnyEvent] = []
        for event in events:
            if isinstance(event, CallDeleted):
                applied += self._project(connection, run)
                run = []
                applied.append(self._delete_for(connection, event))
            else:
                run.append(event)
        applied += self._project(connection, run)
        return applied

    def _project(self, connection: Connection, events: list[AnyEvent]) -> list[bool]:
        """Applies `events` (no deletion among them) with a few statements for all of them:
        the timeline rows claim the event ids, the rows of their calls are read and locked
        once, the state changes are computed in memory and written once per call."""
        if not events:
            return []
        call_sids = sorted({event.call_sid for event in events})
        deleted = set(
            connection.execute(
                select(deleted_calls.c.call_sid).where(deleted_calls.c.call_sid.in_(call_sids))
            ).scalars()
        )
        live = [event for event in events if event.call_sid not in deleted]
        claimed = self._claim_event_ids(connection, live)
        applied = []
        for event in events:
            event_id = str(event.event_id)
            applied.append(event_id in claimed)
            claimed.discard(event_id)  # a later copy in the batch is a duplicate
        fresh = [event for event, is_fresh in zip(events, applied, strict=True) if is_fresh]
        if fresh:
            self._keep_stage_inputs(connection, fresh)
            self._project_states(connection, fresh)
        return applied

    def _dialect(self) -> Any:
        return postgresql if self._engine.dialect.name == "postgresql" else sqlite

    def _claim_event_ids(self, connection: Connection, events: list[AnyEvent]) -> set[str]:
        """Inserts the events' timeline rows; the ids inserted, i.e. not applied before. The
        primary key is the idempotency guard: a copy inserted by another transaction meanwhile
        (another player replica) waits for it and is then skipped."""
        if not events:
            return set()
        rows = [
            {
                "event_id": str(event.event_id),
                "call_sid": event.call_sid,
                "event_type": event.event_type,
                "stage": core.timeline_stage(event),
                "attempt": event.attempt,
                "occurred_at": event.occurred_at.astimezone(UTC),
                "detail": core.timeline_detail(event),
            }
            for event in events
        ]
        insert_new = (
            self._dialect()
            .insert(call_events)
            .on_conflict_do_nothing()
            .returning(call_events.c.event_id)
        )
        return set(connection.execute(insert_new, rows).scalars())

    def _keep_stage_inputs(self, connection: Connection, events: list[AnyEvent]) -> None:
        """The latest input event of each stage of each call, upserted."""
        latest: dict[tuple[str, str], str] = {}
        for event in events:
            stage = input_of_stage(event)
            if stage is not None:
                latest[(event.call_sid, stage.value)] = encode(event).decode()
        if not latest:
            return
        upsert = self._dialect().insert(stage_inputs)
        connection.execute(
            upsert.on_conflict_do_update(
                index_elements=[stage_inputs.c.call_sid, stage_inputs.c.stage],
                set_={"event_json": upsert.excluded.event_json},
            ),
            [
                {"call_sid": call_sid, "stage": stage, "event_json": event_json}
                for (call_sid, stage), event_json in latest.items()
            ],
        )

    def _project_states(self, connection: Connection, events: list[AnyEvent]) -> None:
        before = self._locked_states(connection, events)
        after = dict(before)
        for event in events:
            after[event.call_sid] = core.apply(after[event.call_sid], event)
        changed = [
            {"row_call_sid": call_sid, **_utc_values(dataclasses.asdict(state))}
            for call_sid, state in after.items()
            if state != before[call_sid]
        ]
        if changed:
            connection.execute(
                update(calls).where(calls.c.call_sid == bindparam("row_call_sid")), changed
            )

    def _locked_states(
        self, connection: Connection, events: list[AnyEvent]
    ) -> dict[str, CallState]:
        """The rows of the events' calls, created if missing, locked until the transaction
        ends (in call SID order: two replicas lock shared calls in the same order), so the
        events of one call applied at once by several replicas are applied one after the
        other."""
        call_sids = sorted({event.call_sid for event in events})
        states = self._select_for_update(connection, call_sids)
        first_events: dict[str, AnyEvent] = {}
        for event in events:
            if event.call_sid not in states:
                first_events.setdefault(event.call_sid, event)
        if not first_events:
            return states
        new_states = {sid: CallState.new(first_events[sid]) for sid in sorted(first_events)}
        insert_new = (
            self._dialect().insert(calls).on_conflict_do_nothing().returning(calls.c.call_sid)
        )
        created = set(
            connection.execute(
                insert_new,
                [_utc_values(dataclasses.asdict(state)) for state in new_states.values()],
            ).scalars()
        )
        added_by_business: dict[str, int] = {}
        for call_sid in created:
            business_id = new_states[call_sid].business_id
            added_by_business[business_id] = added_by_business.get(business_id, 0) + 1
        for business_id, added in sorted(added_by_business.items()):
            count_calls(connection, business_id, added)
        states.update((call_sid, new_states[call_sid]) for call_sid in created)
        # Created meanwhile by another transaction (another replica): read once it committed.
        states.update(self._select_for_update(connection, sorted(set(new_states) - created)))
        return states

    @staticmethod
    def _select_for_update(connection: Connection, call_sids: list[str]) -> dict[str, CallState]:
        if not call_sids:
            return {}
        query = (
            select(calls)
            .where(calls.c.call_sid.in_(call_sids))
            .order_by(calls.c.call_sid)
            .with_for_update()
        )
        return {row.call_sid: _state(row) for row in connection.execute(query)}

    def _delete_for(self, connection: Connection, event: CallDeleted) -> bool:
        if self._is_deleted(connection, event.call_sid):
            return False
        self._forget(connection, event.business_id, event.call_sid)
        return True

    @staticmethod
    def _is_deleted(connection: Connection, call_sid: str) -> bool:
        query = select(deleted_calls.c.call_sid).where(deleted_calls.c.call_sid == call_sid)
        return (connection.execute(query)).first() is not None

    @staticmethod
    def _forget(connection: Connection, business_id: str, call_sid: str) -> None:
        """Removes the call's rows and destroys its key: its events on Kafka no longer open."""
        query = select(calls.c.business_id).where(calls.c.call_sid == call_sid)
        row_business_id = (connection.execute(query)).scalar_one_or_none()
        if row_business_id is not None:
            connection.execute(delete(calls).where(calls.c.call_sid == call_sid))
            count_calls(connection, row_business_id, -1)
        connection.execute(delete(stage_inputs).where(stage_inputs.c.call_sid == call_sid))
        connection.execute(delete(call_events).where(call_events.c.call_sid == call_sid))
        connection.execute(delete(retention_claims).where(retention_claims.c.call_sid == call_sid))
        connection.execute(insert(deleted_calls).values(call_sid=call_sid, deleted_at=utc_now()))
        destroy_call_key(connection, row_business_id or business_id, call_sid)

    async def delete_call(self, business_id: str, call_sid: str) -> None:
        """Removes the row, its timeline and retry inputs, destroys the call's key, and
        remembers the call as deleted, in one transaction."""
        await self._transactions.run(partial(self._delete_for_good, business_id, call_sid))

    def _delete_for_good(self, business_id: str, call_sid: str, connection: Connection) -> None:
        if not self._is_deleted(connection, call_sid):
            self._forget(connection, business_id, call_sid)

    async def recording_days(self, call_sid: str) -> set[date]:
        """The UTC days the call's `recording.completed` events happened on, from its
        timeline: the downloader files each recording under the day of its event."""
        query = select(call_events.c.occurred_at).where(
            call_events.c.call_sid == call_sid, call_events.c.event_type == "recording.completed"
        )
        async with self._engine.connect() as connection:
            times = (await connection.execute(query)).scalars()
            return {_aware(occurred_at).astimezone(UTC).date() for occurred_at in times}

    async def deleted_among(self, call_sids: Collection[str]) -> set[str]:
        """Those of the calls that were deleted."""
        query = select(deleted_calls.c.call_sid).where(deleted_calls.c.call_sid.in_(call_sids))
        async with self._engine.connect() as connection:
            return set((await connection.execute(query)).scalars())

    async def get(self, call_sid: str, business_id: str | None = None) -> CallState | None:
        query = select(calls).where(calls.c.call_sid == call_sid)
        if business_id is not None:
            query = query.where(calls.c.business_id == business_id)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return _state(row) if row else None

    async def page(
        self,
        limit: int,
        offset: int,
        business_id: str | None = None,
        where: CallFilter | None = None,
    ) -> tuple[list[CallState], int]:
        """One page of calls, newest first, and how many match in all."""
        rows, total = await self.page_rows(limit, offset, business_id, where)
        return [_call_state(values) for values in rows], total

    async def unfinished(self, created_before: datetime) -> list[CallState]:
        """Every call created before `created_before` whose pipeline is still pending or
        under way: what the reconciler looks at."""
        states: list[CallState] = []
        for status in (StageStatus.PENDING, StageStatus.PROCESSING):
            offset = 0
            while True:
                page, total = await self.page(
                    UNFINISHED_PAGE, offset, None, CallFilter(status=status, until=created_before)
                )
                states += page
                offset += len(page)
                if not page or offset >= total:
                    break
        return states

    async def page_rows(
        self,
        limit: int,
        offset: int,
        business_id: str | None = None,
        where: CallFilter | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """`page` as the table's rows (column → value, times aware): the call list shows
        them as they are, and building a CallState per row showed in its profile."""
        where = where or CallFilter()
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if business_id is not None and where == CallFilter():
            query, count = _BUSINESS_PAGE, _BUSINESS_TOTAL
            params["business_id"] = business_id
        else:
            conditions = [] if business_id is None else [calls.c.business_id == business_id]
            conditions += _conditions(where)
            query = _page_query(conditions)
            count = select(func.count()).select_from(calls).where(*conditions)
        async with self._engine.connect() as connection:
            records = (await connection.execute(query, params)).all()
            rows = [_row_values(CALL_COLUMNS, record) for record in records]
            if query is _BUSINESS_PAGE and records:
                total = int(records[0][-1])
            else:  # a filtered list, or a page past the end
                total = int((await connection.execute(count, params)).scalar_one())
        return rows, total

    async def timeline(self, call_sid: str) -> list[dict[str, Any]]:
        query = (
            select(call_events)
            .where(call_events.c.call_sid == call_sid)
            .order_by(call_events.c.occurred_at, call_events.c.event_id)
        )
        async with self._engine.connect() as connection:
            rows = await connection.execute(query)
            return [
                {**row._mapping, "occurred_at": _aware(row.occurred_at).isoformat()} for row in rows
            ]

    async def stage_input(self, call_sid: str, stage: Stage) -> AnyEvent | None:
        query = select(stage_inputs.c.event_json).where(
            stage_inputs.c.call_sid == call_sid, stage_inputs.c.stage == stage.value
        )
        async with self._engine.connect() as connection:
            raw = (await connection.execute(query)).scalar_one_or_none()
        return decode(raw.encode()) if raw else None

    async def claim_retry(self, state: CallState, stage: Stage, attempt: int) -> bool:
        """Marks the failed stage (and the later ones) pending at `attempt`, unless another
        request did first."""
        status, current = calls.c[f"{stage.value}_status"], calls.c[f"{stage.value}_attempt"]
        retried = dataclasses.asdict(core.retrying(state, stage, attempt))
        changed = {k: v for k, v in retried.items() if getattr(state, k) != v}
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(calls)
                .where(
                    calls.c.call_sid == state.call_sid,
                    status == StageStatus.FAILED,
                    current == attempt - 1,
                )
                .values(**changed)
            )
        return bool(result.rowcount)

    async def create_api_key(self, business_id: str, label: str) -> str:
        """A new random key for the business; only its digest is stored."""
        api_key = f"cp_{secrets.token_urlsafe(32)}"
        await self.add_api_key(business_id, api_key, label)
        return api_key

    async def add_api_key(self, business_id: str, api_key: str, label: str) -> None:
        async with self._engine.begin() as connection:
            digest = key_digest(api_key)
            exists = select(api_keys.c.key_sha256).where(api_keys.c.key_sha256 == digest)
            if (await connection.execute(exists)).first() is None:
                await connection.execute(
                    insert(api_keys).values(
                        key_sha256=digest,
                        business_id=business_id,
                        label=label,
                        created_at=utc_now(),
                    )
                )

    async def business_of_key(self, api_key: str) -> str | None:
        """The business of a key that exists and is not revoked."""
        query = select(api_keys.c.business_id).where(
            api_keys.c.key_sha256 == key_digest(api_key), api_keys.c.revoked_at.is_(None)
        )
        async with self._engine.connect() as connection:
            return (await connection.execute(query)).scalar_one_or_none()

    async def api_keys(self, business_id: str | None = None) -> list[ApiKeyInfo]:
        query = select(api_keys).order_by(api_keys.c.business_id, api_keys.c.created_at)
        if business_id is not None:
            query = query.where(api_keys.c.business_id == business_id)
        async with self._engine.connect() as connection:
            return [_key_info(row) for row in await connection.execute(query)]

    async def revoke_api_key(self, key_id_or_label: str) -> Revoked | None:
        """Revokes the one key whose id (a digest prefix) or label this is, and ends its
        sessions in the same transaction; None when no key matches, AmbiguousKey when
        several do."""
        name = key_id_or_label.strip()
        named = [api_keys.c.label == name]
        if KEY_ID_PATTERN.fullmatch(name):
            named.append(api_keys.c.key_sha256.startswith(name.lower()))
        query = select(api_keys).where(or_(*named))
        async with self._engine.begin() as connection:
            rows = (await connection.execute(query)).all()
            if len(rows) > 1:
                raise AmbiguousKey([_key_info(row) for row in rows])
            if not rows:
                return None
            digest = rows[0].key_sha256
            await connection.execute(
                update(api_keys)
                .where(api_keys.c.key_sha256 == digest, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utc_now())
            )
            ended = await connection.execute(
                delete(player_sessions).where(player_sessions.c.key_sha256 == digest)
            )
            revoked = (await connection.execute(query.where(api_keys.c.key_sha256 == digest))).one()
        return Revoked(_key_info(revoked), ended.rowcount)

    async def open_session(self, api_key: str, lifetime: timedelta) -> str | None:
        """A new session of the key's business, or None for an unknown or revoked key. The
        session id is returned once; only its digest is stored. Sessions already expired are
        deleted here, so the table holds only what logins since the last one left."""
        digest = key_digest(api_key)
        session_id = secrets.token_urlsafe(32)
        now = utc_now()
        known = select(api_keys.c.business_id).where(
            api_keys.c.key_sha256 == digest, api_keys.c.revoked_at.is_(None)
        )
        async with self._engine.begin() as connection:
            business = (await connection.execute(known)).scalar_one_or_none()
            if business is None:
                return None
            await connection.execute(
                delete(player_sessions).where(player_sessions.c.expires_at <= now)
            )
            await connection.execute(
                insert(player_sessions).values(
                    session_sha256=key_digest(session_id),
                    business_id=business,
                    key_sha256=digest,
                    created_at=now,
                    expires_at=now + lifetime,
                )
            )
        return session_id

    async def session_business(self, session_id: str) -> str | None:
        """The business of a live session: one that exists, has not expired and whose key is
        not revoked. An expired one met here is deleted."""
        digest = key_digest(session_id)
        query = (
            select(player_sessions.c.business_id, player_sessions.c.expires_at)
            .join(api_keys, api_keys.c.key_sha256 == player_sessions.c.key_sha256)
            .where(player_sessions.c.session_sha256 == digest, api_keys.c.revoked_at.is_(None))
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            return None
        if _aware(row.expires_at) <= utc_now():
            await self.close_session(session_id)
            return None
        return str(row.business_id)

    async def close_session(self, session_id: str) -> None:
        session = player_sessions.c.session_sha256 == key_digest(session_id)
        async with self._engine.begin() as connection:
            await connection.execute(delete(player_sessions).where(session))

    async def data_settings(self, business_id: str) -> DataSettings:
        """The business's data settings; the defaults if it never saved any."""
        async with self._engine.connect() as connection:
            return await connection.run_sync(self._data_settings, business_id)

    @staticmethod
    def _data_settings(connection: Connection, business_id: str) -> DataSettings:
        query = select(business_data_settings).where(
            business_data_settings.c.business_id == business_id
        )
        row = connection.execute(query).first()
        if row is None:
            return DEFAULT_DATA_SETTINGS
        return _data_settings_of(row)

    async def save_data_settings(self, business_id: str, settings: DataSettings) -> int:
        """Replaces the business's data settings. When the redaction or a retention changed,
        each of its calls still on its way (not summarised yet) gets a timeline entry saying
        what changed for it, in the same transaction; how many did."""
        return await self._transactions.run(
            partial(self._save_data_settings, business_id, settings)
        )

    def _save_data_settings(
        self, business_id: str, settings: DataSettings, connection: Connection
    ) -> int:
        before = self._data_settings(connection, business_id)
        now = utc_now()
        values = {
            "redact": json.dumps(settings.redact),
            "audio_retention_days": settings.audio_retention_days,
            "call_retention_days": settings.call_retention_days,
            "delete_from_twilio": settings.delete_from_twilio,
            "updated_at": now,
        }
        upsert = _upsert_insert(connection.dialect)(business_data_settings)
        connection.execute(
            upsert.values(business_id=business_id, **values).on_conflict_do_update(
                index_elements=[business_data_settings.c.business_id], set_=values
            )
        )
        if change_detail(before, settings, redaction_applies=True) is None:
            return 0
        on_their_way = select(
            calls.c.call_sid, calls.c.recording_status, calls.c.summary_attempt
        ).where(calls.c.business_id == business_id, calls.c.summary_status.notin_(TERMINAL))
        entries = []
        for call_sid, recording_status, attempt in connection.execute(on_their_way):
            fetching = recording_status in (StageStatus.PENDING, StageStatus.PROCESSING)
            entries.append(
                {
                    "event_id": str(
                        uuid.uuid5(TWILIO_NAMESPACE, f"{call_sid}:settings:{now.isoformat()}")
                    ),
                    "call_sid": call_sid,
                    "event_type": SETTINGS_CHANGED,
                    "stage": None,
                    "attempt": attempt,
                    "occurred_at": now,
                    "detail": change_detail(before, settings, fetching),
                }
            )
        if entries:
            connection.execute(insert(call_events), entries)
        return len(entries)

    async def retention_settings(self) -> list[tuple[str, DataSettings]]:
        """Every business that keeps its audio or its calls for a limited time, with its
        data settings."""
        query = (
            select(business_data_settings)
            .where(
                or_(
                    business_data_settings.c.audio_retention_days.is_not(None),
                    business_data_settings.c.call_retention_days.is_not(None),
                )
            )
            .order_by(business_data_settings.c.business_id)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [(row.business_id, _data_settings_of(row)) for row in rows]

    async def claim_due(
        self,
        business_id: str,
        due: Cutoffs,
        claimed_by: str,
        now: datetime,
        claim_for: timedelta,
        limit: int,
        passed_over: Collection[str] = (),
    ) -> list[CallState]:
        """Up to `limit` of the business's calls that are due under `due` (audio not yet
        expired, or the whole call), oldest first, but those `passed_over`, that no sweep
        holds a live claim on:
        claimed by `claimed_by` until `now + claim_for`, in one statement (an upsert whose
        conflict takes over only a claim that ran out), so two sweeps never claim one call."""
        return await self._transactions.run(
            partial(
                self._claim_due, business_id, due, claimed_by, now, claim_for, limit, passed_over
            )
        )

    def _claim_due(
        self,
        business_id: str,
        due: Cutoffs,
        claimed_by: str,
        now: datetime,
        claim_for: timedelta,
        limit: int,
        passed_over: Collection[str],
        connection: Connection,
    ) -> list[CallState]:
        now = now.astimezone(UTC)
        until = now + claim_for
        candidates = (
            select(
                calls.c.call_sid,
                literal(claimed_by, String(36)),
                literal(until, DateTime(timezone=True)),
            )
            .select_from(_CALLS_AND_CLAIMS)
            .where(*_due_and_free(business_id, due, now, passed_over))
            .order_by(calls.c.created_at, calls.c.call_sid)
            .limit(limit)
        )
        upsert = _upsert_insert(connection.dialect)(retention_claims).from_select(
            ["call_sid", "claimed_by", "claimed_until"], candidates
        )
        claim = upsert.on_conflict_do_update(
            index_elements=[retention_claims.c.call_sid],
            set_={"claimed_by": claimed_by, "claimed_until": until},
            where=retention_claims.c.claimed_until <= now,
        ).returning(retention_claims.c.call_sid)
        claimed = sorted(connection.execute(claim).scalars())
        if not claimed:
            return []
        query = (
            select(calls)
            .where(calls.c.call_sid.in_(claimed))
            .order_by(calls.c.created_at, calls.c.call_sid)
        )
        return [_state(row) for row in connection.execute(query)]

    async def any_due(
        self, business_id: str, due: Cutoffs, now: datetime, passed_over: Collection[str] = ()
    ) -> bool:
        """Whether a call of the business, but those `passed_over`, is due and free to
        claim."""
        query = (
            select(calls.c.call_sid)
            .select_from(_CALLS_AND_CLAIMS)
            .where(*_due_and_free(business_id, due, now.astimezone(UTC), passed_over))
            .limit(1)
        )
        async with self._engine.connect() as connection:
            return (await connection.execute(query)).first() is not None

    async def expire_audio(self, call_sid: str, expired_at: datetime, reason: str) -> bool:
        """Marks the call's audio expired (when, why) and drops the sweep's claim on it;
        False when it was marked already, or the call is gone."""
        return await self._transactions.run(
            partial(self._expire_audio, call_sid, expired_at.astimezone(UTC), reason)
        )

    @staticmethod
    def _expire_audio(
        call_sid: str, expired_at: datetime, reason: str, connection: Connection
    ) -> bool:
        marked = connection.execute(
            update(calls)
            .where(calls.c.call_sid == call_sid, calls.c.audio_expired_at.is_(None))
            .values(audio_expired_at=expired_at, audio_expired_reason=reason)
        )
        connection.execute(delete(retention_claims).where(retention_claims.c.call_sid == call_sid))
        return bool(marked.rowcount)

    async def release_claim(self, call_sid: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(retention_claims).where(retention_claims.c.call_sid == call_sid)
            )

    async def redaction_kinds(self, business_id: str) -> frozenset[EntityKind]:
        """Every kind the business's transcripts and summaries are redacted of: its choice,
        and always cards and long numbers. Only the `redact` column is read, so a stage
        reading a table the player has not migrated to its newest columns yet is not in the
        way. Before the player's first migration made the settings table (a stage can start
        first), no business has chosen: the defaults."""
        query = select(business_data_settings.c.redact).where(
            business_data_settings.c.business_id == business_id
        )
        try:
            async with self._engine.connect() as connection:
                redact = (await connection.execute(query)).scalar_one_or_none()
        except DBAPIError as error:
            if not _no_such_table(error):
                raise
            log.warning("no data settings table yet: the defaults for %s", business_id)
            redact = None
        if redact is None:
            return DEFAULT_DATA_SETTINGS.redacted
        return DEFAULT_DATA_SETTINGS.model_copy(update={"redact": json.loads(redact)}).redacted

    async def queue_twilio_deletion(self, call_sid: str, business_id: str) -> None:
        """Remembers that the call's recordings are to be deleted at Twilio (once only)."""
        row = {"call_sid": call_sid, "business_id": business_id}
        add = self._dialect().insert(twilio_deletions).on_conflict_do_nothing()
        async with self._engine.begin() as connection:
            await connection.execute(add.values(**row, queued_at=utc_now(), attempts=0))

    async def twilio_deletion_done(self, call_sid: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(twilio_deletions).where(twilio_deletions.c.call_sid == call_sid)
            )

    async def twilio_deletion_failed(self, call_sid: str, error: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(twilio_deletions)
                .where(twilio_deletions.c.call_sid == call_sid)
                .values(attempts=twilio_deletions.c.attempts + 1, last_error=error)
            )

    async def pending_twilio_deletions(self, limit: int) -> list[tuple[str, str, str | None]]:
        """Up to `limit` calls whose recordings are still to be deleted at Twilio, the
        longest waiting first: (call SID, business, the last attempt's error)."""
        query = (
            select(
                twilio_deletions.c.call_sid,
                twilio_deletions.c.business_id,
                twilio_deletions.c.last_error,
            )
            .order_by(twilio_deletions.c.queued_at, twilio_deletions.c.call_sid)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            return [tuple(row) for row in await connection.execute(query)]

    async def business_calls(self, business_id: str, limit: int) -> list[CallState]:
        """Up to `limit` of the business's calls (in call SID order)."""
        query = (
            select(calls)
            .where(calls.c.business_id == business_id)
            .order_by(calls.c.call_sid)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            return [_state(row) for row in await connection.execute(query)]

    async def forget_business(self, business_id: str) -> int:
        """Deletes the business's data settings, sessions, API keys and call count, in one
        transaction; how many API keys it had."""
        async with self._engine.begin() as connection:
            for table in (business_data_settings, player_sessions, business_call_counts):
                await connection.execute(delete(table).where(table.c.business_id == business_id))
            keys = await connection.execute(
                delete(api_keys).where(api_keys.c.business_id == business_id)
            )
        return int(keys.rowcount)


# A call with the sweep's claim on it, if any.
_CALLS_AND_CLAIMS = calls.outerjoin(
    retention_claims, retention_claims.c.call_sid == calls.c.call_sid
)


def _due_and_free(
    business_id: str, due: Cutoffs, now: datetime, passed_over: Collection[str]
) -> list[Any]:
    """Conditions on _CALLS_AND_CLAIMS: the business's calls due under `due` (`due.any`),
    but those `passed_over`, that no sweep holds a live claim on."""
    reasons = []
    if due.audio_before is not None:
        reasons.append(
            and_(
                calls.c.created_at < due.audio_before.astimezone(UTC),
                calls.c.audio_expired_at.is_(None),
            )
        )
    if due.calls_before is not None:
        reasons.append(calls.c.created_at < due.calls_before.astimezone(UTC))
    conditions = [
        calls.c.business_id == business_id,
        or_(*reasons),
        or_(retention_claims.c.claimed_until.is_(None), retention_claims.c.claimed_until <= now),
    ]
    if passed_over:
        conditions.append(calls.c.call_sid.notin_(sorted(passed_over)))
    return conditions


def _data_settings_of(row: Any) -> DataSettings:
    return DataSettings(
        redact=json.loads(row.redact),
        audio_retention_days=row.audio_retention_days,
        call_retention_days=row.call_retention_days,
        delete_from_twilio=bool(row.delete_from_twilio),
    )


def _no_such_table(error: DBAPIError) -> bool:
    """SQLite's "no such table", PostgreSQL's undefined_table (SQLSTATE 42P01)."""
    message = str(error.orig)
    table = business_data_settings.name
    return (
        f"no such table: {table}" in message
        or getattr(error.orig, "sqlstate", None) == "42P01"
        or f'relation "{table}" does not exist' in message
    )
