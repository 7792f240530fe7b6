"""The PostgreSQL server every machine here has (127.0.0.1:5432, user postgres, trust auth):
tests make a database of their own on it and drop it after."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import asyncpg

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"


def new_database_name() -> str:
    return f"callpipe_test_{uuid.uuid4().hex[:12]}"


async def pg_admin(statement: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def pg_admin_now(statement: str) -> None:
    """`pg_admin` from synchronous code, on a thread of its own: a fixture may be set up
    while another runs an event loop in this thread (Playwright's does)."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, pg_admin(statement)).result()


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a database made for one test (or one stack) and dropped after it: a
    database shared between tests hands one test's leftover rows (an outbox still to relay,
    a lease still held) to the next."""
    database = new_database_name()
    pg_admin_now(f'CREATE DATABASE "{database}"')
    try:
        yield PG_URL.format(database=database)
    finally:
        pg_admin_now(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
