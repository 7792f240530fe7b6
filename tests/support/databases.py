"""The databases callpipe runs on, as the parameters of a fixture that makes one of each: the
embedded SQLite, and production's PostgreSQL (tests.support.postgres)."""

from __future__ import annotations

import pytest

DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]
