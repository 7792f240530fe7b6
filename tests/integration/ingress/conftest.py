"""Fixtures of the ingress tests: a fresh broker and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.support.ingress import BROKER_PORT, Broker, ingress_settings


@pytest.fixture
def broker() -> Iterator[Broker]:
    running = Broker(BROKER_PORT)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def settings(tmp_path: Path, broker: Broker) -> Settings:
    return ingress_settings(tmp_path, broker)
