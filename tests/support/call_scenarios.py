"""The call scenarios every way of running callpipe must pass, written once.

`tests/system/test_call_scenarios.py` runs them on the local-process stack (`callpipe up`:
Tansu, SeaweedFS, the five services as processes) on every CI run;
`tests/system/test_compose_stack.py` runs them on the docker compose stack (Apache Kafka,
MinIO, PostgreSQL, the five services as containers) wherever a Docker engine is reachable. A
stack adapter only says how to place a call, read its status and audio, and kill a worker.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from callpipe.twilio_simulator.samples import sample_path

# Twilio's media answers 404 this long after the call: the downloader is mid-call, retrying.
MEDIA_DELAY_SECONDS = 10.0
PROCESSING_TIMEOUT_SECONDS = 60


class CallStack(Protocol):
    def place_call(self, audio: str, **options: Any) -> str:
        """Places a simulated call; `audio` is a bundled sample name or a file the simulator
        can read. Returns the call SID."""

    def wait_for_call(self, call_sid: str) -> dict[str, Any]:
        """The call once it is completed or failed (fails the test after a while)."""

    def call(self, call_sid: str) -> dict[str, Any] | None:
        """The call's status now, or None while the player does not know it."""

    def recording(self, call_sid: str) -> bytes:
        """The stored audio, through the player's API."""

    def kill_worker(self, name: str) -> None:
        """SIGKILLs the worker `name` (no clean shutdown, nothing committed); the stack's own
        supervision brings it back."""


def _events(call: dict[str, Any], event_type: str) -> list[dict[str, Any]]:
    return [e for e in call["timeline"] if e["event_type"] == event_type]


def _assert_completed_once(call: dict[str, Any]) -> None:
    assert call["status"] == "completed", call
    for stage in ("recording", "transcript", "summary"):
        assert call[f"{stage}_status"] == "completed", (stage, call)
    for event_type in ("recording.downloaded", "transcript.ready", "summary.ready"):
        assert len(_events(call, event_type)) == 1, (event_type, call["timeline"])


def a_call_completes(stack: CallStack) -> None:
    call = stack.wait_for_call(stack.place_call("plumber_boston"))
    _assert_completed_once(call)
    assert (call["lead_service"], call["lead_city"]) == ("plumbing", "Boston")
    assert "plumber" in call["transcript_preview"].lower()
    assert stack.recording(call["call_sid"]) == sample_path("plumber_boston").read_bytes()


def _until_processing(stack: CallStack, call_sid: str, stage: str) -> None:
    deadline = time.monotonic() + PROCESSING_TIMEOUT_SECONDS
    call = None
    while time.monotonic() < deadline:
        call = stack.call(call_sid)
        if call is not None and call[f"{stage}_status"] == "processing":
            return
        if call is not None and call[f"{stage}_status"] == "completed":
            raise AssertionError(f"{stage} finished before the worker could be killed: {call}")
        time.sleep(0.2)
    raise AssertionError(f"{stage} of {call_sid} never started: {call}")


def a_downloader_killed_mid_call_loses_nothing(stack: CallStack) -> None:
    """The downloader dies while it is fetching a recording that Twilio is still preparing,
    with two more calls taken behind it: every call completes, each stage's output once, and
    the held call's audio is the recording byte for byte."""
    held = stack.place_call("plumber_boston", media_delay_seconds=MEDIA_DELAY_SECONDS)
    _until_processing(stack, held, "recording")
    queued = [stack.place_call(audio) for audio in ("electrician_denver", "plumber_boston")]
    stack.kill_worker("downloader")
    calls = [stack.wait_for_call(call_sid) for call_sid in (held, *queued)]
    for call in calls:
        _assert_completed_once(call)
    assert stack.recording(held) == sample_path("plumber_boston").read_bytes()
    assert calls[1]["lead_city"] == "Denver"
