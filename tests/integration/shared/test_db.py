"""The SQLite engine's set-up when several services open a new database file at once (as
`callpipe up` starts them): turning a file to WAL needs an exclusive lock, and SQLite answers
"database is locked" at once, without its busy wait, to all but one of them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine

SERVICES = 4
ROUNDS = 40  # without the retry, about one round in twenty failed on this machine


async def test_services_opening_a_new_file_together_all_get_wal(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        url = f"sqlite+aiosqlite:///{tmp_path / f'round-{round_}.db'}"
        engines = [create_engine(url) for _ in range(SERVICES)]

        async def journal_mode(engine: AsyncEngine) -> str:
            async with engine.connect() as connection:
                await connection.execute(text("CREATE TABLE IF NOT EXISTS calls (sid TEXT)"))
                await connection.commit()
                return str((await connection.execute(text("PRAGMA journal_mode"))).scalar_one())

        try:
            modes = await asyncio.gather(*(journal_mode(engine) for engine in engines))
        finally:
            for engine in engines:
                await engine.dispose()
        assert modes == ["wal"] * SERVICES, round_
