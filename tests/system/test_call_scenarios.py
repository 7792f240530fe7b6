"""The call scenarios (tests/support/call_scenarios.py) on the local-process stack: `callpipe up`
with Tansu, SeaweedFS and the five services as processes, on every CI run. The same scenarios
run on the docker compose stack in test_compose_stack.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.call_scenarios import (
    a_call_completes,
    a_downloader_killed_mid_call_loses_nothing,
)
from tests.support.stack import RunningStack

pytestmark = pytest.mark.stack


class LocalProcessStack:
    """The CallStack adapter for `callpipe up`, whose supervisor restarts a dead part."""

    def __init__(self, running: RunningStack) -> None:
        self._running = running

    def place_call(self, audio: str, **options: Any) -> str:
        return self._running.place_call(audio, **options)

    def wait_for_call(self, call_sid: str) -> dict[str, Any]:
        return self._running.wait_for_call(call_sid)

    def call(self, call_sid: str) -> dict[str, Any] | None:
        response = self._running.api.get(f"/api/calls/{call_sid}")
        return response.json() if response.status_code == 200 else None

    def recording(self, call_sid: str) -> bytes:
        response = self._running.api.get(f"/api/recordings/{call_sid}/file")
        assert response.status_code == 200, response.text
        return response.content

    def kill_worker(self, name: str) -> None:
        os.kill(self._worker_pid(name), signal.SIGKILL)

    def _worker_pid(self, name: str) -> int:
        """The child of this stack's `callpipe up` that runs `callpipe run NAME`."""
        assert self._running.process is not None
        supervisor = self._running.process.pid
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if parent == supervisor and argv[-3:-1] == [b"run", name.encode()]:
                return int(proc.name)
        raise AssertionError(f"no {name} process under callpipe up ({supervisor})")


@pytest.fixture(scope="module")
def local_stack(stack: RunningStack) -> LocalProcessStack:
    return LocalProcessStack(stack)


def test_a_call_completes(local_stack: LocalProcessStack) -> None:
    a_call_completes(local_stack)


def test_a_downloader_killed_mid_call_loses_nothing(local_stack: LocalProcessStack) -> None:
    a_downloader_killed_mid_call_loses_nothing(local_stack)
