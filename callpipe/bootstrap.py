"""The one place that wires callpipe: settings → adapters → handlers → a running service."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import openai
import uvicorn
from aiohttp import web
from fastapi import FastAPI

from services.downloader import core as downloader_core
from services.downloader.handler import DownloadHandler, DownloadPolicy
from services.downloader.slots import DownloadSlots
from services.extractor.handler import ExtractHandler, Extractor, RulesExtractor, load_catalogue
from services.extractor.openai_backend import OpenAIExtractor
from services.transcriber.audio import TranscriptionBackend
from services.transcriber.core import SpeakerMapping, parse_labels
from services.transcriber.handler import TranscribeHandler
from shared import logs
from shared.db import create_engine
from shared.events import Stage, Topic
from shared.kafka import EventProducer, StageWorker, ensure_topics
from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

HTTP_SERVICES = ("ingress", "player", "twilio-simulator")
STAGE_SERVICES = ("downloader", "transcriber", "extractor")
SERVICES = ("ingress", "downloader", "transcriber", "extractor", "player")


def run_service(name: str, settings: Settings) -> None:
    logs.configure(name)
    if name in STAGE_SERVICES:
        asyncio.run(_run_stage(name, settings))
        return
    host, port = {
        "ingress": (settings.ingress_host, settings.ingress_port),
        "player": (settings.player_host, settings.player_port),
        "twilio-simulator": ("127.0.0.1", settings.simulator_port),
    }[name]
    uvicorn.run(_http_app(name, settings), host=host, port=port, log_config=None)


def _http_app(name: str, settings: Settings) -> FastAPI:
    if name == "ingress":
        from services.ingress.app import create_app as ingress_app

        return ingress_app(settings)
    if name == "player":
        from services.player.app import create_app as player_app

        return player_app(settings)
    from callpipe.twilio_simulator import create_app as simulator_app

    return simulator_app(settings)


@asynccontextmanager
async def _health_server(port: int, ready: Callable[[], bool]) -> AsyncIterator[None]:
    """GET /healthz: 200 once the worker consumes (and its model is loaded), else 503."""

    async def healthz(_request: web.Request) -> web.Response:
        if ready():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "starting"}, status=503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def _run_stage(name: str, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncExitStack() as stack:
        worker, _ = await open_stage_worker(name, settings, stack)
        port = {
            "downloader": settings.downloader_health_port,
            "transcriber": settings.transcriber_health_port,
            "extractor": settings.extractor_health_port,
        }[name]
        await stack.enter_async_context(_health_server(port, worker.ready.is_set))
        await worker.run(stop)
        log.info("%s stopped cleanly", name)


def transcription_backend(settings: Settings) -> TranscriptionBackend:
    """The backend the settings choose, ready to use (the local model is loaded here, once)."""
    if settings.transcriber_backend == "openai":
        import openai

        from services.transcriber.openai_api import OpenAIBackend

        client = openai.OpenAI(
            api_key=settings.openai_api_key.get_secret_value() or "unset",
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout_seconds,
            max_retries=settings.openai_max_retries,
        )
        return OpenAIBackend(
            client,
            settings.openai_transcription_model,
            settings.whisper_language,
            settings.openai_max_upload_bytes,
        )
    from services.transcriber.whisper import LocalWhisperBackend

    return LocalWhisperBackend(
        settings.whisper_model,
        settings.whisper_compute_type,
        settings.whisper_threads,
        settings.whisper_language,
    )


async def open_stage_worker(
    name: str, settings: Settings, stack: AsyncExitStack
) -> tuple[StageWorker, ObjectStore]:
    """The stage worker `name` with its object store and producer, closed by `stack`."""
    await ensure_topics(settings)
    store = ObjectStore(settings)
    await store.start()
    stack.push_async_callback(store.stop)
    producer = EventProducer(settings)
    await producer.start()
    stack.push_async_callback(producer.stop)
    return await _stage_worker(name, settings, store, producer, stack), store


async def _stage_worker(
    name: str,
    settings: Settings,
    store: ObjectStore,
    producer: EventProducer,
    stack: AsyncExitStack,
) -> StageWorker:
    if name == "downloader":
        await store.ensure_bucket()
        return StageWorker(
            name=name,
            topics=[Topic.RECORDING_COMPLETED.value],
            handle=await downloader_handler(settings, store, stack),
            settings=settings.model_copy(update={"max_in_flight": settings.download_max_in_flight}),
            producer=producer,
            stage=Stage.RECORDING,
            wants=downloader_core.wants,
        )
    if name == "transcriber":
        backend = await asyncio.to_thread(transcription_backend, settings)
        pool = ThreadPoolExecutor(settings.transcriber_concurrency, "transcribe")
        stack.callback(pool.shutdown)
        speakers = SpeakerMapping(
            inbound=parse_labels(settings.transcriber_inbound_speakers),
            outbound=parse_labels(settings.transcriber_outbound_speakers),
        )
        return StageWorker(
            name=name,
            topics=[Topic.RECORDING_DOWNLOADED.value],
            handle=TranscribeHandler(backend, store, pool, speakers, settings.whisper_language),
            settings=settings,
            producer=producer,
            stage=Stage.TRANSCRIPT,
        )
    return StageWorker(
        name=name,
        topics=[Topic.TRANSCRIPT_READY.value],
        handle=ExtractHandler(
            store, await _extractor(settings, stack), load_catalogue(settings.extractor_catalogue)
        ),
        settings=settings,
        producer=producer,
        stage=Stage.SUMMARY,
    )


async def _extractor(settings: Settings, stack: AsyncExitStack) -> Extractor:
    if settings.extractor_backend == "openai":
        client = openai.AsyncOpenAI(
            # A local OpenAI-compatible server needs no key, but the client insists on one.
            api_key=settings.openai_api_key.get_secret_value() or "unset",
            base_url=settings.openai_base_url,
            max_retries=settings.openai_max_retries,
            timeout=settings.openai_timeout_seconds,
        )
        stack.push_async_callback(client.close)
        return OpenAIExtractor(client, settings.openai_model, settings.openai_answer_attempts)
    rules = RulesExtractor(settings.extractor_language)
    await asyncio.to_thread(rules.warm_up)
    return rules


async def downloader_handler(
    settings: Settings, store: ObjectStore, stack: AsyncExitStack
) -> DownloadHandler:
    http = httpx.AsyncClient(timeout=settings.download_timeout_seconds)
    stack.push_async_callback(http.aclose)
    database = create_engine(settings.effective_database_url)
    stack.push_async_callback(database.dispose)
    slots = DownloadSlots(
        database, settings.download_slots_per_business, settings.download_slot_lease_seconds
    )
    await slots.create_table()
    policy = DownloadPolicy(
        media_format=settings.recording_format,
        allowed_origins=downloader_core.parse_origins(settings.media_allowed_origins),
        max_bytes=settings.download_max_bytes,
        part_bytes=settings.download_part_bytes,
        delete_after_archive=settings.delete_recording_after_archive,
    )
    credentials = (settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value())
    return DownloadHandler(http, credentials, store, slots, policy)
