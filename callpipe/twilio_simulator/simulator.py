"""The simulated Twilio: the calls it places, the webhooks it delivers, the recordings it
keeps, and its log of the REST requests it answered."""

import asyncio
import logging
import math
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, Field
from twilio.request_validator import RequestValidator

from callpipe.twilio_simulator.samples import audio_facts, sample_path
from shared.settings import Settings

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"


class CallRequest(BaseModel):
    audio: str = "plumber_boston"
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    direction: Literal["inbound", "outbound-api"] = "inbound"
    # twiml: callpipe's voice webhook answers the call (<Start><Recording>); rest: the
    # business's own app answers it, and callpipe starts the recording over the REST API
    # when the call status callback tells it the call is in progress.
    recording_mode: Literal["twiml", "rest"] = "twiml"
    # busy / no-answer: the call is never answered, only its status callback arrives.
    call_status: Literal["completed", "busy", "no-answer"] = "completed"
    media_delay_seconds: float = 2.0
    # How long the call lasts once answered (compressed by default).
    call_seconds: float = Field(0.2, ge=0, le=3600)
    # The media answers this status the first `media_error_count` times it is fetched.
    media_error_status: int | None = None
    media_error_count: int = 0
    recording_status: Literal["completed", "absent", "failed"] = "completed"
    # The final recording callback never reaches callpipe (a lost webhook); the recording
    # still exists and is listed by the REST API.
    lose_recording_callback: bool = False
    # How often each webhook is delivered, always with the same idempotency token, as
    # Twilio does when it retries.
    deliveries: int = Field(1, ge=1, le=10)


class RecordingRequest(BaseModel):
    audio: str = "plumber_boston"
    media_delay_seconds: float = 0.0
    rate_limited_tries: int = 0
    retry_after_seconds: int = 1
    bytes_per_second: float | None = None
    redirect_to: str | None = None


@dataclass
class SimulatedRecording:
    path: Path
    ready_at: float
    rate_limited_tries: int = 0
    retry_after_seconds: int = 1
    bytes_per_second: float | None = None
    redirect_to: str | None = None
    deleted: bool = False
    error_status: int | None = None
    errors_left: int = 0
    call_sid: str = ""
    status: str = "completed"
    channels: int = 1
    duration_seconds: float = 0.0


@dataclass
class MediaRequest:
    recording_sid: str
    status: int
    started: float
    ended: float | None = None


@dataclass(frozen=True)
class RestRequest:
    """One REST API request: `kind` is recording-start, recording-list, media or
    recording-delete; `call_sid` is empty for a recording registered without a call."""

    kind: str
    call_sid: str
    status: int


@dataclass(frozen=True)
class RecordingStart:
    callback: str
    events: tuple[str, ...]
    dual: bool


@dataclass
class LiveCall:
    """A call in progress; `recording` is set once something started its recording."""

    account_sid: str
    recording: asyncio.Future[RecordingStart]


class TwilioSimulator:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http
        self._validator = RequestValidator(settings.twilio.auth_token.get_secret_value())
        self._base = f"http://127.0.0.1:{settings.local.simulator_port}"
        self._ingress = settings.ingress.public_base_url.rstrip("/")
        self.recordings: dict[str, SimulatedRecording] = {}
        self.live_calls: dict[str, LiveCall] = {}
        self.media_requests: list[MediaRequest] = []
        # The call SID of every REST request to start a recording, answered or refused.
        self.recording_start_requests: list[str] = []
        self.rest_requests: list[RestRequest] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def place_call(self, request: CallRequest) -> dict[str, str]:
        path = sample_path(request.audio)
        call_sid = "CA" + secrets.token_hex(16)
        recording_sid = "RE" + secrets.token_hex(16)
        task = asyncio.create_task(self._run_call(request, path, call_sid, recording_sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"call_sid": call_sid, "recording_sid": recording_sid}

    def add_recording(self, request: RecordingRequest) -> dict[str, str]:
        recording_sid = "RE" + secrets.token_hex(16)
        self.recordings[recording_sid] = SimulatedRecording(
            sample_path(request.audio),
            time.monotonic() + request.media_delay_seconds,
            request.rate_limited_tries,
            request.retry_after_seconds,
            request.bytes_per_second,
            request.redirect_to,
        )
        account = self._settings.twilio.account_sid
        url = f"{self._base}/{API_VERSION}/Accounts/{account}/Recordings/{recording_sid}"
        return {"recording_sid": recording_sid, "recording_url": url}

    def authenticates(self, username: str, password: str) -> bool:
        """Whether the REST API's basic auth names this account with its auth token."""
        account_named = secrets.compare_digest(username, self._settings.twilio.account_sid)
        token = self._settings.twilio.auth_token.get_secret_value()
        return account_named and secrets.compare_digest(password, token)

    def log_rest(self, kind: str, call_sid: str, status: int) -> None:
        self.rest_requests.append(RestRequest(kind, call_sid, status))

    def start_recording_over_rest(self, call_sid: str, start: RecordingStart) -> bool:
        """The REST API's recording start; False if the call is already being recorded
        (Twilio's error 21220). Raises KeyError for a call that is not live."""
        recording = self.live_calls[call_sid].recording
        if recording.done():
            return False
        recording.set_result(start)
        return True

    async def _post_signed(
        self, url: str, params: dict[str, str], deliveries: int = 1
    ) -> httpx.Response | None:
        """Delivers one webhook `deliveries` times (Twilio's retries carry the same
        idempotency token), each retried on 5xx or no answer; the first answer, None if
        Twilio gave up on it."""
        headers = {
            "X-Twilio-Signature": self._validator.compute_signature(url, params),
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        answers = [await self._deliver(url, params, headers) for _ in range(deliveries)]
        return answers[0]

    async def _deliver(
        self, url: str, params: dict[str, str], headers: dict[str, str]
    ) -> httpx.Response | None:
        for attempt in range(5):
            try:
                response = await self._http.post(url, data=params, headers=headers)
                if response.status_code < 500:
                    return response
                log.warning("webhook %s answered %s, retrying", url, response.status_code)
            except httpx.TransportError as error:
                log.warning("webhook %s failed (%s), retrying", url, error)
            await asyncio.sleep(0.5 * 2**attempt)
        # Twilio gives up too: the call goes on, the callback is lost.
        log.error("webhook %s: no answer after 5 tries, given up", url)
        return None

    async def _run_call(
        self, request: CallRequest, path: Path, call_sid: str, recording_sid: str
    ) -> None:
        account = self._settings.twilio.account_sid
        common = {
            "AccountSid": account,
            "CallSid": call_sid,
            "ApiVersion": API_VERSION,
            "From": request.from_number,
            "To": request.to_number,
            "Direction": request.direction,
        }
        status_url = self._ingress + "/twilio/call-status"
        sequence = iter(range(100))

        async def call_status(status: str, **extra: str) -> httpx.Response | None:
            params = {**common, "CallStatus": status, "SequenceNumber": str(next(sequence))}
            return await self._post_signed(status_url, {**params, **extra}, request.deliveries)

        if request.call_status != "completed":
            await call_status(request.call_status, CallDuration="0")
            return
        live = LiveCall(account, asyncio.get_running_loop().create_future())
        self.live_calls[call_sid] = live
        try:
            if request.recording_mode == "twiml":
                answered = await self._answer_with_twiml(request, common, live)
                if answered is None:
                    # Twilio got no TwiML: it plays its application error and hangs up; only
                    # the call status callback tells callpipe the call happened.
                    await asyncio.sleep(request.call_seconds)
                    await call_status("completed", CallDuration="0")
                    return
                if not answered:
                    return
            await call_status("in-progress")
            try:
                start = await asyncio.wait_for(asyncio.shield(live.recording), 10)
            except TimeoutError:
                log.error("call %s: nothing started a recording", call_sid)
                await call_status("completed", CallDuration="1")
                return
            await self._record(request, path, common, recording_sid, start, call_status)
        finally:
            del self.live_calls[call_sid]

    async def _answer_with_twiml(
        self, request: CallRequest, common: dict[str, str], live: LiveCall
    ) -> bool | None:
        """The voice webhook; its TwiML must start the recording before anything else.
        None when it could not be delivered at all."""
        answer = await self._post_signed(
            self._ingress + "/twilio/voice",
            {**common, "CallStatus": "ringing"},
            request.deliveries,
        )
        call_sid = common["CallSid"]
        if answer is None:
            return None
        if answer.status_code != 200:
            log.error("call %s: the voice webhook answered %s", call_sid, answer.status_code)
            return False
        first = next(iter(ET.fromstring(answer.text)), None)
        recording = ET.fromstring(answer.text).find("./Start/Recording")
        if first is None or first.tag != "Start" or recording is None:
            log.error("call %s: the voice webhook did not start a recording first", call_sid)
            return False
        live.recording.set_result(
            RecordingStart(
                callback=recording.get("recordingStatusCallback", ""),
                events=tuple(recording.get("recordingStatusCallbackEvent", "").split()),
                dual=recording.get("channels") == "dual",
            )
        )
        return True

    async def _record(
        self,
        request: CallRequest,
        path: Path,
        common: dict[str, str],
        recording_sid: str,
        start: RecordingStart,
        call_status: Callable[..., Awaitable[httpx.Response | None]],
    ) -> None:
        account = common["AccountSid"]
        channels, duration = audio_facts(path)
        if not start.dual:
            channels = 1
        media = f"{self._base}/{API_VERSION}/Accounts/{account}/Recordings/{recording_sid}"
        recording_params = {
            "AccountSid": account,
            "CallSid": common["CallSid"],
            "RecordingSid": recording_sid,
            "RecordingUrl": media,
            "RecordingChannels": str(channels),
            "RecordingSource": "StartCallRecordingTwiML"
            if request.recording_mode == "twiml"
            else "StartCallRecordingAPI",
            "RecordingTrack": "both",
        }

        async def recording_callback(status: str, **extra: str) -> None:
            if status in start.events or (status == "completed" and not start.events):
                params = {**recording_params, "RecordingStatus": status, **extra}
                await self._post_signed(start.callback, params, request.deliveries)

        # Listed by the REST API from the start, `in-progress` while the call lasts.
        recording = SimulatedRecording(
            path, ready_at=math.inf, call_sid=common["CallSid"], status="in-progress"
        )
        self.recordings[recording_sid] = recording
        await recording_callback("in-progress")
        await asyncio.sleep(request.call_seconds)  # the call itself
        await call_status("completed", CallDuration=str(round(duration)))
        recording.ready_at = time.monotonic() + request.media_delay_seconds
        recording.error_status = request.media_error_status
        recording.errors_left = request.media_error_count
        recording.status = request.recording_status
        recording.channels = channels
        recording.duration_seconds = duration
        if request.lose_recording_callback:
            log.info("call %s: losing the recording's final callback", common["CallSid"])
            return
        await recording_callback(
            request.recording_status,
            RecordingDuration=str(round(duration)),
            **({"ErrorCode": "13617"} if request.recording_status != "completed" else {}),
        )
