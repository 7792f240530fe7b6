"""The ingress over real HTTP against a real broker: signed webhooks in, each real occurrence
exactly once on Kafka, forgeries refused. The broker and the ingress coming and going:
test_outbox.py."""

from __future__ import annotations

import asyncio
import secrets
import xml.etree.ElementTree as ET

import httpx
import pytest

from callpipe.bootstrap import ingress_app
from shared.events import (
    CallStarted,
    CallStatusChanged,
    RecordingCompleted,
    RecordingStarted,
    Topic,
)
from shared.settings import Settings
from tests.support.ingress import (
    ACCOUNT_SID,
    INGRESS_PORT,
    SECOND_INGRESS_PORT,
    published,
    published_once_there,
    serving,
    signed_headers,
    stored_event_ids,
)

CALL_SID = "CA" + "0123456789abcdef" * 2
RECORDING_SID = "RE" + "fedcba9876543210" * 2
INGRESS = f"http://127.0.0.1:{INGRESS_PORT}"
RECORDING_CALLBACK = {
    "AccountSid": ACCOUNT_SID,
    "CallSid": CALL_SID,
    "RecordingSid": RECORDING_SID,
    "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{RECORDING_SID}",
    "RecordingStatus": "completed",
    "RecordingDuration": "42",
    "RecordingChannels": "2",
    "RecordingStartTime": "Tue, 24 Nov 2026 18:00:00 +0000",
    "RecordingSource": "StartCallRecordingTwiML",
    "RecordingTrack": "both",
    "ErrorCode": "0",
    "SomeParameterTwilioAddsNextYear": "tolerated",
}
VOICE = {
    "AccountSid": ACCOUNT_SID,
    "CallSid": CALL_SID,
    "From": "+15005550006",
    "To": "+15005550001",
    "CallStatus": "ringing",
    "Direction": "inbound",
    "ApiVersion": "2010-04-01",
    "CallerCity": "BOSTON",
}


# A genuine callback of another call, sent after one that must be refused: once it is on
# Kafka, the relay was connected and would have published a refused one stored before it.
GENUINE_CALL_SID = "CA" + "9" * 32
GENUINE_CALLBACK = {
    **RECORDING_CALLBACK,
    "CallSid": GENUINE_CALL_SID,
    "RecordingSid": "RE" + "9" * 32,
}


async def post(
    path: str, params: dict[str, str], *, token: str | None = "token-1", base: str = INGRESS
) -> httpx.Response:
    url = base + path
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(url, data=params, headers=signed_headers(url, params, token))


async def test_a_valid_recording_callback_publishes_one_event_with_every_field(
    settings: Settings,
) -> None:
    async with serving(ingress_app(settings), INGRESS_PORT):
        answer = await post("/twilio/recording-status?business=plumber", RECORDING_CALLBACK)
        await published_once_there(settings, CALL_SID)  # the relay connected and sent it
    assert answer.status_code == 204, answer.text
    [event] = await published(settings)
    assert isinstance(event, RecordingCompleted)
    assert event.business_id == "plumber"
    assert event.call_sid == CALL_SID
    assert event.recording_sid == RECORDING_SID
    assert event.recording_status == "completed"
    assert event.recording_url == RECORDING_CALLBACK["RecordingUrl"]
    assert event.duration_seconds == 42
    assert event.channels == 2
    assert event.twilio_params == RECORDING_CALLBACK


async def test_the_voice_webhook_starts_a_dual_channel_recording_first(
    settings: Settings,
) -> None:
    settings = settings.updated(business={"numbers": "+15005550001=plumber"})
    async with serving(ingress_app(settings), INGRESS_PORT):
        answer = await post("/twilio/voice", VOICE)
        await published_once_there(settings, CALL_SID)  # the relay connected and sent it
    assert answer.status_code == 200, answer.text
    twiml = ET.fromstring(answer.text)
    assert twiml[0].tag == "Start"
    recording = twiml.find("./Start/Recording")
    assert recording is not None
    assert recording.get("channels") == "dual"
    assert recording.get("recordingStatusCallback") == (
        f"{INGRESS}/twilio/recording-status?business=plumber&direction=inbound"
    )
    assert recording.get("recordingStatusCallbackEvent") == "in-progress completed absent failed"
    [event] = await published(settings)
    assert isinstance(event, CallStarted)
    assert (event.business_id, event.from_number, event.to_number) == (
        "plumber",
        "+15005550006",
        "+15005550001",
    )
    assert event.twilio_params == VOICE


async def test_an_outbound_call_belongs_to_the_business_calling(settings: Settings) -> None:
    settings = settings.updated(business={"numbers": "+15005550001=plumber"})
    outbound = {**VOICE, "Direction": "outbound-api", "From": "+15005550001", "To": "+1999"}
    async with serving(ingress_app(settings), INGRESS_PORT):
        answer = await post("/twilio/voice", outbound)
        await published_once_there(settings, CALL_SID)  # the relay connected and sent it
    assert answer.status_code == 200
    assert ET.fromstring(answer.text).find("./Start/Recording") is not None
    [event] = await published(settings)
    assert event.business_id == "plumber"


async def test_a_number_no_business_owns_is_answered_and_publishes_nothing(
    settings: Settings,
) -> None:
    settings = settings.updated(business={"numbers": "+15005550002=electrician"})
    async with serving(ingress_app(settings), INGRESS_PORT):
        voice = await post("/twilio/voice", VOICE)
        status = await post("/twilio/call-status", {**VOICE, "CallStatus": "completed"})
        genuine = await post("/twilio/recording-status?business=plumber", GENUINE_CALLBACK)
        events = await published_once_there(settings, GENUINE_CALL_SID)
    assert voice.status_code == 200
    assert ET.fromstring(voice.text).find("./Start/Recording") is None
    assert (status.status_code, genuine.status_code) == (204, 204)
    assert [e.call_sid for e in events] == [GENUINE_CALL_SID]
    assert await stored_event_ids(settings) == {str(events[0].event_id)}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        signed_headers(f"{INGRESS}/twilio/recording-status", {**RECORDING_CALLBACK, "x": "y"}),
    ],
    ids=["missing", "forged", "signed-over-other-params"],
)
async def test_a_forged_or_missing_signature_gets_403_and_publishes_nothing(
    settings: Settings, headers: dict[str, str]
) -> None:
    async with (
        serving(ingress_app(settings), INGRESS_PORT),
        httpx.AsyncClient() as client,
    ):
        answer = await client.post(
            f"{INGRESS}/twilio/recording-status", data=RECORDING_CALLBACK, headers=headers
        )
        genuine = await post("/twilio/recording-status", GENUINE_CALLBACK)
        events = await published_once_there(settings, GENUINE_CALL_SID)
    assert (answer.status_code, genuine.status_code) == (403, 204)
    assert [e.call_sid for e in events] == [GENUINE_CALL_SID]
    assert await stored_event_ids(settings) == {str(events[0].event_id)}


async def test_behind_a_tls_terminating_proxy_the_signature_is_checked_over_the_public_url(
    settings: Settings,
) -> None:
    public = "https://calls.example.com"
    settings = settings.updated(ingress={"public_base_url": public})
    path = "/twilio/recording-status"
    proxy_headers = {
        "Host": "ingress.internal:8000",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": "attacker.example",
    }
    async with serving(ingress_app(settings), INGRESS_PORT), httpx.AsyncClient() as client:

        async def through_proxy(signed_over: str) -> int:
            headers = {**signed_headers(signed_over, RECORDING_CALLBACK), **proxy_headers}
            response = await client.post(INGRESS + path, data=RECORDING_CALLBACK, headers=headers)
            return response.status_code

        forwarded_url = await through_proxy("http://attacker.example" + path)
        internal_url = await through_proxy("http://ingress.internal:8000" + path)
        public_url = await through_proxy(public + path)
        await published_once_there(settings, CALL_SID)  # the relay connected and sent it
    assert (forwarded_url, internal_url, public_url) == (403, 403, 204)
    assert len(await published(settings)) == 1


async def test_the_same_callback_five_times_publishes_one_event(settings: Settings) -> None:
    async with serving(ingress_app(settings), INGRESS_PORT):
        answers = [await post("/twilio/recording-status", RECORDING_CALLBACK) for _ in range(5)]
        await published_once_there(settings, CALL_SID)  # the relay connected and sent it
    assert [a.status_code for a in answers] == [204] * 5
    assert len(await published(settings)) == 1


async def test_the_same_callback_five_times_concurrently_on_two_instances_publishes_one(
    settings: Settings, database_url: str
) -> None:
    settings = settings.updated(database={"url": database_url})
    recording_sid = "RE" + secrets.token_hex(16)
    params = {**RECORDING_CALLBACK, "RecordingSid": recording_sid}
    second = f"http://127.0.0.1:{SECOND_INGRESS_PORT}"
    url = INGRESS + "/twilio/recording-status"  # both instances sit behind this public URL
    async with (
        serving(ingress_app(settings), INGRESS_PORT),
        serving(ingress_app(settings), SECOND_INGRESS_PORT),
        httpx.AsyncClient(timeout=30) as client,
    ):
        answers = await asyncio.gather(
            *(
                client.post(
                    (INGRESS if i % 2 else second) + "/twilio/recording-status",
                    data=params,
                    headers=signed_headers(url, params, "token-1"),
                )
                for i in range(5)
            )
        )
        await published_once_there(settings, CALL_SID)  # the relay connected and sent it
    assert [a.status_code for a in answers] == [204] * 5
    [event] = await published(settings)
    assert event.recording_sid == recording_sid  # type: ignore[union-attr]


async def test_the_same_callback_after_an_ingress_restart_publishes_nothing_new(
    settings: Settings,
) -> None:
    async with serving(ingress_app(settings), INGRESS_PORT):
        first = await post("/twilio/recording-status", RECORDING_CALLBACK)
        voice = await post("/twilio/voice", VOICE)
        await published_once_there(settings, CALL_SID)  # the relay connected and sent it
    async with serving(ingress_app(settings), INGRESS_PORT):
        again = [await post("/twilio/recording-status", RECORDING_CALLBACK) for _ in range(4)]
        voice_again = await post("/twilio/voice", VOICE)
        genuine = await post("/twilio/recording-status", GENUINE_CALLBACK)
        await published_once_there(settings, GENUINE_CALL_SID)  # this relay connected too
    assert first.status_code == 204
    assert [a.status_code for a in again] == [204] * 4
    # A retried voice webhook still gets its TwiML: Twilio needs an answer to run the call.
    assert voice_again.status_code == 200
    assert voice_again.text == voice.text
    assert genuine.status_code == 204
    events = [e for e in await published(settings) if e.call_sid == CALL_SID]
    assert sorted(type(e).__name__ for e in events) == ["CallStarted", "RecordingCompleted"]


async def test_absent_and_failed_recordings_are_published_with_twilio_s_error_code(
    settings: Settings,
) -> None:
    absent = {**RECORDING_CALLBACK, "RecordingStatus": "absent", "RecordingUrl": ""}
    failed = {
        **RECORDING_CALLBACK,
        "RecordingSid": "RE" + "1" * 32,
        "RecordingStatus": "failed",
        "ErrorCode": "13617",
    }
    in_progress = {**RECORDING_CALLBACK, "RecordingStatus": "in-progress"}
    async with serving(ingress_app(settings), INGRESS_PORT):
        answers = [
            await post("/twilio/recording-status", params)
            for params in (in_progress, absent, failed)
        ]
        await published_once_there(settings, CALL_SID, count=3)  # the relay connected and sent it
    assert [a.status_code for a in answers] == [204] * 3
    [started] = await published(settings, [Topic.CALL_STATUS])
    assert isinstance(started, RecordingStarted)
    assert started.recording_sid == RECORDING_SID
    ended = await published(settings, [Topic.RECORDING_COMPLETED])
    outcomes = [(e.recording_status, e.error_code) for e in ended]  # type: ignore[union-attr]
    assert outcomes == [("absent", "0"), ("failed", "13617")]


async def test_call_status_callbacks_are_published_once_per_status(settings: Settings) -> None:
    statuses = ["ringing", "in-progress", "completed", "completed"]
    async with serving(ingress_app(settings), INGRESS_PORT):
        for i, status in enumerate(statuses):
            params = {**VOICE, "CallStatus": status, "SequenceNumber": str(i)}
            answer = await post("/twilio/call-status", params, token=f"t{i}")
            assert answer.status_code == 204
        await published_once_there(settings, CALL_SID, count=3)  # the relay connected and sent it
    events = await published(settings)
    assert all(isinstance(e, CallStatusChanged) for e in events)
    # Published as soon as stored, not in the order of the webhooks (decision 0912): Twilio's
    # SequenceNumber orders them.
    in_order = sorted(events, key=lambda e: e.sequence_number)  # type: ignore[union-attr]
    assert [e.call_status for e in in_order] == ["ringing", "in-progress", "completed"]  # type: ignore[union-attr]
