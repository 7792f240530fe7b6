"""The object store of a test: a client of the S3 server the test's `settings` point at, its
bucket made if missing, stopped after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.settings import Settings
from shared.storage import ObjectStore


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[ObjectStore]:
    store = ObjectStore(settings.s3)
    await store.start()
    await store.ensure_bucket()
    yield store
    await store.stop()
