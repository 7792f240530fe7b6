"""LOCAL TWILIO SIMULATOR: for tests and the demo only, never used in production.

It plays the parts of Twilio that callpipe talks to, over real HTTP:
- places a call, inbound or outbound, in one of two recording modes: `twiml` POSTs the signed
  voice webhook to the ingress and reads its TwiML, which must start a recording
  (`<Start><Recording>`) before anything else; `rest` (the business's own app answered) POSTs
  the call status callback `in-progress` and waits for the ingress to start the recording
  over the REST API (`POST …/Calls/{CallSid}/Recordings.json`, which answers error 21220 to
  a second start on a call already recording);
- posts the call status callbacks (`in-progress`, `completed`, or `busy` / `no-answer` for a
  call never answered) and the recording status callbacks the recording subscribed to
  (`in-progress`, then `completed`, `absent` or `failed`), each with an
  `I-Twilio-Idempotency-Token`, retrying like Twilio when the ingress answers 5xx or not at
  all, and delivering each webhook several times on request (Twilio's retries);
- serves the recording media under Twilio's URL shape with basic auth, answering 404 for the
  first moments after `completed`, as Twilio does, and deletes a recording on DELETE;
- for tests of the downloader: registers recordings directly, answers 429 with Retry-After
  or another error status for a recording's first tries, streams media at a set rate, and
  reports every media request it got (with when each download started and ended), and the
  call of every REST request to start a recording;
- keeps a log of every REST API request (what it asked for, for which call, the status
  answered), so a run can count what callpipe asked of Twilio per call.
Signatures are made with twilio's own RequestValidator and the shared auth token.
"""

import asyncio
import dataclasses
import logging
import math
import secrets
import time
import wave
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field
from twilio.request_validator import RequestValidator

from shared.settings import Settings

log = logging.getLogger(__name__)

SAMPLES = Path(__file__).parent / "samples"
API_VERSION = "2010-04-01"


def sample_path(name_or_path: str) -> Path:
    """A bundled sample by name (`plumber_boston`) or any audio file by path."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate.resolve()
    bundled = SAMPLES / f"{name_or_path.removesuffix('.wav')}.wav"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in SAMPLES.glob("*.wav")))
    raise FileNotFoundError(f"no audio file or sample {name_or_path!r} (samples: {names})")


def audio_facts(path: Path) -> tuple[int, float]:
    """Channels and duration of a WAV file; other formats count as dual-channel, 0 s."""
    try:
        with wave.open(str(path)) as audio:
            return audio.getnchannels(), audio.getnframes() / audio.getframerate()
    except (wave.Error, EOFError):
        return 2, 0.0


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


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    """An error as Twilio's REST API answers it (the twilio client reads `code`)."""
    return JSONResponse(
        {"code": code, "message": message, "status": status, "more_info": ""},
        status_code=status,
    )


def create_app(settings: Settings) -> FastAPI:
    http = httpx.AsyncClient(timeout=15)
    simulator = TwilioSimulator(settings, http)
    basic = HTTPBasic(realm="Twilio API")
    app = FastAPI(title="LOCAL TWILIO SIMULATOR (tests and demo only)")

    def account(credentials: Annotated[HTTPBasicCredentials, Depends(basic)]) -> str:
        token = settings.twilio.auth_token.get_secret_value()
        if not (
            secrets.compare_digest(credentials.username, settings.twilio.account_sid)
            and secrets.compare_digest(credentials.password, token)
        ):
            raise HTTPException(status_code=401, detail="Authenticate")
        return credentials.username

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/simulator/calls", status_code=201)
    async def place_call(request: CallRequest) -> dict[str, str]:
        try:
            return simulator.place_call(request)
        except FileNotFoundError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error

    @app.post("/simulator/recordings", status_code=201)
    async def add_recording(request: RecordingRequest) -> dict[str, str]:
        try:
            return simulator.add_recording(request)
        except FileNotFoundError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error

    @app.get("/simulator/media-requests")
    async def media_requests() -> list[dict[str, object]]:
        return [dataclasses.asdict(r) for r in simulator.media_requests]

    @app.get("/simulator/rest-requests")
    async def rest_requests() -> list[dict[str, object]]:
        return [dataclasses.asdict(r) for r in simulator.rest_requests]

    @app.get("/simulator/recording-start-requests")
    async def recording_start_requests() -> list[str]:
        return simulator.recording_start_requests

    def not_found() -> JSONResponse:
        return twilio_error(404, 20404, "The requested resource was not found")

    @app.post(
        f"/{API_VERSION}/Accounts/{{account_sid}}/Calls/{{call_sid}}/Recordings.json",
        status_code=201,
    )
    async def start_recording(
        account_sid: str,
        call_sid: str,
        request: Request,
        caller: Annotated[str, Depends(account)],
    ) -> object:
        """Twilio's REST API: start recording a live call."""
        simulator.recording_start_requests.append(call_sid)
        form = await request.form()
        start = RecordingStart(
            callback=str(form.get("RecordingStatusCallback", "")),
            events=tuple(
                event
                for value in form.getlist("RecordingStatusCallbackEvent")
                for event in str(value).split()
            ),
            dual=form.get("RecordingChannels") == "dual",
        )
        live = simulator.live_calls.get(call_sid)
        if account_sid != caller or live is None:
            simulator.log_rest("recording-start", call_sid, 404)
            return twilio_error(404, 20404, "The requested resource was not found")
        if not simulator.start_recording_over_rest(call_sid, start):
            simulator.log_rest("recording-start", call_sid, 400)
            return twilio_error(400, 21220, "Call is already being recorded")
        simulator.log_rest("recording-start", call_sid, 201)
        recording_sid = "RE" + secrets.token_hex(16)
        return {
            "sid": recording_sid,
            "account_sid": account_sid,
            "call_sid": call_sid,
            "status": "in-progress",
            "channels": 2 if start.dual else 1,
            "source": "StartCallRecordingAPI",
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}"
            f"/Recordings/{recording_sid}.json",
        }

    @app.get(f"/{API_VERSION}/Accounts/{{account_sid}}/Recordings.json")
    async def list_recordings(
        account_sid: str, caller: Annotated[str, Depends(account)], CallSid: str = ""
    ) -> object:
        """Twilio's REST API: the account's recordings, filtered by call."""
        if account_sid != caller:
            simulator.log_rest("recording-list", CallSid, 404)
            return not_found()
        simulator.log_rest("recording-list", CallSid, 200)
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Recordings.json"
        found = [
            {
                "sid": sid,
                "account_sid": account_sid,
                "call_sid": recording.call_sid,
                "status": recording.status,
                "channels": recording.channels,
                "duration": str(round(recording.duration_seconds)),
                "error_code": None if recording.status == "completed" else 13617,
                "uri": f"/{API_VERSION}/Accounts/{account_sid}/Recordings/{sid}.json",
            }
            for sid, recording in simulator.recordings.items()
            if recording.call_sid and (not CallSid or recording.call_sid == CallSid)
        ]
        return {
            "recordings": found,
            "page": 0,
            "page_size": 50,
            "start": 0,
            "end": max(0, len(found) - 1),
            "uri": uri,
            "first_page_uri": uri,
            "next_page_uri": None,
            "previous_page_uri": None,
        }

    @app.get(f"/{API_VERSION}/Accounts/{{account_sid}}/Recordings/{{recording_file}}")
    async def recording_media(
        account_sid: str, recording_file: str, caller: Annotated[str, Depends(account)]
    ) -> object:
        recording_sid, _, extension = recording_file.partition(".")
        recording = simulator.recordings.get(recording_sid)
        media_request = MediaRequest(recording_sid, 404, time.monotonic())
        simulator.media_requests.append(media_request)
        try:
            return media_answer(account_sid, caller, recording, extension, media_request)
        finally:
            simulator.log_rest(
                "media", recording.call_sid if recording else "", media_request.status
            )

    def media_answer(
        account_sid: str,
        caller: str,
        recording: SimulatedRecording | None,
        extension: str,
        media_request: MediaRequest,
    ) -> Response:
        if (
            account_sid != caller
            or recording is None
            or recording.deleted
            or extension not in ("", "wav")
            or time.monotonic() < recording.ready_at  # Twilio: not available right after
        ):
            return not_found()
        if recording.error_status is not None and recording.errors_left > 0:
            recording.errors_left -= 1
            media_request.status = recording.error_status
            return JSONResponse({"status": recording.error_status}, recording.error_status)
        if recording.rate_limited_tries > 0:
            recording.rate_limited_tries -= 1
            media_request.status = 429
            return JSONResponse(
                {"code": 20429, "message": "Too Many Requests", "status": 429},
                status_code=429,
                headers={"Retry-After": str(recording.retry_after_seconds)},
            )
        if recording.redirect_to:
            media_request.status = 302
            return Response(status_code=302, headers={"Location": recording.redirect_to})
        media_request.status = 200
        return StreamingResponse(
            _stream(recording, media_request),
            media_type="audio/x-wav",
            headers={"Content-Length": str(recording.path.stat().st_size)},
        )

    @app.delete(f"/{API_VERSION}/Accounts/{{account_sid}}/Recordings/{{recording_file}}")
    async def delete_recording(
        account_sid: str, recording_file: str, caller: Annotated[str, Depends(account)]
    ) -> Response:
        recording = simulator.recordings.get(recording_file.partition(".")[0])
        if account_sid != caller or recording is None or recording.deleted:
            simulator.log_rest("recording-delete", recording.call_sid if recording else "", 404)
            return not_found()
        recording.deleted = True
        simulator.log_rest("recording-delete", recording.call_sid, 204)
        return Response(status_code=204)

    return app


CHUNK_BYTES = 64 * 1024


async def _stream(
    recording: SimulatedRecording, media_request: MediaRequest
) -> AsyncIterator[bytes]:
    try:
        with recording.path.open("rb") as audio:
            while chunk := await asyncio.to_thread(audio.read, CHUNK_BYTES):
                if recording.bytes_per_second:
                    await asyncio.sleep(len(chunk) / recording.bytes_per_second)
                yield chunk
    finally:
        media_request.ended = time.monotonic()
