"""Twilio's REST API for a live call: start recording it."""

import secrets

from fastapi import APIRouter, Request

from callpipe.twilio_simulator.deps import Caller, Simulator
from callpipe.twilio_simulator.errors import not_found, twilio_error
from callpipe.twilio_simulator.simulator import API_VERSION, RecordingStart

router = APIRouter(prefix=f"/{API_VERSION}/Accounts/{{account_sid}}/Calls/{{call_sid}}")


@router.post("/Recordings.json", status_code=201)
async def start_recording(
    account_sid: str, call_sid: str, request: Request, caller: Caller, simulator: Simulator
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
        return not_found()
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
