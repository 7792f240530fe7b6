"""Player: projects every pipeline event into the status table; serves the API and playback."""

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from services.player import core
from services.player.core import CallState
from services.player.repository import CallRepository, create_engine, migrate
from shared.events import AnyEvent, Event, Topic
from shared.kafka import EventProducer, StageWorker, ensure_topics
from shared.settings import Settings
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

PROJECTED_TOPICS = [t.value for t in Topic]
RETRY_AFTER_SECONDS = 2


def call_view(state: CallState) -> dict[str, Any]:
    view = dataclasses.asdict(state)
    view["status"] = state.status
    view["created_at"] = state.created_at.isoformat()
    view["updated_at"] = state.updated_at.isoformat()
    return view


class Projector:
    """The player's stage handler: applies each event to the status table."""

    def __init__(self, repository: CallRepository) -> None:
        self._repository = repository

    async def __call__(self, event: AnyEvent) -> Sequence[Event]:
        if not await self._repository.apply(event):
            log.info("%s already applied", event.event_type)
        return []


def create_app(settings: Settings) -> FastAPI:
    database_url = settings.effective_database_url
    engine = create_engine(database_url)
    repository = CallRepository(engine)
    store = ObjectStore(settings)
    producer = EventProducer(settings)
    worker = StageWorker(
        name="player",
        topics=PROJECTED_TOPICS,
        handle=Projector(repository),
        settings=settings,
        producer=producer,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, database_url)
        await ensure_topics(settings)
        await store.start()
        await producer.start()
        stop = asyncio.Event()
        consuming = asyncio.create_task(worker.run(stop))
        try:
            yield
        finally:
            stop.set()
            await consuming
            await producer.stop()
            await store.stop()
            await engine.dispose()

    async def existing_call(call_sid: str) -> CallState:
        state = await repository.get(call_sid)
        if state is None:
            raise HTTPException(status_code=404, detail="no such call")
        return state

    Call = Annotated[CallState, Depends(existing_call)]
    app = FastAPI(title="callpipe player", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> Response:
        if not worker.ready.is_set():
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/api/calls")
    async def list_calls(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        states = await repository.page(limit, offset)
        return {"calls": [call_view(s) for s in states], "limit": limit, "offset": offset}

    @app.get("/api/calls/{call_sid}")
    async def get_call(call: Call) -> dict[str, Any]:
        return {**call_view(call), "timeline": await repository.timeline(call.call_sid)}

    @app.api_route("/api/recordings/{call_sid}/file", methods=["GET", "HEAD"])
    async def recording_file(call: Call, request: Request) -> Response:
        """200/206 with the audio; 202 + Retry-After while it is on its way; 404 when the call
        has no recording; 410 with the reason when the download failed for good. Never
        enqueues work."""
        match call.recording_status:
            case core.COMPLETED if call.recording_key:
                return await _audio(call.recording_key, request)
            case core.PENDING | core.PROCESSING:
                return JSONResponse(
                    {"status": call.recording_status, "detail": "recording is being prepared"},
                    status_code=202,
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            case core.FAILED:
                return JSONResponse(
                    {"status": "failed", "detail": call.last_error}, status_code=410
                )
        raise HTTPException(status_code=404, detail="no recording exists for this call")

    async def _audio(key: str, request: Request) -> Response:
        info = await store.head(key)
        if info is None:
            raise HTTPException(status_code=404, detail="recording object is missing")
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": info.etag,
            "Content-Length": str(info.size),
        }
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers, media_type=info.content_type)
        return StreamingResponse(store.stream(key), headers=headers, media_type=info.content_type)

    return app
