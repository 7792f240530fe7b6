"""Storing a webhook's events in the outbox, and starting a call's recording once: the work a
webhook is answered 2xx for, or 503 (NotStored) so that Twilio retries it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import ClientError
from fastapi import Request
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind
from sqlalchemy.exc import SQLAlchemyError
from twilio.base.exceptions import TwilioRestException

from services.ingress import core
from services.ingress.deliveries import Deliveries
from services.ingress.http.state import IngressState
from shared import tracing
from shared.events import Event
from shared.logs import call_context
from shared.twilio_rest import RecordingStarter

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"


class NotStored(Exception):
    """The webhook's work could not be done now (its event is not durably stored, or the
    recording not started): answer 503 so Twilio retries."""


async def not_stored(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": f"not stored, retry: {error}"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def deliver(events: Sequence[Event], request: Request, state: IngressState) -> None:
    if not state.database_ready.is_set():
        raise NotStored("waiting for the database")
    token = core.usable_idempotency_token(request.headers.get(IDEMPOTENCY_HEADER))
    for event in events:
        with (
            call_context(event.call_sid, str(event.event_id)),
            tracing.call_span(f"ingress {request.url.path}", event, SpanKind.SERVER),
        ):
            try:
                stored = await state.resources.relay.store(event, token)
            except (SQLAlchemyError, OSError) as error:
                log.error("could not store %s: %r", type(event).__name__, error)
                raise NotStored(type(error).__name__) from error
            log.info("%s %s", type(event).__name__, "stored" if stored else "already stored")


async def start_recording_once(
    starter: RecordingStarter, deliveries: Deliveries, call_sid: str, callback_url: str
) -> None:
    """Starts the call's recording unless a delivery of its `in-progress` callback did:
    marked only once Twilio started it, so a failed start is tried again at the retry."""
    try:
        if await deliveries.recording_started(call_sid):
            log.info("recording started before: not started again")
            return
        await starter.start(call_sid, core.recording_start_params(callback_url))
        await deliveries.mark_recording_started(call_sid)
    except (TwilioRestException, ClientError, TimeoutError) as error:
        log.error("could not start the recording over the REST API: %s", error)
        raise NotStored("recording not started") from error
    except (SQLAlchemyError, OSError) as error:
        log.error("could not look up or mark the recording's start: %r", error)
        raise NotStored(type(error).__name__) from error
