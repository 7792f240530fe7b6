"""Twilio's webhooks: the call's start (voice), its status changes and its recording's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request, Response

from services.ingress import core
from services.ingress.http.delivery import deliver, start_recording_once
from services.ingress.http.deps import SignedForm, Starter, State
from shared import twilio_callbacks
from shared.events import Event
from shared.logs import call_context, masked

log = logging.getLogger(__name__)

VOICE_PATH = "/twilio/voice"
CALL_STATUS_PATH = "/twilio/call-status"
RECORDING_STATUS_PATH = "/twilio/recording-status"
EventT = TypeVar("EventT", bound=Event)

router = APIRouter()


@router.post(VOICE_PATH)
async def voice(request: Request, form: SignedForm, state: State) -> Response:
    settings = state.settings
    business_id = core.business_for(form, state.owners, settings.business.default_id)
    if business_id is None:
        answered_for_nobody(form)
        return Response(content=core.unknown_number_twiml(), media_type="application/xml")
    event = parse(twilio_callbacks.call_started, form, business_id)
    await deliver([event], request, state)
    callback_url = recording_callback_url(state.public_base, business_id, form)
    twiml = core.recording_twiml(callback_url, settings.ingress.forward_to)
    return Response(content=twiml, media_type="application/xml")


@router.post(CALL_STATUS_PATH)
async def call_status(
    request: Request, form: SignedForm, state: State, starter: Starter
) -> Response:
    settings = state.settings
    business_id = core.business_for(form, state.owners, settings.business.default_id)
    if business_id is None:
        answered_for_nobody(form)
        return Response(status_code=204)
    event = parse(twilio_callbacks.call_status_changed, form, business_id)
    if not core.starts_recording_over_rest(event, settings.ingress.recording_mode):
        await deliver([event], request, state)
        return Response(status_code=204)
    await deliver([twilio_callbacks.call_started_from_status(event), event], request, state)
    with call_context(event.call_sid, str(event.event_id)):
        await start_recording_once(
            starter,
            state.resources.deliveries,
            event.call_sid,
            recording_callback_url(state.public_base, business_id, form),
        )
    return Response(status_code=204)


@router.post(RECORDING_STATUS_PATH)
async def recording_status(request: Request, form: SignedForm, state: State) -> Response:
    business_id = request.query_params.get("business") or core.business_for(
        form, state.owners, state.settings.business.default_id
    )
    if business_id is None:
        answered_for_nobody(form)
        return Response(status_code=204)
    direction = request.query_params.get("direction")
    event = parse(partial(twilio_callbacks.recording_event, direction=direction), form, business_id)
    await deliver([event], request, state)
    return Response(status_code=204)


def recording_callback_url(public_base: str, business_id: str, form: Mapping[str, str]) -> str:
    # The business and the call's direction ride in the signed URL: recording callbacks
    # carry neither phone numbers nor the direction.
    query = {"business": business_id, "direction": form.get("Direction", "inbound")}
    return f"{public_base}{RECORDING_STATUS_PATH}?{urlencode(query)}"


def parse(
    build: Callable[[dict[str, str], str], EventT], form: dict[str, str], business_id: str
) -> EventT:
    try:
        return build(form, business_id)
    except twilio_callbacks.WebhookError as error:
        log.warning("refused a malformed webhook: %s", error)
        raise HTTPException(status_code=400, detail=str(error)) from error


def answered_for_nobody(form: dict[str, str]) -> None:
    log.warning(
        "webhook to %s, a number no business owns: answered, nothing published",
        masked(form.get("To", "?")),
    )
