"""The small image's install (callpipe without the `speech` extra) is enough for every service
but the transcriber, and the transcriber without it stops at start, naming the extra.
Each check runs in a child process in which the speech stack cannot be imported
(tests/support/slim.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).parents[2] / "support" / "slim.py"
# Nothing listens here: a service that reached for the broker would not stop with the message.
NO_BROKER = f"127.0.0.1:{19992 + int(os.environ.get('CALLPIPE_TEST_PORT_OFFSET', '0'))}"


def _probe(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROBE), *args],
        env={
            **os.environ,
            "CALLPIPE_DATA_DIR": str(tmp_path),
            "CALLPIPE_KAFKA_BOOTSTRAP": NO_BROKER,
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_service_but_the_transcriber_builds_without_the_speech_stack(
    tmp_path: Path,
) -> None:
    result = _probe(tmp_path, "factories")
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    assert built == {
        "ingress": "FastAPI",
        "player": "FastAPI",
        "analytics": "Application",
        "downloader": ["recording.completed"],
        "extractor": ["transcript.ready"],
        "reconciler": "Reconciler",
        "faster_whisper": "blocked",
        "loaded_speech_modules": [],
    }


def test_the_migrations_job_runs_without_the_speech_stack(tmp_path: Path) -> None:
    result = _probe(tmp_path, "cli", "migrate")
    assert result.returncode == 0, result.stderr
    assert "database schema up to date" in result.stdout
    assert (tmp_path / "callpipe.db").stat().st_size > 0


@pytest.mark.parametrize("backend", ["local", "openai"])
def test_the_transcriber_without_the_speech_extra_stops_at_start_naming_it(
    tmp_path: Path, backend: str
) -> None:
    result = _probe(tmp_path, "cli", "run", "transcriber", CALLPIPE_TRANSCRIBER_BACKEND=backend)
    assert result.returncode == 1
    assert "the transcriber needs callpipe's `speech` extra" in result.stderr
    assert "pip install 'callpipe[speech]'" in result.stderr
    assert "No module named 'faster_whisper'" in result.stderr
    assert "Traceback" not in result.stderr
