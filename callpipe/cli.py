"""The `callpipe` command."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from shared import logs
from shared.settings import Settings

app = typer.Typer(help="callpipe: every call recorded, stored, transcribed, summarised, shown.")
bench = typer.Typer(help="Measurements against a running `callpipe up`.")
app.add_typer(bench, name="bench")


@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Where data and logs live.")] = None,
    demo: Annotated[bool, typer.Option(help="Once up, put one sample call through.")] = False,
) -> None:
    """Start the whole stack in the foreground; Ctrl-C stops all of it."""
    from callpipe.stack import Stack

    logs.configure("up")
    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    stack = Stack(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

        async def bring_up() -> None:
            await stack.start()
            typer.echo("callpipe is up:\n" + stack.describe())
            if demo:
                await _demo(settings)
            typer.echo("Ctrl-C stops everything.")

        starting = asyncio.create_task(bring_up())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()
                await stack.supervise(stop)
        finally:
            starting.cancel()
            stopping.cancel()
            typer.echo("stopping…")
            await stack.stop()
            typer.echo("stopped.")

    asyncio.run(main())


async def _demo(settings: Settings) -> None:
    from callpipe.simulate import place_call, wait_for_call

    call_sid = await place_call(settings, "plumber_boston")
    typer.echo(f"demo: placed call {call_sid}, waiting for it to go through…")
    try:
        call = await wait_for_call(settings, call_sid, within_seconds=120)
    except TimeoutError as error:
        typer.echo(f"demo: {error}", err=True)
        return
    typer.echo(json.dumps({k: v for k, v in call.items() if k != "timeline"}, indent=2))


@app.command()
def run(
    service: Annotated[
        str, typer.Argument(help="ingress, downloader, transcriber, extractor, player")
    ],
) -> None:
    """Run one service in the foreground (what `up` starts for each)."""
    from callpipe.bootstrap import HTTP_SERVICES, SERVICES, run_service

    if service not in (*SERVICES, *HTTP_SERVICES):
        raise typer.BadParameter(f"unknown service {service!r}")
    run_service(service, Settings())


@app.command("simulate-call")
def simulate_call(
    audio: Annotated[
        str, typer.Option(help="A bundled sample name or an audio file.")
    ] = "plumber_boston",
    wait: Annotated[bool, typer.Option(help="Wait for the final status; print it.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 120.0,
    recording_status: Annotated[
        str, typer.Option(help="What Twilio reports: completed, absent or failed.")
    ] = "completed",
    recording_mode: Annotated[
        str,
        typer.Option(
            help="twiml (callpipe answers the call) or rest (the business's app answers; "
            "needs the stack started with CALLPIPE_RECORDING_MODE=rest)."
        ),
    ] = "twiml",
    direction: Annotated[str, typer.Option(help="inbound or outbound-api.")] = "inbound",
    call_status: Annotated[
        str, typer.Option(help="completed, or busy / no-answer for a call never answered.")
    ] = "completed",
    deliveries: Annotated[
        int, typer.Option(help="Deliver every webhook this often (Twilio's retries).")
    ] = 1,
) -> None:
    """Place one call against the running stack exactly as Twilio would."""
    from callpipe.simulate import place_call, wait_for_call

    settings = Settings()

    async def main() -> None:
        call_sid = await place_call(
            settings,
            audio,
            recording_status=recording_status,
            recording_mode=recording_mode,
            direction=direction,
            call_status=call_status,
            deliveries=deliveries,
        )
        if not wait:
            typer.echo(json.dumps({"call_sid": call_sid}))
            return
        call = await wait_for_call(settings, call_sid, timeout)
        typer.echo(json.dumps(call, indent=2))
        if call["status"] != "completed":
            raise typer.Exit(1)

    asyncio.run(main())


@bench.command("transcriber")
def bench_transcriber(
    sample: Annotated[
        list[str] | None, typer.Option(help="Bundled sample names or audio files (repeatable).")
    ] = None,
    runs: Annotated[int, typer.Option(help="Passes over the samples, each way.")] = 3,
) -> None:
    """Real-time factor of the local Whisper backend: direct call vs the running pipeline
    (start it first with `callpipe up`)."""
    from callpipe.bench_transcriber import compare, report
    from callpipe.twilio_simulator import sample_path

    paths = [sample_path(name) for name in sample or ["plumber_boston", "electrician_denver"]]
    typer.echo(report(*asyncio.run(compare(Settings(), paths, runs))))


@app.command()
def schemas(
    write: Annotated[bool, typer.Option("--write", help="Rewrite docs/events/.")] = False,
    out_dir: Annotated[Path, typer.Option(help="Where the contract files live.")] = Path(
        "docs/events"
    ),
) -> None:
    """Check (default) or rewrite the published event contract: JSON Schemas and AsyncAPI."""
    from callpipe.schemas import check, write_all

    if write:
        for path in write_all(out_dir):
            typer.echo(f"wrote {path}")
        return
    stale = check(out_dir)
    if stale:
        typer.echo("out of date: " + ", ".join(stale) + " (run `callpipe schemas --write`)")
        raise typer.Exit(1)
    typer.echo("event contract up to date")


@app.command("api-key")
def api_key(
    business: Annotated[str, typer.Option(help="The business the key gives access to.")],
    label: Annotated[str, typer.Option(help="What the key is for.")] = "created by the CLI",
) -> None:
    """Create an API key for a business; it is printed once and stored only as a digest."""
    from services.player.repository import CallRepository, migrate
    from shared.db import create_engine

    settings = Settings()

    async def main() -> str:
        url = settings.effective_database_url
        await asyncio.to_thread(migrate, url)
        engine = create_engine(url)
        try:
            return await CallRepository(engine).create_api_key(business, label)
        finally:
            await engine.dispose()

    typer.echo(asyncio.run(main()))


@app.command("rebuild-status")
def rebuild_status(
    database_url: Annotated[
        str, typer.Option(help="An empty database to rebuild into (SQLAlchemy async URL).")
    ],
) -> None:
    """Replay every topic from the beginning into an empty status table."""
    from services.player.rebuild import NotEmpty, rebuild

    try:
        applied = asyncio.run(rebuild(Settings(), database_url))
    except NotEmpty as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error
    typer.echo(f"applied {applied} events")


@bench.command("download")
def bench_download(
    size_mb: Annotated[int, typer.Option(help="Size of the recording, MiB.")] = 200,
) -> None:
    """Archive one large recording (simulator → downloader → S3); print time and memory."""
    from callpipe.bench_download import bench_download as measure

    typer.echo(json.dumps(asyncio.run(measure(Settings(), size_mb)), indent=2))
