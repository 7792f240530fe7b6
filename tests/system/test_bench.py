"""The benchmark suite: its pure pieces, and `callpipe bench --json` end to end in a tiny
configuration (few calls, short runs) on a stack of its own. No speed is asserted here: the
figures come from the command itself (docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.bench.cpu import BENCH, cpu_seconds
from lab.bench.report import BEGIN, END, update_docs
from lab.bench.run import BenchResult, LoadPoint
from lab.bench.stats import Latencies, percentile, ratio, schedule
from tests.support.stack import leftover_processes

FIGURES = (
    "pipeline_calls_per_s",
    "pipeline_p50_ms",
    "pipeline_p95_ms",
    "baseline_calls_per_s",
    "pipeline_vs_baseline",
    "raw_kafka_hops_per_s",
    "webhook_p99_ms",
    "webhooks_per_s",
    "status_api_p95_ms",
    "status_api_rps",
    "playback_mb_per_s",
    "s3_direct_mb_per_s",
    "playback_vs_s3",
    "whisper_rtf_direct",
    "whisper_rtf_pipeline",
)


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0  # unsorted input
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_latencies_are_summarised_in_milliseconds() -> None:
    summary = Latencies.of([0.010] * 98 + [0.200, 0.500])
    assert summary is not None
    assert summary.count == 100
    assert summary.p50_ms == 10.0
    assert summary.p95_ms == 10.0
    assert summary.p99_ms == 200.0
    assert summary.max_ms == 500.0
    assert Latencies.of([]) is None  # nothing got through


def test_the_schedule_spaces_arrivals_evenly_at_the_offered_rate() -> None:
    arrivals = schedule(4.0, 2.0)
    assert arrivals == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert schedule(0.1, 1.0) == [0.0]  # at least one arrival
    with pytest.raises(ValueError):
        schedule(0.0, 1.0)


def test_ratio_of_nothing_is_zero() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(1.0, 0.0) == 0.0


def _result(p95_ms: float) -> BenchResult:
    latency = Latencies(10, 100.0, p95_ms, p95_ms, p95_ms)
    return BenchResult(
        figures={"pipeline_calls_per_s": 12.5, "pipeline_p95_ms": p95_ms},
        pipeline_load=[
            LoadPoint(5.0, 5.0, 0, latency, 120.5),
            LoadPoint(10.0, 9.5, 0, latency, 98.25),
        ],
        about={
            "date": "2026-11-24T20:00:00+00:00",
            "machine": "test machine",
            "loadavg_before": "0.1 0.1 0.1",
            "loadavg_after": "0.2 0.2 0.2",
            "seconds": 1.0,
            "command": "callpipe bench --json",
            "pipeline_cpu_ms_per_call_by_process": {"s3": 41.5, "downloader": 30.25},
        },
    )


def test_cpu_seconds_are_read_for_a_live_process_only() -> None:
    before = cpu_seconds(os.getpid())
    assert before is not None
    sum(i * i for i in range(2_000_000))  # some CPU work of this process
    after = cpu_seconds(os.getpid())
    assert after is not None and after > before
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert cpu_seconds(gone.pid) is None


def test_the_docs_section_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Earlier section\n\nkept\n")
    update_docs(doc, _result(p95_ms=111.0))
    update_docs(doc, _result(p95_ms=222.0))
    text = doc.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "## Earlier section\n\nkept" in text
    assert "222.0" in text and "111.0" not in text
    assert "test machine" in text and "0.1 0.1 0.1" in text
    assert "saturation run: s3 41.5, downloader 30.25." in text
    assert "| 10.0 | 9.5 | 0 | 100.0 | 222.0 | 222.0 | 222.0 | 98.25 |" in text
    assert (tmp_path / "bench-latency.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.stack
def test_bench_json_has_every_figure_with_sane_values(tmp_path: Path) -> None:
    # The bench's ports sit 20000 above the defaults, where the test stack's S3 server (10000
    # above) has its gRPC ports (another 10000 above): 500 more keeps them apart when both run.
    offset = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0")) + 500
    data_dir = tmp_path / "bench"
    command = [
        sys.executable, "-m", "callpipe", "bench", "--json",
        "--port-offset", str(offset), "--data-dir", str(data_dir),
        "--calls", "8", "--rate", "4", "--rate", "8", "--rate-seconds", "1",
        "--baseline-calls", "4", "--kafka-messages", "200",
        "--webhook-rate", "40", "--webhook-seconds", "1", "--webhook-count", "40",
        "--status-calls", "500", "--status-rate", "20", "--status-seconds", "1",
        "--status-count", "20", "--playback-mb", "1", "--playback-runs", "1",
        "--whisper-sample", "voicemail_austin",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-4000:]
    output = json.loads(finished.stdout)
    assert output["failures"] == {}
    for errors in ("pipeline_errors", "webhook_errors", "status_api_errors"):
        assert output[errors] == 0, errors
    for name in FIGURES:
        assert isinstance(output[name], int | float), name
        assert output[name] > 0, (name, output[name])
    assert output["pipeline_p50_ms"] <= output["pipeline_p95_ms"]
    # The ratio is taken before the rates are rounded to 0.1: small rates carry that error.
    pipeline_rate, baseline_rate = output["pipeline_calls_per_s"], output["baseline_calls_per_s"]
    assert output["pipeline_vs_baseline"] == pytest.approx(
        pipeline_rate / baseline_rate, rel=0.02 + 0.05 / pipeline_rate + 0.05 / baseline_rate
    )
    assert output["playback_vs_s3"] == pytest.approx(
        output["playback_mb_per_s"] / output["s3_direct_mb_per_s"], rel=0.02
    )
    assert output["status_api_calls_in_table"] == 500
    by_process = output["about"]["pipeline_cpu_ms_per_call_by_process"]
    assert {"s3", "broker", "ingress", "downloader", "player", BENCH} <= set(by_process)
    assert output["pipeline_cpu_ms_per_call"] == pytest.approx(
        sum(ms for part, ms in by_process.items() if part != BENCH), abs=0.5
    )
    assert output["pipeline_cpu_ms_per_call"] > 0
    assert [point["offered_per_s"] for point in output["pipeline_load"]] == [4.0, 8.0]
    assert [point["latency"]["count"] for point in output["pipeline_load"]] == [4, 8]
    assert all(point["cpu_ms_per_call"] > 0 for point in output["pipeline_load"])
    assert output["about"]["loadavg_before"] and output["about"]["machine"]
    # Every process the bench started is gone.
    assert leftover_processes(data_dir) == []
