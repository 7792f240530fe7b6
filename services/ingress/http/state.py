"""What the ingress's HTTP application runs on: the resources the wiring (callpipe/bootstrap.py)
builds and hands in, and what the application keeps while it serves (`app.state.ingress`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine
from twilio.request_validator import RequestValidator

from services.ingress.config import IngressConfig
from services.ingress.deliveries import Deliveries
from services.ingress.relay import OutboxRelay
from shared.kafka.producer import EventProducer
from shared.twilio_rest import RecordingStarter


@dataclass(frozen=True)
class IngressResources:
    """Built, not started: the application's lifespan starts and closes them."""

    engine: AsyncEngine
    deliveries: Deliveries
    producer: EventProducer
    relay: OutboxRelay
    # Called by the lifespan: the Twilio client's HTTP session belongs to the running loop.
    open_recording_starter: Callable[[], RecordingStarter]


@dataclass
class IngressState:
    settings: IngressConfig
    resources: IngressResources
    validator: RequestValidator
    # The configured public URL: Twilio signs the URL it was given, never Host or X-Forwarded-*.
    public_base: str
    owners: Mapping[str, str]
    # Set once the outbox table exists: until then webhooks are answered 503.
    database_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by the lifespan, for as long as the application runs.
    recording_starter: RecordingStarter | None = None
