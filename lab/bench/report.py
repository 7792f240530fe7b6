"""Writes a run's figures into docs/benchmarks.md (between markers, so a new run replaces
the previous one) and draws latency against offered load beside it (PNG)."""

from __future__ import annotations

from pathlib import Path

from lab.bench.run import BenchResult

BEGIN = "<!-- callpipe bench: begin (written by `callpipe bench --write-docs`) -->"
END = "<!-- callpipe bench: end -->"
PLOT_NAME = "bench-latency.png"

TARGETS = {
    "pipeline_vs_baseline": ">= 0.5",
    "pipeline_calls_per_s": ">= 100",
    "pipeline_p95_ms": "<= 500 at half the saturation rate",
    "webhook_p99_ms": "<= 25 at 500/s",
    "status_api_p95_ms": "<= 50 at 300 rps",
    "playback_vs_s3": ">= 0.8",
    "whisper_pipeline_vs_direct": "<= 1.1",
}


def plot(result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [(p.offered_per_s, p.latency) for p in result.pipeline_load if p.latency]
    offered = [rate for rate, _ in measured]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    axes.plot(offered, [latency.p50_ms for _, latency in measured], "o-", label="p50")
    axes.plot(offered, [latency.p95_ms for _, latency in measured], "s-", label="p95")
    axes.plot(offered, [latency.p99_ms for _, latency in measured], "^--", label="p99")
    axes.set_xlabel("offered load, calls/s")
    axes.set_ylabel("webhook → visible in the player, ms")
    axes.set_title(
        f"callpipe pipeline latency (instant speech/language stages)\n"
        f"{result.about['date']}, loadavg {result.about['loadavg_before']}",
        fontsize=9,
    )
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def section(result: BenchResult, plot_name: str) -> str:
    about = result.about
    rows = "\n".join(
        f"| `{name}` | {value} | {TARGETS.get(name, '')} |"
        for name, value in result.figures.items()
    )
    load_rows = "\n".join(
        f"| {p.offered_per_s} | {p.achieved_per_s} | {p.errors} | "
        + (
            f"{p.latency.p50_ms} | {p.latency.p95_ms} | {p.latency.p99_ms} | {p.latency.max_ms} |"
            if p.latency
            else "none | none | none | none |"
        )
        + f" {p.cpu_ms_per_call if p.cpu_ms_per_call is not None else 'none'} |"
        for p in result.pipeline_load
    )
    failures = "".join(f"\n- {name} failed: `{reason}`" for name, reason in result.failures.items())
    by_process = ", ".join(
        f"{part} {ms}" for part, ms in about.get("pipeline_cpu_ms_per_call_by_process", {}).items()
    )
    return f"""{BEGIN}
Last run: {about["date"]}, {about["machine"]}, database {about.get("database", "?")},
broker log on {about.get("broker_log", "s3")}; load average {about["loadavg_before"]} before,
{about["loadavg_after"]} after; {about["seconds"]} s.

```sh
{about.get("command", "callpipe bench")}
```

| figure | value | target |
|---|---|---|
{rows}

CPU milliseconds per call of each process during the saturation run: {by_process or "none"}.

Latency of a call (its `completed` recording webhook → its summary visible in the player)
against offered load:

| offered calls/s | achieved | errors | p50 ms | p95 ms | p99 ms | max ms | CPU ms per call |
|---|---|---|---|---|---|---|---|
{load_rows}
{failures}

![latency against offered load]({plot_name})
{END}"""


def update_docs(doc: Path, result: BenchResult) -> None:
    plot(result, doc.parent / PLOT_NAME)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    new = section(result, PLOT_NAME)
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + new + after
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    doc.write_text(text)
