from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import DATABASES
from tests.support.postgres import fresh_database
from tests.support.storage import store  # noqa: F401  (the `store` fixture of every test)

STACK_TEST_RERUNS = 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that drives the multi-process stack (broker, S3 server, five services, a browser)
    gets one rerun, as Playwright's own CI setting does: on a shared two-core machine a timing
    slip in the test's waiting can fail it once. Each rerun is listed in the summary (`R`) and
    is a flake to chase (docs/decisions/0007-stack-test-reruns.md); a broken behaviour fails
    both runs."""
    for item in items:
        if item.get_closest_marker("stack") and not item.get_closest_marker("flaky"):
            item.add_marker(pytest.mark.flaky(reruns=STACK_TEST_RERUNS, reruns_delay=2))


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The root logger's handlers and level as they were before the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own on each database callpipe runs on, so that every
    repository's contract holds on both: a SQLite file in the test's directory, or a
    PostgreSQL database dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'callpipe.db'}"
        return
    with fresh_database() as url:
        yield url


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A PostgreSQL database of the test's own, dropped after it."""
    with fresh_database() as url:
        yield url
