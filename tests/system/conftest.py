"""The whole stack, `callpipe up`, shared by the system tests of a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import DATABASES
from tests.support.otlp import OTLP_PORT, OtlpReceiver
from tests.support.postgres import fresh_database
from tests.support.stack import RunningStack


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(OTLP_PORT)
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session", params=DATABASES)
def stack_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """The stack's CALLPIPE_DATABASE_URL on each database it runs on: empty (SQLite in its
    data directory), or a PostgreSQL database of its own, made before the stack starts and
    dropped after."""
    if request.param == "sqlite":
        yield ""
        return
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver, stack_database: str
) -> Iterator[RunningStack]:
    """`callpipe up` on each database in turn: pytest runs every test of one database before
    it stops that stack and starts the next (they share their ports)."""
    running = RunningStack(tmp_path_factory.mktemp("callpipe-e2e"), stack_database)
    # Observability on: JSON logs, and spans to the test's OTLP receiver within half a second.
    running.env |= {
        "CALLPIPE_LOG_FORMAT": "json",
        "CALLPIPE_TRACES_EXPORTER": "otlp",
        "CALLPIPE_OTLP_TRACES_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    }
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.stop()
