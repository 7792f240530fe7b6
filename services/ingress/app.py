"""Ingress HTTP adapter: signed Twilio webhooks in, each occurrence once on Kafka out.

A webhook is answered 2xx once its event is durably stored in SQL (a transactional outbox,
decision 0912), or known to be stored already; if the database fails, 503 and Twilio retries.
The relay (services/ingress/relay.py) then publishes it to Kafka (acks=all), also while or
after the broker was away: the ingress starts and answers webhooks without the broker.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode

from aiohttp import ClientError
from aiokafka.errors import KafkaError
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind
from sqlalchemy.exc import SQLAlchemyError
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from services.ingress import core
from services.ingress.deliveries import Deliveries
from services.ingress.relay import OutboxRelay
from services.ingress.twilio_rest import RecordingStarter
from shared import tracing
from shared.body_limit import BodyLimit
from shared.db import create_engine, database_unreachable, database_url_for_logs
from shared.events import Event
from shared.kafka.connection import probe_broker
from shared.kafka.producer import EventProducer
from shared.logs import call_context, masked
from shared.retry import wait_until_reached
from shared.settings import Settings
from shared.shutdown import Shutdown

log = logging.getLogger(__name__)

VOICE_PATH = "/twilio/voice"
CALL_STATUS_PATH = "/twilio/call-status"
RECORDING_STATUS_PATH = "/twilio/recording-status"
EventT = TypeVar("EventT", bound=Event)
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 1000  # Starlette's limit too


class NotStored(Exception):
    """The webhook's work could not be done now (its event is not durably stored, or the
    recording not started): answer 503 so Twilio retries."""


def create_app(settings: Settings) -> FastAPI:
    producer = EventProducer(settings, linger_ms=settings.ingress_outbox_linger_ms)
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    public_base = settings.public_base_url.rstrip("/")
    owners = settings.business_by_number
    engine = create_engine(settings.ingress_database_url)
    deliveries = Deliveries(engine, lease=timedelta(seconds=settings.ingress_outbox_lease_seconds))
    relay = OutboxRelay(deliveries, producer, settings)
    database_ready = asyncio.Event()

    async def prepare_database() -> None:
        await deliveries.create_table()
        database_ready.set()

    async def relay_once_the_database_is_there() -> None:
        # Stopped by cancelling this task: the wait needs no stop event of its own.
        if not database_ready.is_set():
            await wait_until_reached(
                f"database {database_url_for_logs(settings.ingress_database_url)}",
                prepare_database,
                database_unreachable,
                asyncio.Event(),
                settings.retry_base_seconds,
                settings.retry_max_seconds,
            )
        relay.start()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A configuration error fails the start. A database not reachable yet is waited for
        # while webhooks are answered 503 (Twilio retries them); a broker not reachable yet,
        # while webhooks are stored.
        try:
            await prepare_database()
        except Exception as error:
            if not database_unreachable(error):
                raise
        with contextlib.suppress(KafkaError, OSError):
            await probe_broker(settings)
        starting = asyncio.create_task(relay_once_the_database_is_there())
        # Built here: its HTTP session belongs to the running event loop.
        app.state.recording_starter = RecordingStarter(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            settings.twilio_api_base_url,
        )
        try:
            yield
        finally:
            # uvicorn handles the signals: the stop is bounded here, without the last resort.
            shutdown = Shutdown("ingress", settings)
            shutdown.begin(last_resort=False)
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await shutdown.within_bound(
                "closing the Twilio client", app.state.recording_starter.close()
            )
            await shutdown.within_bound("handing back the events being sent", relay.stop())
            await shutdown.within_bound("closing the producer", producer.stop())
            deliveries.close()
            await shutdown.within_bound("closing the database", engine.dispose())
            shutdown.finished()

    async def signed_form(request: Request) -> dict[str, str]:
        """The POST parameters, once the X-Twilio-Signature over the public URL checks out.
        The URL is the configured public one, never built from Host or X-Forwarded-*."""
        content_type = request.headers.get("Content-Type", "").partition(";")[0].strip()
        if content_type.lower() != FORM_CONTENT_TYPE:
            raise HTTPException(status_code=400, detail=f"webhooks are {FORM_CONTENT_TYPE}")
        # Each field decoded as Starlette's form parser decodes it (bytes as latin-1, then
        # %-escapes as UTF-8), at a fraction of its cost per webhook (decision 0907).
        try:
            form = dict(
                parse_qsl(
                    (await request.body()).decode("latin-1"),
                    keep_blank_values=True,
                    max_num_fields=MAX_FORM_FIELDS,
                )
            )
        except ValueError as error:
            raise HTTPException(status_code=400, detail="too many form fields") from error
        url = public_base + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not validator.validate(url, form, signature):
            log.warning("refused a webhook with a bad signature for %s", url)
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
        return form

    app = FastAPI(title="callpipe ingress", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=settings.ingress_max_body_bytes)

    @app.exception_handler(NotStored)
    async def not_stored(_request: Request, error: NotStored) -> JSONResponse:
        return JSONResponse(
            {"detail": f"not stored, retry: {error}"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    def recording_callback_url(business_id: str, form: Mapping[str, str]) -> str:
        # The business and the call's direction ride in the signed URL: recording callbacks
        # carry neither phone numbers nor the direction.
        query = {"business": business_id, "direction": form.get("Direction", "inbound")}
        return f"{public_base}{RECORDING_STATUS_PATH}?{urlencode(query)}"

    async def deliver(events: Sequence[Event], request: Request) -> None:
        if not database_ready.is_set():
            raise NotStored("waiting for the database")
        token = core.usable_idempotency_token(request.headers.get(IDEMPOTENCY_HEADER))
        for event in events:
            with (
                call_context(event.call_sid, str(event.event_id)),
                tracing.call_span(f"ingress {request.url.path}", event, SpanKind.SERVER),
            ):
                try:
                    stored = await relay.store(event, token)
                except (SQLAlchemyError, OSError) as error:
                    log.error("could not store %s: %r", type(event).__name__, error)
                    raise NotStored(type(error).__name__) from error
                log.info("%s %s", type(event).__name__, "stored" if stored else "already stored")

    async def start_recording_once(
        starter: RecordingStarter, call_sid: str, callback_url: str
    ) -> None:
        """Starts the call's recording unless a delivery of its `in-progress` callback did:
        marked only once Twilio started it, so a failed start is tried again at the retry."""
        try:
            if await deliveries.recording_started(call_sid):
                log.info("recording started before: not started again")
                return
            await starter.start(call_sid, callback_url)
            await deliveries.mark_recording_started(call_sid)
        except (TwilioRestException, ClientError, TimeoutError) as error:
            log.error("could not start the recording over the REST API: %s", error)
            raise NotStored("recording not started") from error
        except (SQLAlchemyError, OSError) as error:
            log.error("could not look up or mark the recording's start: %r", error)
            raise NotStored(type(error).__name__) from error

    def parse(
        build: Callable[[dict[str, str], str], EventT], form: dict[str, str], business_id: str
    ) -> EventT:
        try:
            return build(form, business_id)
        except core.WebhookError as error:
            log.warning("refused a malformed webhook: %s", error)
            raise HTTPException(status_code=400, detail=str(error)) from error

    def answered_for_nobody(form: dict[str, str]) -> None:
        log.warning(
            "webhook to %s, a number no business owns: answered, nothing published",
            masked(form.get("To", "?")),
        )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        # Up while the broker is away: webhooks are still stored (the relay publishes later).
        if not database_ready.is_set():
            return JSONResponse(
                {"status": "connecting", "database": "connecting", "broker": relay.broker_state},
                status_code=503,
            )
        return JSONResponse({"status": "ok", "broker": relay.broker_state})

    @app.post(VOICE_PATH)
    async def voice(request: Request) -> Response:
        form = await signed_form(request)
        business_id = core.business_for(form, owners, settings.default_business_id)
        if business_id is None:
            answered_for_nobody(form)
            return Response(content=core.unknown_number_twiml(), media_type="application/xml")
        event = parse(core.call_started, form, business_id)
        await deliver([event], request)
        twiml = core.recording_twiml(recording_callback_url(business_id, form), settings.forward_to)
        return Response(content=twiml, media_type="application/xml")

    @app.post(CALL_STATUS_PATH)
    async def call_status(request: Request) -> Response:
        form = await signed_form(request)
        business_id = core.business_for(form, owners, settings.default_business_id)
        if business_id is None:
            answered_for_nobody(form)
            return Response(status_code=204)
        event = parse(core.call_status_changed, form, business_id)
        if not core.starts_recording_over_rest(event, settings.recording_mode):
            await deliver([event], request)
            return Response(status_code=204)
        await deliver([core.call_started_from_status(event), event], request)
        with call_context(event.call_sid, str(event.event_id)):
            await start_recording_once(
                request.app.state.recording_starter,
                event.call_sid,
                recording_callback_url(business_id, form),
            )
        return Response(status_code=204)

    @app.post(RECORDING_STATUS_PATH)
    async def recording_status(request: Request) -> Response:
        form = await signed_form(request)
        business_id = request.query_params.get("business") or core.business_for(
            form, owners, settings.default_business_id
        )
        if business_id is None:
            answered_for_nobody(form)
            return Response(status_code=204)
        direction = request.query_params.get("direction")
        event = parse(partial(core.recording_event, direction=direction), form, business_id)
        await deliver([event], request)
        return Response(status_code=204)

    return app
