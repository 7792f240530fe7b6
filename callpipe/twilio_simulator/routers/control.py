"""The simulator's own API, for tests and the demo: place a call, register a recording, and
read back what callpipe asked of Twilio."""

import dataclasses

from fastapi import APIRouter, HTTPException

from callpipe.twilio_simulator.deps import Simulator
from callpipe.twilio_simulator.simulator import CallRequest, RecordingRequest

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/simulator/calls", status_code=201)
async def place_call(request: CallRequest, simulator: Simulator) -> dict[str, str]:
    try:
        return simulator.place_call(request)
    except FileNotFoundError as error:
        raise HTTPException(status_code=400, detail=str(error)) from error


@router.post("/simulator/recordings", status_code=201)
async def add_recording(request: RecordingRequest, simulator: Simulator) -> dict[str, str]:
    try:
        return simulator.add_recording(request)
    except FileNotFoundError as error:
        raise HTTPException(status_code=400, detail=str(error)) from error


@router.get("/simulator/media-requests")
async def media_requests(simulator: Simulator) -> list[dict[str, object]]:
    return [dataclasses.asdict(r) for r in simulator.media_requests]


@router.get("/simulator/rest-requests")
async def rest_requests(simulator: Simulator) -> list[dict[str, object]]:
    return [dataclasses.asdict(r) for r in simulator.rest_requests]


@router.get("/simulator/recording-start-requests")
async def recording_start_requests(simulator: Simulator) -> list[str]:
    return simulator.recording_start_requests
