"""The lab's commands: `callpipe bench` and `callpipe chaos`. They reach the `callpipe` command
through the `callpipe.commands` entry point, so that the product never imports the lab."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from callpipe.local_secrets import local_settings
from shared import logs
from shared.settings import Settings

bench = typer.Typer(
    help="Every benchmark figure on a stack of its own (`callpipe bench --json`), or one "
    "measurement against a running `callpipe up` (the subcommands).",
    invoke_without_command=True,
)


@bench.callback()
def bench_all(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    port_offset: Annotated[
        int, typer.Option(help="Added to the bench stack's ports (defaults + 20000).")
    ] = 0,
    database_url: Annotated[
        str, typer.Option(help="SQL database for the status table; empty: SQLite.")
    ] = "",
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the stack's data and logs here.")
    ] = None,
    calls: Annotated[int, typer.Option(help="Calls of the saturation run.")] = 300,
    businesses: Annotated[
        int, typer.Option(help="Businesses the calls are spread over (each has its slots).")
    ] = 10,
    rate: Annotated[
        list[float] | None,
        typer.Option(
            help="Offered calls/s of a latency run (repeatable); default: "
            "1/4, 1/2, 3/4 and all of the saturation rate."
        ),
    ] = None,
    rate_seconds: Annotated[float, typer.Option(help="Seconds of each latency run.")] = 5.0,
    baseline_calls: Annotated[int, typer.Option(help="Calls of the baseline loop.")] = 100,
    kafka_messages: Annotated[int, typer.Option(help="Messages of the raw Kafka run.")] = 5000,
    webhook_rate: Annotated[float, typer.Option(help="Offered webhooks/s.")] = 500.0,
    webhook_seconds: Annotated[float, typer.Option(help="Seconds of the webhook run.")] = 5.0,
    webhook_count: Annotated[int, typer.Option(help="Webhooks of the throughput run.")] = 2000,
    status_calls: Annotated[int, typer.Option(help="Calls put in the table.")] = 100_000,
    status_rate: Annotated[float, typer.Option(help="Offered call-list requests/s.")] = 300.0,
    status_seconds: Annotated[float, typer.Option(help="Seconds of the call-list run.")] = 5.0,
    status_count: Annotated[int, typer.Option(help="Requests of the throughput run.")] = 1000,
    playback_mb: Annotated[float, typer.Option(help="Size of the played recording, MB.")] = 20.0,
    playback_runs: Annotated[int, typer.Option(help="Fetches each way.")] = 3,
    whisper_sample: Annotated[
        list[str] | None, typer.Option(help="Samples for the Whisper figures (repeatable).")
    ] = None,
    whisper_runs: Annotated[int, typer.Option(help="Passes over the Whisper samples.")] = 1,
    phase: Annotated[
        list[str] | None,
        typer.Option(
            help="Measure only this part (repeatable): raw-kafka, pipeline, webhooks, "
            "status-api, playback, whisper; default: all."
        ),
    ] = None,
    write_docs: Annotated[
        Path | None,
        typer.Option(
            help="Update the measured section of this file (docs/benchmarks.md) "
            "and draw the latency plot beside it."
        ),
    ] = None,
) -> None:
    """Starts a stack of its own (instant speech and language stages), measures every figure
    in one run, stops everything it started."""
    if ctx.invoked_subcommand is not None:
        return
    import sys

    from lab.bench.run import PHASES, BenchConfig, run

    unknown = set(phase or ()) - set(PHASES)
    if unknown:
        raise typer.BadParameter(
            f"unknown phase {', '.join(sorted(unknown))}", param_hint="--phase"
        )
    logs.configure("bench")
    config = BenchConfig(
        port_offset=port_offset,
        database_url=database_url,
        data_dir=data_dir,
        saturation_calls=calls,
        businesses=businesses,
        rates=tuple(rate or ()),
        rate_seconds=rate_seconds,
        baseline_calls=baseline_calls,
        kafka_messages=kafka_messages,
        webhook_rate=webhook_rate,
        webhook_seconds=webhook_seconds,
        webhook_count=webhook_count,
        status_calls=status_calls,
        status_rate=status_rate,
        status_seconds=status_seconds,
        status_count=status_count,
        playback_mb=playback_mb,
        playback_runs=playback_runs,
        whisper_samples=tuple(whisper_sample or ("plumber_boston", "electrician_denver")),
        whisper_runs=whisper_runs,
        phases=tuple(phase or PHASES),
    )
    result = run(config)
    result.about["command"] = " ".join(["callpipe", *sys.argv[1:]])
    if write_docs is not None:
        from lab.bench.report import update_docs

        update_docs(write_docs, result)
    output = result.as_json()
    typer.echo(json.dumps(output, indent=2) if as_json else _figures_table(output))


def _figures_table(output: dict[str, object]) -> str:
    return "\n".join(
        f"{name:<32}{value}" for name, value in output.items() if isinstance(value, int | float)
    )


@bench.command("transcriber")
def bench_transcriber(
    sample: Annotated[
        list[str] | None, typer.Option(help="Bundled sample names or audio files (repeatable).")
    ] = None,
    runs: Annotated[int, typer.Option(help="Passes over the samples, each way.")] = 3,
) -> None:
    """Real-time factor of the local Whisper backend: direct call vs the running pipeline
    (start it first with `callpipe up`)."""
    from callpipe.twilio_simulator.samples import sample_path
    from lab.bench.transcriber import compare, report

    paths = [sample_path(name) for name in sample or ["plumber_boston", "electrician_denver"]]
    typer.echo(report(*asyncio.run(compare(local_settings(), paths, runs))))


@bench.command("download")
def bench_download(
    size_mb: Annotated[int, typer.Option(help="Size of the recording, MiB.")] = 200,
) -> None:
    """Archive one large recording (simulator → downloader → S3); print time and memory."""
    from lab.bench.download import bench_download as measure

    typer.echo(json.dumps(asyncio.run(measure(local_settings(), size_mb)), indent=2))


def chaos_run(
    calls: Annotated[int, typer.Option(help="Simulated calls to put through.")] = 100,
    kills: Annotated[int, typer.Option(help="Service processes killed (SIGKILL) meanwhile.")] = 10,
    broker_restarts: Annotated[int, typer.Option(help="Broker kills and restarts.")] = 1,
    s3_outage_seconds: Annotated[
        float, typer.Option(help="Stop the S3 server this long once (0: never).")
    ] = 0.0,
    broker_outage_seconds: Annotated[
        float,
        typer.Option(
            help="Stop the broker at least this long once, and meanwhile each service with "
            "SIGTERM, timing its exit (0: never)."
        ),
    ] = 0.0,
    rate: Annotated[float, typer.Option(help="Calls placed per second.")] = 5.0,
    call_seconds: Annotated[float, typer.Option(help="How long each call lasts.")] = 20.0,
    seed: Annotated[int | None, typer.Option(help="Random seed, to repeat a run.")] = None,
    real_backends: Annotated[
        bool,
        typer.Option(help="The local Whisper model and the rules extractor, not the instant ones."),
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the run's stack data here (default: a temp dir).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON result.")] = False,
) -> None:
    """Start a stack of its own, put calls through while killing its parts, and count lost
    calls and duplicated or missing side effects (stop `callpipe up` on the same ports
    first). CALLPIPE_DATABASE_URL puts the status table on PostgreSQL."""
    from lab.chaos import ChaosPlan, chaos

    logs.configure("chaos")  # to stderr: stdout carries only the result
    plan = ChaosPlan(
        calls,
        kills,
        broker_restarts,
        s3_outage_seconds,
        rate,
        call_seconds=call_seconds,
        broker_outage_seconds=broker_outage_seconds,
        seed=seed,
        real_backends=real_backends,
    )
    result = chaos(Settings(), plan, data_dir)
    typer.echo(json.dumps(result, indent=None if as_json else 2))
    if result["lost"] or result["duplicate_side_effects"] or result["missing_side_effects"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(bench, name="bench")
    app.command("chaos")(chaos_run)
