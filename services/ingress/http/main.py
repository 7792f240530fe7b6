"""The ingress's application, assembled: middleware, routers, lifespan."""

from __future__ import annotations

from fastapi import FastAPI
from twilio.request_validator import RequestValidator

from services.ingress.config import IngressConfig
from services.ingress.http.delivery import NotStored, not_stored
from services.ingress.http.lifespan import lifespan
from services.ingress.http.routers import health, webhooks
from services.ingress.http.state import IngressResources, IngressState
from shared.body_limit import BodyLimit


def create_app(settings: IngressConfig, resources: IngressResources) -> FastAPI:
    state = IngressState(
        settings,
        resources,
        RequestValidator(settings.twilio.auth_token.get_secret_value()),
        public_base=settings.ingress.public_base_url.rstrip("/"),
        owners=settings.business.by_number,
    )
    app = FastAPI(title="callpipe ingress", lifespan=lifespan(state))
    app.state.ingress = state
    app.add_middleware(BodyLimit, max_bytes=settings.ingress.max_body_bytes)
    app.add_exception_handler(NotStored, not_stored)
    app.include_router(health.router)
    app.include_router(webhooks.router)
    return app
