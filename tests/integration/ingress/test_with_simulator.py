"""Calls placed by the local Twilio simulator through the ingress (both over real HTTP) to a
real broker: both recording modes, Twilio's retries, absent recordings, error 21220."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException

from callpipe.bootstrap import ingress_app
from callpipe.twilio_simulator import create_app as simulator_app
from services.ingress.core import recording_start_params
from shared.events import AnyEvent, CallStarted, RecordingCompleted, RecordingStarted
from shared.settings import Settings
from shared.twilio_rest import RecordingStarter
from tests.support.ingress import (
    ACCOUNT_SID,
    INGRESS_PORT,
    SIMULATOR_PORT,
    published,
    serving,
    signed_headers,
)

SIMULATOR = f"http://127.0.0.1:{SIMULATOR_PORT}"
CALL_PATIENCE_SECONDS = 30


async def place_call_and_wait(settings: Settings, **request: Any) -> list[AnyEvent]:
    """Places a call and returns its events once its last webhook reached Kafka."""
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{SIMULATOR}/simulator/calls", json=request)
    answer.raise_for_status()
    call_sid = answer.json()["call_sid"]
    last = (
        "recording.completed"
        if request.get("call_status", "completed") == "completed"
        else "call.status"
    )
    for _ in range(CALL_PATIENCE_SECONDS * 10):
        events = [e for e in await published(settings) if e.call_sid == call_sid]
        if any(e.event_type == last for e in events):
            return events
        await asyncio.sleep(0.1)
    pytest.fail(f"call {call_sid} did not finish: {events}")


def kinds(events: list[AnyEvent]) -> Counter[str]:
    return Counter(
        f"{e.event_type}:{getattr(e, 'call_status', getattr(e, 'recording_status', ''))}"
        for e in events
    )


EVERY_WEBHOOK_ONCE = Counter(
    {
        "call.started:": 1,
        "call.status:in-progress": 1,
        "call.status:completed": 1,
        "recording.started:": 1,
        "recording.completed:completed": 1,
    }
)


@pytest.mark.parametrize("mode", ["twiml", "rest"])
async def test_a_call_in_either_recording_mode_delivered_three_times_publishes_each_once(
    settings: Settings, mode: str
) -> None:
    settings = settings.updated(ingress={"recording_mode": mode})
    async with (
        serving(ingress_app(settings), INGRESS_PORT),
        serving(simulator_app(settings), SIMULATOR_PORT),
    ):
        events = await place_call_and_wait(
            settings, audio="plumber_boston", recording_mode=mode, deliveries=3
        )
    assert kinds(events) == EVERY_WEBHOOK_ONCE
    [started] = [e for e in events if isinstance(e, RecordingStarted)]
    [completed] = [e for e in events if isinstance(e, RecordingCompleted)]
    assert started.channels == completed.channels == 2
    source = "StartCallRecordingTwiML" if mode == "twiml" else "StartCallRecordingAPI"
    assert completed.twilio_params["RecordingSource"] == source
    [call] = [e for e in events if isinstance(e, CallStarted)]
    assert (call.from_number, call.to_number) == ("+15005550006", "+15005550001")


async def test_an_absent_recording_is_published_with_twilio_s_error_code(
    settings: Settings,
) -> None:
    async with (
        serving(ingress_app(settings), INGRESS_PORT),
        serving(simulator_app(settings), SIMULATOR_PORT),
    ):
        events = await place_call_and_wait(settings, audio="silence", recording_status="absent")
    [ended] = [e for e in events if isinstance(e, RecordingCompleted)]
    assert (ended.recording_status, ended.error_code) == ("absent", "13617")


async def test_an_unanswered_call_publishes_its_status_only(settings: Settings) -> None:
    async with (
        serving(ingress_app(settings), INGRESS_PORT),
        serving(simulator_app(settings), SIMULATOR_PORT),
    ):
        events = await place_call_and_wait(
            settings, direction="outbound-api", call_status="no-answer"
        )
    assert kinds(events) == Counter({"call.status:no-answer": 1})


async def test_a_second_rest_start_on_a_recording_call_is_not_a_failure(
    settings: Settings,
) -> None:
    """The business's app answered (REST mode at the simulator) and this test, not the
    ingress, starts the recording: twice, as a retried status callback would."""
    async with (
        serving(ingress_app(settings), INGRESS_PORT),
        serving(simulator_app(settings), SIMULATOR_PORT),
    ):
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{SIMULATOR}/simulator/calls", json={"recording_mode": "rest"}
            )
        call_sid = answer.json()["call_sid"]
        twilio = RecordingStarter(
            settings.twilio.account_sid,
            settings.twilio.auth_token.get_secret_value(),
            settings.twilio.api_base_url,
        )
        callback = f"http://127.0.0.1:{INGRESS_PORT}/twilio/recording-status?business=demo"
        try:
            with pytest.raises(TwilioRestException) as not_live:
                await twilio.start("CA" + "0" * 32, recording_start_params(callback))
            first = await twilio.start(call_sid, recording_start_params(callback))
            second = await twilio.start(call_sid, recording_start_params(callback))
        finally:
            await twilio.close()
    assert not_live.value.code == 20404
    assert first is not None and first.startswith("RE")
    assert second is None  # Twilio's 21220: already recording


async def recording_start_requests(call_sid: str) -> int:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{SIMULATOR}/simulator/recording-start-requests")
    return int(answer.json().count(call_sid))


async def replay_in_progress(call_sid: str, times: int) -> list[int]:
    """The call's signed `in-progress` status callback, as an attacker who captured it (or
    Twilio retrying it) sends it again."""
    url = f"http://127.0.0.1:{INGRESS_PORT}/twilio/call-status"
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": call_sid,
        "From": "+15005550006",
        "To": "+15005550001",
        "Direction": "inbound",
        "CallStatus": "in-progress",
    }
    async with httpx.AsyncClient() as client:
        return [
            (await client.post(url, data=params, headers=signed_headers(url, params))).status_code
            for _ in range(times)
        ]


async def test_a_replayed_rest_mode_callback_never_starts_a_second_recording(
    settings: Settings,
) -> None:
    settings = settings.updated(ingress={"recording_mode": "rest"})
    async with (
        serving(ingress_app(settings), INGRESS_PORT),
        serving(simulator_app(settings), SIMULATOR_PORT),
    ):
        events = await place_call_and_wait(
            settings, audio="plumber_boston", recording_mode="rest", deliveries=3
        )
        [call_sid] = {e.call_sid for e in events}
        replayed = await replay_in_progress(call_sid, times=3)
        starts = await recording_start_requests(call_sid)
    assert replayed == [204, 204, 204]
    assert starts == 1


async def test_a_failed_rest_mode_start_is_tried_again_at_the_retry(settings: Settings) -> None:
    """Nothing marks a start Twilio refused (here: a call it does not know): each delivery
    tries again, and is answered 503 so that Twilio retries."""
    settings = settings.updated(ingress={"recording_mode": "rest"})
    unknown_call = "CA" + "5" * 32
    async with (
        serving(ingress_app(settings), INGRESS_PORT),
        serving(simulator_app(settings), SIMULATOR_PORT),
    ):
        answers = await replay_in_progress(unknown_call, times=2)
        starts = await recording_start_requests(unknown_call)
    assert answers == [503, 503]
    assert starts == 2
