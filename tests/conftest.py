from __future__ import annotations

from collections.abc import Iterator

import pytest
from support_stack import RunningStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path_factory.mktemp("callpipe-e2e"))
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.stop()
