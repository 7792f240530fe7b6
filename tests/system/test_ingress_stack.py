"""The ingress's recording modes through the whole stack (`callpipe up` in REST mode, real
processes): the Twilio simulator's business app answers calls and tells callpipe through the
call status callback; every webhook arrives three times, as Twilio's retries would."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.stack import RunningStack

pytestmark = pytest.mark.stack

PORT_SHIFT = 50
PORT_SETTINGS = [
    "CALLPIPE_INGRESS_PORT",
    "CALLPIPE_PLAYER_PORT",
    "CALLPIPE_SIMULATOR_PORT",
    "CALLPIPE_KAFKA_BOOTSTRAP",
    "CALLPIPE_S3_ENDPOINT_URL",
    "CALLPIPE_PUBLIC_BASE_URL",
    "CALLPIPE_DOWNLOADER_HEALTH_PORT",
    "CALLPIPE_TRANSCRIBER_HEALTH_PORT",
    "CALLPIPE_EXTRACTOR_HEALTH_PORT",
]


@pytest.fixture(scope="module")
def rest_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path_factory.mktemp("callpipe-rest"))
    running.env["CALLPIPE_RECORDING_MODE"] = "rest"
    # Ports of its own: the end-to-end suite's stack may still be running.
    for name in PORT_SETTINGS:
        head, _, port = running.env[name].rpartition(":")
        running.env[name] = (
            f"{head}:{int(port) + PORT_SHIFT}" if head else str(int(port) + PORT_SHIFT)
        )
    for part, name in [
        ("player", "CALLPIPE_PLAYER_PORT"),
        ("simulator", "CALLPIPE_SIMULATOR_PORT"),
        ("ingress", "CALLPIPE_INGRESS_PORT"),
    ]:
        setattr(running, part, f"http://127.0.0.1:{running.env[name]}")
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.stop()


def timeline(call: dict[str, Any]) -> Counter[tuple[str, str]]:
    return Counter((e["event_type"], e["detail"]) for e in call["timeline"])


def test_a_call_answered_by_the_business_app_is_recorded_over_the_rest_api_once(
    rest_stack: RunningStack,
) -> None:
    call = rest_stack.wait_for_call(
        rest_stack.place_call("plumber_boston", recording_mode="rest", deliveries=3)
    )
    assert call["status"] == "completed", call
    assert (call["lead_service"], call["lead_city"]) == ("plumbing", "Boston")
    events = timeline(call)
    for webhook in [
        ("call.started", "call.started"),
        ("call.status", "call in-progress"),
        ("call.status", "call completed"),
        ("recording.started", "recording in progress"),
        ("recording.completed", "recording completed"),
    ]:
        assert events[webhook] == 1, call["timeline"]


def test_an_outbound_call_nobody_answered_shows_no_recording(rest_stack: RunningStack) -> None:
    call = rest_stack.wait_for_call(
        rest_stack.place_call(
            "plumber_boston", direction="outbound-api", call_status="no-answer", deliveries=2
        )
    )
    assert call["status"] == "completed"
    assert call["recording_status"] == "no_recording"
    assert call["transcript_status"] == "skipped"
    assert "no-answer" in call["last_error"]
