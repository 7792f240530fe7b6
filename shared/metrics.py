"""callpipe's Prometheus metrics, every series in one place: docs/operations.md names the same.

Each process keeps its own registry (prometheus_client's default) and serves it on /metrics:
the ingress and the player on their HTTP port, the stage workers on their health port.
Call sites stay one line; nothing here connects anywhere.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime

from aiohttp import web
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.events import utc_now

# Seconds, from a fast handler to a long recording's transcription.
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

EVENTS_CONSUMED = Counter(
    "callpipe_events_consumed", "Events a worker took from Kafka and handled.", ["worker", "topic"]
)
EVENTS_PUBLISHED = Counter(
    "callpipe_events_published", "Events published and acknowledged by Kafka.", ["topic"]
)
STAGE_RETRIES = Counter(
    "callpipe_stage_retries", "Tries of a handler that failed and will be retried.", ["worker"]
)
STAGE_FAILURES = Counter(
    "callpipe_stage_failures",
    "Events a worker gave up on (terminal error or retries exhausted).",
    ["worker"],
)
OFFSET_HOLES = Counter(
    "callpipe_offset_holes",
    "Holes in a partition's offsets a worker met: waited out until filled, or skipped.",
    ["worker", "outcome"],
)
DEAD_LETTERS = Counter(
    "callpipe_dead_letters", "Messages put on the worker's dead-letter topic.", ["worker"]
)
DUPLICATES_ABSORBED = Counter(
    "callpipe_duplicates_absorbed",
    "Second copies of an event a worker had handled to the end, absorbed without handling.",
    ["worker"],
)
HANDLE_SECONDS = Histogram(
    "callpipe_handle_seconds",
    "Time a worker spent on one event, retries and publishing its outputs included.",
    ["worker", "topic"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_LATENCY = Histogram(
    "callpipe_stage_latency_seconds",
    "From the event's occurred_at to the worker having handled it (queueing included).",
    ["worker", "topic"],
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "callpipe_consumer_lag",
    "Messages on the partition the worker has not fetched yet (high watermark - position).",
    ["worker", "topic", "partition"],
)
GC_FROZEN_OBJECTS = Gauge(
    "callpipe_gc_frozen_objects",
    "Objects made at start-up that the garbage collector no longer walks (gc.freeze).",
)
IN_FLIGHT = Gauge("callpipe_in_flight", "Messages a worker is handling right now.", ["worker"])
DOWNLOAD_BYTES = Counter(
    "callpipe_download_bytes", "Recording bytes archived from the provider into S3."
)
AUDIO_SECONDS = Counter(
    "callpipe_transcribed_audio_seconds", "Seconds of audio transcribed.", ["backend"]
)
REAL_TIME_FACTOR = Histogram(
    "callpipe_transcription_real_time_factor",
    "Transcription time divided by the audio's duration (below 1: faster than real time).",
    ["backend"],
    buckets=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5),
)
HTTP_REQUESTS = Counter(
    "callpipe_http_requests",
    "HTTP requests answered, by route template (Twilio's webhooks are the /twilio/ routes).",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "callpipe_http_request_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)


def exposition() -> tuple[bytes, str]:
    """This process's metrics in Prometheus's text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


async def aiohttp_page(_request: web.Request) -> web.Response:
    """GET /metrics on an aiohttp server (the workers' health server, the analytics consumer)."""
    body, content_type = exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


@contextlib.contextmanager
def handling(worker: str, topic: str, occurred_at: datetime) -> Iterator[None]:
    """Counts one consumed event and times its handling."""
    EVENTS_CONSUMED.labels(worker, topic).inc()
    started = time.perf_counter()
    try:
        yield
    finally:
        _observe_handled(worker, topic, occurred_at, time.perf_counter() - started)


def handled(worker: str, topic: str, occurred_at: datetime, seconds: float) -> None:
    """Counts one consumed event handled in `seconds` (with others, in one batch)."""
    EVENTS_CONSUMED.labels(worker, topic).inc()
    _observe_handled(worker, topic, occurred_at, seconds)


def _observe_handled(worker: str, topic: str, occurred_at: datetime, seconds: float) -> None:
    HANDLE_SECONDS.labels(worker, topic).observe(seconds)
    STAGE_LATENCY.labels(worker, topic).observe((utc_now() - occurred_at).total_seconds())


async def observe_consumer(worker: str, consumer: AIOKafkaConsumer, in_flight: int) -> None:
    IN_FLIGHT.labels(worker).set(in_flight)
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:  # nothing fetched from this partition yet
            continue
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile
            lag = max(0, highwater - await consumer.position(tp))
            CONSUMER_LAG.labels(worker, tp.topic, str(tp.partition)).set(lag)


def observe_transcription(backend: str, audio_seconds: float, elapsed_seconds: float) -> None:
    AUDIO_SECONDS.labels(backend).inc(audio_seconds)
    if audio_seconds > 0:
        REAL_TIME_FACTOR.labels(backend).observe(elapsed_seconds / audio_seconds)


class ServeAndCount:
    """ASGI middleware of the ingress and the player: serves /metrics, counts every other
    request by its route template (never by its path: call SIDs would make a series each).
    Plain ASGI: Starlette's `BaseHTTPMiddleware` runs each request in a task group with memory
    streams, ~20 % of the ingress's CPU per webhook (0907) and visible in the call list's
    profile (0903)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope["path"] == "/metrics":
            body, content_type = exposition()
            await Response(body, media_type=content_type)(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app answers: an unhandled error is answered further out

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, counting_send)
        finally:
            # The router has put the matched route in the scope by now.
            route = str(getattr(scope.get("route"), "path", "unmatched"))
            HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
            HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)
