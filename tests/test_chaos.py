"""`callpipe chaos` in small: a stack of its own (on ports clear of the session's stack) whose
services are killed, whose broker is restarted and whose S3 server is stopped for 30 s while
calls go through; nothing may be lost or done twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from support_stack import PORTS, leftover_processes

pytestmark = pytest.mark.stack

# Ports of the session's stack moved by 40: both run at once.
CHAOS_PORTS = {
    name: (
        value.rsplit(":", 1)[0] + f":{int(value.rsplit(':', 1)[1]) + 40}"
        if ":" in value
        else str(int(value) + 40)
    )
    for name, value in PORTS.items()
}
CHAOS_ARGS = (
    "--calls", "10", "--kills", "3", "--broker-restarts", "1", "--s3-outage-seconds", "30",
    "--rate", "5", "--seed", "8", "--data-dir",
)  # fmt: skip


# One chaos run per test, not per module: a rerun (decision 0007) then runs the chaos again
# instead of reading the same cached outcome.
@pytest.fixture
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir = tmp_path_factory.mktemp("chaos")
    result = subprocess.run(
        [sys.executable, "-m", "callpipe", "chaos", "--json", *CHAOS_ARGS, str(data_dir)],
        env={**os.environ, **CHAOS_PORTS},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert not leftover_processes(data_dir), "the chaos run left processes behind"
    assert result.stdout.strip(), result.stderr[-5000:]
    outcome: dict[str, Any] = json.loads(result.stdout)
    outcome["stderr"] = result.stderr[-5000:]
    return outcome


def test_chaos_loses_no_call_and_doubles_no_side_effect(chaos_run: dict[str, Any]) -> None:
    assert chaos_run["calls"] == 10
    assert chaos_run["kills"] == 3
    assert chaos_run["broker_restarts"] == 1
    assert chaos_run["lost"] == 0, chaos_run
    assert chaos_run["duplicate_side_effects"] == 0, chaos_run
    assert chaos_run["completed"] + chaos_run["failed_terminal"] == 10


def test_an_object_store_outage_of_30_s_delays_calls_but_loses_none(
    chaos_run: dict[str, Any],
) -> None:
    assert chaos_run["s3_outages"] == 1
    assert chaos_run["seconds"] > 30
    # Every completed call made each side effect exactly once, outage or not.
    seen = chaos_run["side_effects_by_kind"]
    for kind in ("audio_objects", "transcript_objects", "summary.ready"):
        assert seen[kind] == chaos_run["completed"], chaos_run
    assert chaos_run["completed"] > 0
