from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.support.otlp import OTLP_PORT, OtlpReceiver
from tests.support.postgres import fresh_database
from tests.support.stack import RunningStack

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


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(OTLP_PORT)
    receiver.start()
    yield receiver
    receiver.stop()


# The databases the running stack is tested on: the embedded default, and production's.
STACK_DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session", params=STACK_DATABASES)
def stack_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """The stack's CALLPIPE_DATABASE_URL: empty (SQLite in its data directory), or a
    PostgreSQL database of its own, made before the stack starts and dropped after."""
    if request.param == "sqlite":
        yield ""
        return
    with fresh_database() as url:
        yield url


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A PostgreSQL database of the test's own, dropped after it."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver, stack_database: str
) -> Iterator[RunningStack]:
    """`callpipe up` on each of STACK_DATABASES in turn: pytest runs every test of one
    database before it stops that stack and starts the next (they share their ports)."""
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
