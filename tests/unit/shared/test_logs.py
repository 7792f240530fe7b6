"""Log lines as JSON: the call SID, event id and trace id on every line, from context."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shared import logs, tracing
from shared.events import call_correlation_id
from tests.support import events as factories

# Each test configures logging as a service would.
pytestmark = pytest.mark.usefixtures("restored_logging")


def test_json_lines_carry_the_call_and_event_of_their_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("downloader", "json")
    log = logging.getLogger("callpipe.test")
    log.info("outside any call")
    with logs.call_context("CA123", "4f1c"):
        log.warning("inside %s", "a call", extra={"attempt": 2})
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["call_sid"] == "-"
    assert first["message"] == "outside any call"
    assert second["call_sid"] == "CA123"
    assert second["event_id"] == "4f1c"
    assert second["message"] == "inside a call"
    assert second["level"] == "WARNING"
    assert second["service"] == "downloader"
    assert second["logger"] == "callpipe.test"
    assert second["attempt"] == 2
    assert second["time"].endswith("+00:00")


def test_untraced_the_call_context_still_travels_and_is_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without an exporter spans are no-ops, yet a worker passes the context it received on to
    its outputs, and logs the call's trace id."""
    logs.configure("player", "json")
    event = factories.call_started("CA9", "demo")
    received = f"00-{event.correlation_id}-00f067aa0ba902b7-01".encode()
    with tracing.consumer_span("player", "call.started", [("traceparent", received)], event):
        logging.getLogger("callpipe.test").info("applied")
        assert tracing.kafka_headers(event.correlation_id, b"own") == [("traceparent", received)]
    assert tracing.kafka_headers(event.correlation_id, b"own") == [("traceparent", b"own")]
    line = json.loads(capsys.readouterr().err)
    assert line["trace_id"] == event.correlation_id


def test_text_lines_stay_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("ingress")
    with logs.call_context("CA5", "e1"):
        logging.getLogger("callpipe.test").info("published")
    line = capsys.readouterr().err
    assert " INFO ingress call=CA5 event=e1 callpipe.test: published" in line


def test_an_event_published_inside_another_trace_keeps_its_calls_trace() -> None:
    """The player's retry API publishes inside its HTTP request's span (a trace of its own):
    the event's header still names the call's trace."""
    request_span = NonRecordingSpan(
        SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0x00F067AA0BA902B7,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )
    call_trace = call_correlation_id("CA7")
    with trace.use_span(request_span):
        assert tracing.kafka_headers(call_trace, b"own") == [("traceparent", b"own")]
        headers = dict(tracing.kafka_headers("0af7651916cd43dd8448eb211c80319c", b"own"))
    assert headers["traceparent"] == b"00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"


def test_a_client_library_repeating_itself_is_heard_once_a_minute(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """While the broker is away aiokafka logs every failed try; the log keeps the first,
    then one a minute saying how many it held back. callpipe's own lines all pass."""
    logs.configure("player")
    [handler] = logging.getLogger().handlers
    [repeats] = [f for f in handler.filters if isinstance(f, logs._RepeatFilter)]
    now = [1000.0]
    repeats._clock = lambda: now[0]
    client = logging.getLogger("aiokafka.conn")
    own = logging.getLogger("shared.kafka")
    for second in range(130):
        now[0] = 1000.0 + second
        client.error("Unable connect to node with id %s: %s", 111, "refused")
        own.warning("broker away, try %d", second)
    client.error("Unable to update metadata from %s", [111])
    lines = capsys.readouterr().err.splitlines()
    from_client = [line.split("aiokafka.conn: ")[1] for line in lines if "aiokafka" in line]
    assert from_client == [
        "Unable connect to node with id 111: refused",
        "Unable connect to node with id 111: refused (and 59 more like it since)",
        "Unable connect to node with id 111: refused (and 59 more like it since)",
        "Unable to update metadata from [111]",
    ]
    assert sum("shared.kafka" in line for line in lines) == 130
