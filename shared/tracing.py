"""OpenTelemetry traces: one call is one trace, from its first webhook to its summary.

A call's trace id is its correlation id (derived from the call SID), so the separate webhooks
Twilio sends for one call, none carrying a trace context, open root spans of the same trace;
each event carries its span's W3C `traceparent` in a Kafka header, and the worker that takes it
continues the trace from there. Off by default (`CALLPIPE_TRACES_EXPORTER=none`): then spans are
no-ops and the header still carries the call's trace id, so nothing needs a collector to run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared.events import Event
from shared.settings import ObservabilitySettings

_call_trace_id: ContextVar[int | None] = ContextVar("call_trace_id", default=None)
# A proxy until configure() installs a provider: a no-op tracer in a process that traces nothing.
_tracer = trace.get_tracer("callpipe")
# Whether configure() installed an exporter. Without one, call_span skips the span machinery
# (~8 % of the ingress's CPU per webhook, decision 0916) and keeps only the received context.
_exporting = False


class _CallTraceIds(RandomIdGenerator):
    """A root span opened for a call gets the call's trace id instead of a random one."""

    def generate_trace_id(self) -> int:
        return _call_trace_id.get() or super().generate_trace_id()


def configure(service: str, settings: ObservabilitySettings) -> None:
    """Installs the exporter the settings name; spans are batched off the request path."""
    global _exporting
    if settings.traces_exporter == "none":
        return
    _exporting = True
    exporter: SpanExporter
    if settings.traces_exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_traces_endpoint)
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"callpipe-{service}"}),
        id_generator=_CallTraceIds(),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _trace_id(correlation_id: str) -> int | None:
    try:
        return int(correlation_id, 16) if len(correlation_id) == 32 else None
    except ValueError:
        return None


@contextlib.contextmanager
def call_span(
    name: str, event: Event, kind: SpanKind, parent: Context | None = None
) -> Iterator[Span]:
    """A span of the event's call: a child of `parent` when it holds a span, otherwise a root
    span in the call's trace, linked to the span current here (e.g. FastAPI's span of the
    webhook's HTTP request, which is in a trace of its own). Untraced, only `parent`'s
    context becomes current: the logs and the outputs' headers still carry it."""
    if not _exporting:
        if parent is None:
            yield trace.INVALID_SPAN
            return
        with trace.use_span(trace.get_current_span(parent), end_on_exit=False) as span:
            yield span
        return
    current = trace.get_current_span().get_span_context()
    links = [trace.Link(current)] if parent is None and current.is_valid else []
    token = _call_trace_id.set(_trace_id(event.correlation_id))
    try:
        with _tracer.start_as_current_span(
            name,
            context=parent if parent is not None else Context(),
            kind=kind,
            links=links,
            attributes={
                "callpipe.call_sid": event.call_sid,
                "callpipe.business_id": event.business_id,
                "callpipe.event_id": str(event.event_id),
            },
        ) as span:
            yield span
    finally:
        _call_trace_id.reset(token)


def consumer_span(
    worker: str, topic: str, headers: Sequence[tuple[str, bytes]] | None, event: Event
) -> contextlib.AbstractContextManager[Span]:
    """The span of a worker handling a Kafka message, continuing the producer's trace."""
    carrier = {key: value.decode(errors="replace") for key, value in headers or ()}
    return call_span(f"{worker} {topic}", event, SpanKind.CONSUMER, propagate.extract(carrier))


def kafka_headers(correlation_id: str, fallback_traceparent: bytes) -> list[tuple[str, bytes]]:
    """The current span's context as Kafka headers (W3C trace context) when that span is in
    the event's call trace; otherwise the fallback `traceparent`. So an event published while
    serving something else (the player's retry API, in its HTTP request's trace) still
    continues its call's trace."""
    current = trace.get_current_span().get_span_context()
    call_trace = _trace_id(correlation_id)
    if not current.is_valid or (call_trace is not None and current.trace_id != call_trace):
        return [("traceparent", fallback_traceparent)]
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


def record_failure(reason: str) -> None:
    trace.get_current_span().set_status(Status(StatusCode.ERROR, reason))


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None
