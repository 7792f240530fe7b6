"""Observability through the running stack: one call is one trace across the five services,
the metrics endpoints show the call's work, every log line is JSON with the call SID and
event id, and the example analytics consumer's figures follow the calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callpipe.twilio_simulator.samples import sample_path
from shared.events import call_correlation_id
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.stack import PORTS, RunningStack

pytestmark = pytest.mark.stack

SERVICES = ["ingress", "downloader", "transcriber", "extractor", "player"]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_url(stack: RunningStack, service: str) -> str:
    base = {
        "ingress": stack.ingress,
        "player": stack.player,
        "downloader": f"http://127.0.0.1:{PORTS['CALLPIPE_DOWNLOADER_HEALTH_PORT']}",
        "transcriber": f"http://127.0.0.1:{PORTS['CALLPIPE_TRANSCRIBER_HEALTH_PORT']}",
        "extractor": f"http://127.0.0.1:{PORTS['CALLPIPE_EXTRACTOR_HEALTH_PORT']}",
    }[service]
    return f"{base}/metrics"


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the series `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.3)


ANALYTICS_PORT = 18110 + int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))


@dataclass(frozen=True)
class Analytics:
    url: str
    before: dict[str, float]  # the demo business's totals before this module's calls


@pytest.fixture(scope="module")
def analytics(stack: RunningStack) -> Iterator[Analytics]:
    """`callpipe analytics` as its own process, reading the stack's topics, caught up with
    every call placed before (they are all finished): its figures hold every call the player
    lists, and stand still."""
    env = {**stack.env, "CALLPIPE_ANALYTICS_PORT": str(ANALYTICS_PORT)}
    log = (stack.data_dir / "analytics.out").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "callpipe", "analytics"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{ANALYTICS_PORT}/figures"

    def answers() -> bool:
        assert process.poll() is None, (stack.data_dir / "analytics.out").read_text()
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, 60, "callpipe analytics answering")
    listed = stack.api.get("/api/calls", params={"limit": 1}).json()["total"]
    readings = [business_totals(url, "demo")]

    def settled() -> bool:
        time.sleep(1)
        readings.append(business_totals(url, "demo"))
        return readings[-2] == readings[-1] and readings[-1]["calls"] >= listed

    wait_until(settled, 60, "analytics caught up")
    yield Analytics(url, readings[-1])
    process.terminate()
    assert process.wait(timeout=30) == 0


def business_totals(url: str, business: str) -> dict[str, float]:
    hours = httpx.get(url, timeout=5).json().get(business, {})
    totals: dict[str, float] = {"calls": 0, "leads": 0, "failures": 0, "summary_durations": 0}
    for figures in hours.values():
        for name in ("calls", "leads", "failures"):
            totals[name] += figures[name]
        totals["summary_durations"] += figures["stage_seconds"].get("summary", {}).get("count", 0)
    return totals


@pytest.fixture(scope="module")
def observed_call(
    analytics: Analytics, stack: RunningStack, otlp_receiver: OtlpReceiver
) -> tuple[dict[str, Any], dict[str, Samples], dict[str, Samples], list[ReceivedSpan]]:
    """A call placed once the analytics consumer runs, with the metrics before and after it
    and the spans the OTLP receiver got for it."""
    before = {service: scrape(metrics_url(stack, service)) for service in SERVICES}
    call = stack.wait_for_call(stack.place_call("plumber_boston"))
    assert call["status"] == "completed", call
    sid = call["call_sid"]

    def call_spans() -> list[ReceivedSpan]:
        return [s for s in otlp_receiver.spans() if s.attributes.get("callpipe.call_sid") == sid]

    # Each service exports its spans in its own batches (every few seconds), so the player's
    # span of the summary, the call's last, can arrive before an earlier stage's: wait for the
    # last span of every service, not just the player's.
    last_spans = {
        ("callpipe-ingress", "ingress /twilio/recording-status"),
        ("callpipe-downloader", "downloader recording.completed"),
        ("callpipe-transcriber", "transcriber recording.downloaded"),
        ("callpipe-extractor", "extractor transcript.ready"),
        ("callpipe-player", "player summary.ready"),
    }
    wait_until(
        lambda: last_spans <= {(s.service, s.name) for s in call_spans()},
        30,
        f"every service's span of {sid}",
    )
    after = {service: scrape(metrics_url(stack, service)) for service in SERVICES}
    return call, before, after, call_spans()


def test_a_call_is_one_trace_across_the_five_services(
    observed_call: tuple[dict[str, Any], Any, Any, list[ReceivedSpan]],
) -> None:
    call, _, _, spans = observed_call
    assert {s.service for s in spans} == {f"callpipe-{service}" for service in SERVICES}
    assert {s.trace_id for s in spans} == {call_correlation_id(call["call_sid"])}
    names = {s.name for s in spans}
    assert {
        "ingress /twilio/voice",
        "ingress /twilio/recording-status",
        "downloader recording.completed",
        "transcriber recording.downloaded",
        "extractor transcript.ready",
        "player summary.ready",
    } <= names, names
    # The context travelled in the Kafka headers: each stage's span is the child of the span
    # that published its input.
    by_id = {s.span_id: s for s in spans}
    parent_of = {s.name: by_id[s.parent_span_id].name for s in spans if s.parent_span_id in by_id}
    assert parent_of["downloader recording.completed"] == "ingress /twilio/recording-status"
    assert parent_of["transcriber recording.downloaded"] == "downloader recording.completed"
    assert parent_of["extractor transcript.ready"] == "transcriber recording.downloaded"
    assert parent_of["player summary.ready"] == "extractor transcript.ready"
    webhooks = [s for s in spans if s.service == "callpipe-ingress"]
    assert all(s.parent_span_id == "" for s in webhooks)  # Twilio's requests carry no context


def test_the_metrics_endpoints_show_the_calls_work(
    observed_call: tuple[dict[str, Any], dict[str, Samples], dict[str, Samples], Any],
) -> None:
    _, before, after, _ = observed_call

    def moved(service: str, name: str, **labels: str) -> float:
        return value(after[service], name, **labels) - value(before[service], name, **labels)

    post = {"method": "POST", "status": "200"}
    assert moved("ingress", "callpipe_http_requests_total", route="/twilio/voice", **post) >= 1
    assert moved("ingress", "callpipe_events_published_total", topic="call.started") >= 1
    assert moved("ingress", "callpipe_events_published_total", topic="recording.completed") >= 1
    size = sample_path("plumber_boston").stat().st_size
    assert moved("downloader", "callpipe_download_bytes_total") >= size
    # The simulator answers 404 for the media's first moments: the downloader retried.
    assert moved("downloader", "callpipe_stage_retries_total", worker="downloader") >= 1
    for worker, topic in [
        ("downloader", "recording.completed"),
        ("transcriber", "recording.downloaded"),
        ("extractor", "transcript.ready"),
    ]:
        labels = {"worker": worker, "topic": topic}
        assert moved(worker, "callpipe_events_consumed_total", **labels) >= 1
        assert moved(worker, "callpipe_handle_seconds_count", **labels) >= 1
        assert moved(worker, "callpipe_stage_latency_seconds_sum", **labels) > 0
        assert any(name == "callpipe_consumer_lag" for name, _ in after[worker])
    assert moved("transcriber", "callpipe_transcription_real_time_factor_count") >= 1
    assert moved("transcriber", "callpipe_transcribed_audio_seconds_total") > 5
    assert moved("extractor", "callpipe_events_published_total", topic="summary.ready") >= 1
    assert moved("player", "callpipe_events_consumed_total", topic="summary.ready") >= 1
    assert moved("player", "callpipe_http_requests_total", route="/api/calls/{call_sid}") >= 1
    # Each service put its start-up objects out of the full collections' reach (0916).
    assert all(value(after[s], "callpipe_gc_frozen_objects") > 10_000 for s in SERVICES)


def test_every_log_line_of_the_call_is_json_with_its_sid_and_event_id(
    stack: RunningStack,
    observed_call: tuple[dict[str, Any], Any, Any, Any],
) -> None:
    sid = observed_call[0]["call_sid"]
    for service in SERVICES:
        lines = (stack.data_dir / "logs" / f"{service}.log").read_text().splitlines()
        mentions = [json.loads(line) for line in lines if sid in line]
        # The HTTP server's access lines name the call in their path, outside any call.
        handled = [entry for entry in mentions if entry["logger"] != "uvicorn.access"]
        assert handled, f"{service} logged nothing about {sid}"
        for entry in handled:
            assert entry["service"] == service
            assert entry["call_sid"] == sid
            assert entry["event_id"] != "-"
            assert entry["trace_id"] == call_correlation_id(sid)
            assert {"time", "level", "logger", "message"} <= entry.keys()


def test_the_analytics_figures_follow_the_calls(
    stack: RunningStack,
    analytics: Analytics,
    observed_call: tuple[dict[str, Any], Any, Any, Any],
    tmp_path: Path,
) -> None:
    """The observed call (a lead) and a call whose recording cannot be decoded (a failure)."""
    transcriber_before = scrape(metrics_url(stack, "transcriber"))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x10\x00\x00WAVEfmt " + bytes(range(256)) * 16)
    failed = stack.wait_for_call(stack.place_call(str(corrupt)))
    assert failed["transcript_status"] == "failed"
    assert observed_call[0]["lead"]["kind"] == "lead"

    def moved() -> dict[str, float]:
        now = business_totals(analytics.url, "demo")
        return {name: now[name] - analytics.before[name] for name in now}

    expected = {"calls": 2, "leads": 1, "failures": 1, "summary_durations": 1}
    deadline = time.monotonic() + 30
    while moved() != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    assert moved() == expected
    hours = httpx.get(analytics.url, timeout=5).json()["demo"].values()
    assert any(h["stage_seconds"].get("end_to_end", {}).get("max_seconds", 0) > 0 for h in hours)
    transcriber_after = scrape(metrics_url(stack, "transcriber"))
    for series in ("callpipe_stage_failures_total", "callpipe_dead_letters_total"):
        moved_by = value(transcriber_after, series, worker="transcriber") - value(
            transcriber_before, series, worker="transcriber"
        )
        assert moved_by == 1, series
