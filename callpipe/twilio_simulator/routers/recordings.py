"""Twilio's REST API for an account's recordings: list them, serve their media, delete them."""

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response, StreamingResponse

from callpipe.twilio_simulator.deps import Caller, Simulator
from callpipe.twilio_simulator.errors import not_found
from callpipe.twilio_simulator.simulator import API_VERSION, MediaRequest, SimulatedRecording

router = APIRouter(prefix=f"/{API_VERSION}/Accounts/{{account_sid}}")

CHUNK_BYTES = 64 * 1024


@router.get("/Recordings.json")
async def list_recordings(
    account_sid: str, caller: Caller, simulator: Simulator, CallSid: str = ""
) -> object:
    """Twilio's REST API: the account's recordings (not those deleted), filtered by call."""
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
        if recording.call_sid
        and not recording.deleted  # Twilio lists no deleted recording
        and (not CallSid or recording.call_sid == CallSid)
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


@router.get("/Recordings/{recording_file}")
async def recording_media(
    account_sid: str, recording_file: str, caller: Caller, simulator: Simulator
) -> object:
    recording_sid, _, extension = recording_file.partition(".")
    recording = simulator.recordings.get(recording_sid)
    media_request = MediaRequest(recording_sid, 404, time.monotonic())
    simulator.media_requests.append(media_request)
    try:
        return _media_answer(account_sid, caller, recording, extension, media_request)
    finally:
        simulator.log_rest("media", recording.call_sid if recording else "", media_request.status)


def _media_answer(
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


@router.delete("/Recordings/{recording_file}")
async def delete_recording(
    account_sid: str, recording_file: str, caller: Caller, simulator: Simulator
) -> Response:
    recording = simulator.recordings.get(recording_file.partition(".")[0])
    if account_sid != caller or recording is None or recording.deleted:
        simulator.log_rest("recording-delete", recording.call_sid if recording else "", 404)
        return not_found()
    recording.deleted = True
    simulator.log_rest("recording-delete", recording.call_sid, 204)
    return Response(status_code=204)
