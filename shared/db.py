"""SQLAlchemy engines for the SQL database callpipe's services share (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, make_url
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event as sa_event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from shared.retry import wait_until_reached

SQLITE_LOCK_TIMEOUT_SECONDS = 30
T = TypeVar("T")


# SQLSTATEs of a server that is there but cannot take this connection yet: any connection
# exception (class 08), "the database system is starting up", too many connections.
_NOT_YET_SQLSTATES = ("08", "57P03", "53300")


def database_url_for_logs(database_url: str) -> str:
    """The URL without its password."""
    return make_url(database_url).render_as_string(hide_password=True)


def sqlstate(error: DBAPIError) -> str | None:
    driver_error = getattr(error.orig, "driver_exception", error.orig)
    return getattr(driver_error, "sqlstate", None) or getattr(error.orig, "sqlstate", None)


def database_unreachable(error: BaseException) -> bool:
    """Whether `error` says the database server cannot be reached (yet), which waiting may
    mend, rather than that the configuration is wrong (a role, a password, a database name,
    a SQLite path)."""
    if isinstance(error, (OSError, TimeoutError)):
        return True
    if isinstance(error, DBAPIError):
        state = sqlstate(error)
        if error.connection_invalidated:
            return True
        return state is not None and state.startswith(_NOT_YET_SQLSTATES)
    return False


async def wait_for_database(
    database_url: str,
    prepare: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    base_seconds: float,
    max_seconds: float,
) -> bool:
    """Calls `prepare` (a schema to make, a table to check) until the database answers it,
    waiting with the capped backoff while it is unreachable; False if `stop` came first. A
    wrong role, password or database name fails at once (Misconfigured)."""
    return await wait_until_reached(
        f"database {database_url_for_logs(database_url)}",
        prepare,
        database_unreachable,
        stop,
        base_seconds,
        max_seconds,
    )


def _locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


def create_engine(database_url: str) -> AsyncEngine:
    """SQLite in WAL mode with a generous lock timeout (several processes write to one file),
    or a pooled engine for PostgreSQL."""
    if database_url.startswith("sqlite"):
        Path(database_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            database_url, connect_args={"timeout": SQLITE_LOCK_TIMEOUT_SECONDS}
        )
        sa_event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(database_url, pool_size=10, pool_pre_ping=True)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # Turning a new file to WAL takes an exclusive lock, and SQLite answers "database is
    # locked" at once, without its busy wait, while another process holds one: as when
    # `callpipe up` starts several services on a new file together.
    for attempt in Retrying(
        retry=retry_if_exception(_locked),
        wait=wait_random_exponential(multiplier=0.01, max=0.5),
        stop=stop_after_delay(SQLITE_LOCK_TIMEOUT_SECONDS),
        reraise=True,
    ):
        with attempt:
            cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class WriteTransactions:
    """Runs `work(connection)` in one write transaction, after this process's writers before
    it (`lock`, from `write_lock`). On SQLite the whole transaction runs on a thread with the
    standard library's driver, one hop there and back: through aiosqlite every statement,
    fetch and commit is a hop of its own, which made most of a webhook's wait and a third of
    its CPU (decision 0921). On PostgreSQL it runs on the async engine through `run_sync`."""

    def __init__(
        self, engine: AsyncEngine, lock: contextlib.AbstractAsyncContextManager[Any]
    ) -> None:
        self._engine = engine
        self._lock = lock
        self._sqlite: Engine | None = None

    async def run(self, work: Callable[[Connection], T]) -> T:
        async with self._lock:
            if self._engine.dialect.name != "sqlite":
                async with self._engine.begin() as connection:
                    return await connection.run_sync(work)
            return await asyncio.to_thread(self._run_on_sqlite, work)

    def _run_on_sqlite(self, work: Callable[[Connection], T]) -> T:
        if self._sqlite is None:
            self._sqlite = sa_create_engine(
                self._engine.url.set(drivername="sqlite"),
                connect_args={"timeout": SQLITE_LOCK_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            sa_event.listen(self._sqlite, "connect", _sqlite_pragmas)
        with self._sqlite.begin() as connection:
            return work(connection)

    def dispose(self) -> None:
        if self._sqlite is not None:
            self._sqlite.dispose()


def write_lock(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[Any]:
    """What a process's write transactions go through. SQLite takes one writer at a time: a
    lock makes this process's writers queue in order, where concurrent ones would each sleep
    in SQLite's busy handler (1, 2, 5, 10… ms), which under load took most of the player's
    and the ingress's time. PostgreSQL writes concurrently: no lock."""
    if engine.dialect.name == "sqlite":
        return asyncio.Lock()
    return contextlib.nullcontext()
