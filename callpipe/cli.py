"""The `callpipe` command."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
from collections import Counter
from datetime import UTC, datetime
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from callpipe.local_secrets import local_settings
from shared import logs
from shared.settings import Settings
from shared.weak_secrets import SECRETS_OF_SERVICE, WeakSecrets, refuse_weak_secrets

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from callpipe.stack import Stack
    from services.player.repository import CallRepository

T = TypeVar("T")

app = typer.Typer(help="callpipe: every call recorded, stored, transcribed, summarised, shown.")

# sysexits.h EX_CONFIG: a supervisor's log shows a configuration error, not a crash.
EXIT_WEAK_SECRET = 78


def _refuse_weak_secrets(command: str, settings: Settings, services: list[str]) -> None:
    """Exits, naming each weak secret and how to make a good one, before anything connects."""
    uses = dict.fromkeys(secret for name in services for secret in SECRETS_OF_SERVICE[name])
    try:
        refuse_weak_secrets(settings, uses)
    except WeakSecrets as error:
        typer.echo(f"callpipe {command}: {error}", err=True)
        raise typer.Exit(EXIT_WEAK_SECRET) from error


@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Where data and logs live.")] = None,
    demo: Annotated[bool, typer.Option(help="Once up, put one sample call through.")] = False,
) -> None:
    """Start the whole stack in the foreground; Ctrl-C stops all of it."""
    from callpipe.stack import DatabaseUnavailable, Stack
    from shared.extras import MissingExtra

    settings = local_settings(data_dir)
    logs.configure("up", settings.observability.log_format)
    try:
        stack = Stack(settings)
    except MissingExtra as error:
        typer.echo(f"callpipe up: {error}", err=True)
        raise typer.Exit(1) from error
    settings = stack.settings
    _refuse_weak_secrets("up", settings, list(SECRETS_OF_SERVICE))

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
                await _supervise_and_reconcile(stack, stop)
        finally:
            starting.cancel()
            stopping.cancel()
            typer.echo("stopping…")
            await stack.stop()
            typer.echo("stopped.")

    try:
        asyncio.run(main())
    except DatabaseUnavailable as error:
        typer.echo(f"callpipe up: {error}", err=True)
        raise typer.Exit(1) from error


async def _supervise_and_reconcile(stack: Stack, stop: asyncio.Event) -> None:
    from callpipe.bootstrap import StoppedWhileConnecting, open_reconciler, open_retention_sweep
    from shared.shutdown import Shutdown

    shutdown = Shutdown("reconciler", stack.settings.shutdown, stop)
    async with contextlib.AsyncExitStack() as resources:
        try:
            reconciler = await open_reconciler(
                stack.settings, stack.twilio_api_base_url, resources, shutdown
            )
            sweep = await open_retention_sweep(stack.settings, resources, shutdown)
        except StoppedWhileConnecting:
            return
        scheduled = [
            asyncio.create_task(
                reconciler.run_periodically(stack.settings.reconcile.interval_seconds, stop)
            ),
            asyncio.create_task(
                sweep.run_periodically(stack.settings.retention.interval_seconds, stop)
            ),
        ]
        await stack.supervise(stop)
        await asyncio.gather(*scheduled)


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
    from callpipe.bootstrap import HTTP_SPECS, SERVICES, run_service
    from shared.extras import MissingExtra

    if service not in (*SERVICES, *HTTP_SPECS):
        raise typer.BadParameter(f"unknown service {service!r}")
    settings = local_settings()
    if service in SECRETS_OF_SERVICE:
        _refuse_weak_secrets(f"run {service}", settings, [service])
    try:
        run_service(service, settings)
    except MissingExtra as error:
        typer.echo(f"callpipe run {service}: {error}", err=True)
        raise typer.Exit(1) from error


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

    settings = local_settings()

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


api_key = typer.Typer(
    help="API keys: create one (`--business ID`), list them, revoke one.",
    invoke_without_command=True,
)
app.add_typer(api_key, name="api-key")


def _with_repository(work: Callable[[CallRepository], Awaitable[T]]) -> T:
    """Runs `work` on the player's database, migrated first."""
    from services.player.repository import CallRepository, migrate
    from shared.db import create_engine

    url = Settings().database_url

    async def main() -> T:
        await asyncio.to_thread(migrate, url)
        engine = create_engine(url)
        repository = CallRepository(engine)
        try:
            return await work(repository)
        finally:
            repository.close()
            await engine.dispose()

    return asyncio.run(main())


@api_key.callback()
def api_key_create(
    ctx: typer.Context,
    business: Annotated[
        str | None, typer.Option(help="The business the new key gives access to.")
    ] = None,
    label: Annotated[str, typer.Option(help="What the key is for.")] = "created by the CLI",
) -> None:
    """Create an API key for a business; it is printed once and stored only as a digest."""
    if ctx.invoked_subcommand is not None:
        return
    if business is None:
        raise typer.BadParameter("name the business the key is for", param_hint="--business")
    typer.echo(_with_repository(lambda repository: repository.create_api_key(business, label)))


@api_key.command("list")
def api_key_list(
    business: Annotated[str | None, typer.Option(help="Only this business's keys.")] = None,
) -> None:
    """Every API key (never the key itself): id, business, label, created, revoked."""
    keys = _with_repository(lambda repository: repository.api_keys(business))
    typer.echo(f"{'key id':<13} {'business':<17} {'created':<26} {'revoked':<26} label")
    for key in keys:
        created = key.created_at.isoformat(timespec="seconds")
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
        typer.echo(
            f"{key.key_id:<13} {key.business_id:<17} {created:<26} {revoked:<26} {key.label}"
        )


@api_key.command("revoke")
def api_key_revoke(
    key: Annotated[str, typer.Argument(help="The key's id (`callpipe api-key list`) or label.")],
) -> None:
    """Revoke a key. Its status page sessions end at once; a running player may still take
    it as a Bearer key for up to CALLPIPE_API_KEY_CACHE_SECONDS."""
    from services.player.repository import AmbiguousKey

    try:
        revoked = _with_repository(lambda repository: repository.revoke_api_key(key))
    except AmbiguousKey as error:
        typer.echo(f"{key!r} names several keys; revoke one by its id: {error}", err=True)
        raise typer.Exit(1) from error
    if revoked is None:
        typer.echo(f"no API key has the id or label {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"revoked {revoked.key.key_id} ({revoked.key.label}, business {revoked.key.business_id}); "
        f"{revoked.sessions_ended} status page session(s) ended"
    )


business = typer.Typer(help="A business as a whole: delete it.")
app.add_typer(business, name="business")


@business.command("delete")
def business_delete(
    business_id: Annotated[str, typer.Argument(help="The business to delete.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a business: every call as `DELETE /api/calls/{call_sid}` does (its objects,
    rows, `call.deleted`; its recordings at Twilio if it chose so), then its data settings,
    sessions and API keys. Interrupted, run it again: it finishes what is left. Remove the
    business's numbers from CALLPIPE_BUSINESS_NUMBERS first, or new calls keep coming."""
    from callpipe.bootstrap import StoppedWhileConnecting, open_deleter
    from shared.shutdown import Shutdown

    if not yes:
        typer.confirm(f"Delete business {business_id!r} and everything it holds?", abort=True)
    logs.configure("business-delete")
    settings = local_settings()

    async def main() -> None:
        shutdown = Shutdown("business-delete", settings.shutdown)
        shutdown.on_signals()
        async with contextlib.AsyncExitStack() as resources:
            try:
                deleter = await open_deleter(settings, resources, shutdown)
            except StoppedWhileConnecting as stopped:
                typer.echo(f"business delete {stopped}", err=True)
                raise typer.Exit(1) from stopped
            deleted = await deleter.delete_business(business_id)
            typer.echo(json.dumps(dataclasses.asdict(deleted)))
        shutdown.finished()

    asyncio.run(main())


@app.command("rebuild-status")
def rebuild_status(
    database_url: Annotated[
        str, typer.Option(help="An empty database to rebuild into (SQLAlchemy async URL).")
    ],
) -> None:
    """Replay every topic from the beginning into an empty status table."""
    from services.player.rebuild import NotEmpty, rebuild

    try:
        applied = asyncio.run(rebuild(local_settings(), database_url))
    except NotEmpty as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error
    typer.echo(f"applied {applied} events")


@app.command()
def analytics() -> None:
    """Example downstream consumer: live per-business figures by the hour (calls, leads,
    failures, stage durations) from the topics, at http://127.0.0.1:CALLPIPE_ANALYTICS_PORT/figures."""
    from callpipe.bootstrap import run_analytics

    run_analytics(local_settings())


dlq = typer.Typer(help="Dead letters: list them, re-drive them after a fix.")
app.add_typer(dlq, name="dlq")


@dlq.command("list")
def dlq_list(
    worker: Annotated[
        str | None, typer.Option(help="downloader, transcriber, extractor or player; all if unset.")
    ] = None,
) -> None:
    """Every dead letter (one JSON object a line): where it came from, why, and whether it
    was re-driven."""
    from callpipe.dlq import list_dead_letters
    from shared.kafka.topics import WORKERS

    letters = asyncio.run(list_dead_letters(local_settings(), [worker] if worker else WORKERS))
    for letter in letters:
        typer.echo(json.dumps(letter.describe()))


@dlq.command("redrive")
def dlq_redrive(
    worker: Annotated[str, typer.Option(help="downloader, transcriber, extractor or player.")],
    offset: Annotated[
        list[str] | None,
        typer.Option(help="PARTITION:OFFSET in the dead-letter topic (repeatable)."),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every dead letter not re-driven yet.")
    ] = False,
) -> None:
    """Publish dead letters back to their source topic (after fixing the cause)."""
    from callpipe.dlq import redrive

    if bool(offset) == all_:
        raise typer.BadParameter("give either --offset (one or more) or --all")
    wanted = None
    if offset:
        wanted = [(int(p), int(o)) for p, _, o in (entry.partition(":") for entry in offset)]
    try:
        letters = asyncio.run(redrive(local_settings(), worker, wanted))
    except KeyError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error
    for letter in letters:
        typer.echo(json.dumps(letter.describe()))
    typer.echo(f"re-drove {len(letters)} dead letters", err=True)


@app.command()
def reconcile(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
) -> None:
    """Find calls whose recording never arrived or whose stage stopped moving; repair them
    (Twilio's recording list, the stage's input again) or mark them failed, every
    CALLPIPE_RECONCILE_INTERVAL_SECONDS; and sweep audio and calls past their business's
    retention every CALLPIPE_RETENTION_INTERVAL_SECONDS. `callpipe up` runs both. `--once`:
    one reconciliation pass (`callpipe retention sweep` sweeps once)."""
    from callpipe.bootstrap import StoppedWhileConnecting, open_reconciler, open_retention_sweep
    from shared.shutdown import Shutdown

    logs.configure("reconciler")
    settings = local_settings()
    _refuse_weak_secrets("reconcile", settings, ["reconciler"])

    async def main() -> None:
        shutdown = Shutdown("reconciler", settings.shutdown)
        shutdown.on_signals()
        async with contextlib.AsyncExitStack() as resources:
            try:
                reconciler = await open_reconciler(
                    settings, settings.twilio.api_base_url, resources, shutdown
                )
                if once:
                    typer.echo(json.dumps(dict(await reconciler.run_once())))
                    return
                sweep = await open_retention_sweep(settings, resources, shutdown)
            except StoppedWhileConnecting as stopped:
                typer.echo(f"reconciler {stopped}", err=True)
                return
            await asyncio.gather(
                reconciler.run_periodically(settings.reconcile.interval_seconds, shutdown.stop),
                sweep.run_periodically(settings.retention.interval_seconds, shutdown.stop),
            )
        shutdown.finished()

    asyncio.run(main())


def _utc_time(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint=option) from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


retention = typer.Typer(help="Retention: audio and calls past their business's retention.")
app.add_typer(retention, name="retention")


@retention.command("sweep")
def retention_sweep(
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Sweep as if it were this time (ISO 8601, e.g. 2027-01-31T12:00:00Z; UTC "
            "unless it says otherwise).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the counts as one JSON object.")
    ] = False,
) -> None:
    """Delete, once, the audio of calls older than their business's audio retention (the
    calls stay, marked) and the calls older than its call retention (as `DELETE
    /api/calls/{sid}` does). A call's age runs from its creation (its first event)."""
    from callpipe.bootstrap import StoppedWhileConnecting, open_retention_sweep
    from shared.shutdown import Shutdown

    logs.configure("retention")
    settings = local_settings()
    _refuse_weak_secrets("retention sweep", settings, ["retention"])
    when = None if as_of is None else _utc_time(as_of, "--as-of")

    async def main() -> Counter[str] | None:
        shutdown = Shutdown("retention", settings.shutdown)
        shutdown.on_signals()
        async with contextlib.AsyncExitStack() as resources:
            try:
                sweep = await open_retention_sweep(settings, resources, shutdown)
            except StoppedWhileConnecting as stopped:
                typer.echo(f"retention sweep {stopped}", err=True)
                return None
            return await sweep.run_once(when)

    done = asyncio.run(main())
    if done is None:
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(dict(done)))
        return
    typer.echo(
        f"audio of {done['audio_expired']} call(s) deleted, {done['calls_deleted']} call(s) "
        f"deleted, {done['failed']} failed (a later sweep takes them again)"
    )
    if done["failed"]:
        raise typer.Exit(1)


@app.command("env-example")
def env_example(
    write: Annotated[
        bool, typer.Option("--write", help="Rewrite .env.example and the README's table.")
    ] = False,
) -> None:
    """Check (default) or rewrite .env.example and README.md's configuration table, both
    generated from the settings' descriptions."""
    from callpipe.env_example import ENV_EXAMPLE, README, is_current, render, with_table

    if write:
        ENV_EXAMPLE.write_text(render())
        README.write_text(with_table(README.read_text()))
        typer.echo(f"wrote {ENV_EXAMPLE} and the table in {README}")
        return
    if not is_current():
        typer.echo(
            f"{ENV_EXAMPLE} or the table in {README} is out of date "
            "(run `callpipe env-example --write`)"
        )
        raise typer.Exit(1)
    typer.echo(f"{ENV_EXAMPLE} and the table in {README} up to date")


@app.command("secrets")
def fresh_secrets() -> None:
    """Print a new value for every secret callpipe can make, ready to paste into .env."""
    from callpipe.env_example import fresh_secrets as make

    typer.echo(make(), nl=False)


@app.command()
def migrate() -> None:
    """Bring the status table's schema to the newest revision (the compose migrations job)."""
    from services.player.repository import migrate as upgrade

    url = Settings().database_url
    upgrade(url)
    typer.echo(f"database schema up to date at {url.split('@')[-1]}")


COMMAND_ENTRY_POINTS = "callpipe.commands"


def _add_installed_commands() -> None:
    """Commands of other installed packages (the lab's `bench` and `chaos`), found by entry point
    so that the product never imports them; an image built without the lab has none."""
    for entry in entry_points(group=COMMAND_ENTRY_POINTS):
        if find_spec(entry.module.partition(".")[0]) is not None:
            entry.load()(app)


_add_installed_commands()
