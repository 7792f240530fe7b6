"""Ingress HTTP adapter: signed Twilio webhooks in, events on Kafka out."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from twilio.request_validator import RequestValidator

from services.ingress import core
from shared.kafka import EventProducer, ensure_topics
from shared.logs import call_context
from shared.settings import Settings

log = logging.getLogger(__name__)

VOICE_PATH = "/twilio/voice"
RECORDING_STATUS_PATH = "/twilio/recording-status"


def create_app(settings: Settings) -> FastAPI:
    producer = EventProducer(settings)
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    public_base = settings.public_base_url.rstrip("/")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings)
        await producer.start()
        try:
            yield
        finally:
            await producer.stop()

    async def signed_form(request: Request) -> dict[str, str]:
        """The POST parameters, once the X-Twilio-Signature over the public URL checks out."""
        form = {k: str(v) for k, v in (await request.form()).items()}
        url = public_base + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not validator.validate(url, form, signature):
            log.warning("refused a webhook with a bad signature for %s", url)
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
        return form

    SignedForm = Annotated[dict[str, str], Depends(signed_form)]
    app = FastAPI(title="callpipe ingress", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(VOICE_PATH)
    async def voice(form: SignedForm) -> Response:
        try:
            event = core.call_started(form, settings.default_business_id)
        except core.WebhookError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        with call_context(event.call_sid, str(event.event_id)):
            await producer.publish(event)
            log.info("call started from %s to %s", event.from_number, event.to_number)
        twiml = core.recording_twiml(public_base + RECORDING_STATUS_PATH, settings.forward_to)
        return Response(content=twiml, media_type="application/xml")

    @app.post(RECORDING_STATUS_PATH)
    async def recording_status(form: SignedForm) -> Response:
        try:
            event = core.recording_completed(form, settings.default_business_id)
        except core.WebhookError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        with call_context(event.call_sid, str(event.event_id)):
            await producer.publish(event)
            log.info("recording %s %s", event.recording_sid, event.recording_status)
        return Response(status_code=204)

    return app
