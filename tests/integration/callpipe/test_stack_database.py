"""`callpipe up` on PostgreSQL (CALLPIPE_DATABASE_URL): the database it names is made when
missing, as the role may; a role that may not gets told what to do instead."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from callpipe.stack import DatabaseUnavailable, ensure_database
from tests.support.postgres import PG_ADMIN_DSN, PG_URL, new_database_name, pg_admin

pytestmark = pytest.mark.postgres


async def database_exists(name: str) -> bool:
    connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await connection.close()


@pytest.fixture
async def missing_database() -> AsyncIterator[str]:
    name = new_database_name()
    yield name
    await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_missing_database_is_made_once(missing_database: str) -> None:
    url = PG_URL.format(database=missing_database)
    assert await ensure_database(url) is True
    assert await database_exists(missing_database)
    assert await ensure_database(url) is False


async def test_a_role_that_may_not_make_databases_is_told_how_to_get_one(
    missing_database: str,
) -> None:
    role = f"callpipe_test_{uuid.uuid4().hex[:12]}"
    await pg_admin(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        url = f"postgresql+asyncpg://{role}@127.0.0.1:5432/{missing_database}"
        with pytest.raises(DatabaseUnavailable, match=f"give the role {role} CREATEDB"):
            await ensure_database(url)
    finally:
        await pg_admin(f'DROP ROLE "{role}"')
    assert not await database_exists(missing_database)


async def test_an_unreachable_server_is_named() -> None:
    with pytest.raises(DatabaseUnavailable, match="unreachable"):
        await ensure_database("postgresql+asyncpg://postgres@127.0.0.1:1/callpipe")


async def test_sqlite_needs_nothing_made(tmp_path: Path) -> None:
    assert await ensure_database(f"sqlite+aiosqlite:///{tmp_path / 'callpipe.db'}") is False
    assert not (tmp_path / "callpipe.db").exists()
