"""Fixtures of the transcriber's tests: the real local Whisper backend, loaded once."""

from __future__ import annotations

import pytest

from services.transcriber.whisper import LocalWhisperBackend


@pytest.fixture(scope="session")
def local_backend() -> LocalWhisperBackend:
    return LocalWhisperBackend("", "int8", 2, "en")
