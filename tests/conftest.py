from __future__ import annotations

from collections.abc import Iterator

import pytest
from support_otlp import OTLP_PORT, OtlpReceiver
from support_stack import RunningStack


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(OTLP_PORT)
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver
) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path_factory.mktemp("callpipe-e2e"))
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
