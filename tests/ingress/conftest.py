"""Fixtures of the ingress tests: a fresh broker and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ingress_support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BROKER_PORT,
    INGRESS_PORT,
    SIMULATOR_PORT,
    Broker,
)

from shared.settings import Settings


@pytest.fixture
def broker() -> Iterator[Broker]:
    running = Broker(BROKER_PORT)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def settings(tmp_path: Path, broker: Broker) -> Settings:
    return Settings(
        data_dir=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{broker.port}",
        kafka_partitions=1,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        public_base_url=f"http://127.0.0.1:{INGRESS_PORT}",
        twilio_api_base_url=f"http://127.0.0.1:{SIMULATOR_PORT}",
        simulator_port=SIMULATOR_PORT,
        ingress_publish_timeout_seconds=3,
    )
