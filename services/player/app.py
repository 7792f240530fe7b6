"""Player: projects every pipeline event into the status table; serves the API, playback and
the status page. Every request is scoped to one business: another business's call answers
404, exactly like a call that does not exist."""

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from cachetools import TTLCache
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from services.player import core, origins, ranges
from services.player.core import CallState
from services.player.repository import CallFilter, CallRepository, key_digest, migrate
from shared.body_limit import BodyLimit
from shared.db import create_engine, database_unreachable, database_url_for_logs
from shared.events import (
    TWILIO_NAMESPACE,
    AnyEvent,
    CallDeleted,
    Event,
    RecordingDownloaded,
    Stage,
    TranscriptReady,
    call_correlation_id,
    key_of_business,
)
from shared.kafka.connection import probe_broker
from shared.kafka.producer import EventProducer, start_producer_patiently
from shared.kafka.topics import all_topics
from shared.kafka.worker import StageWorker
from shared.logs import call_context
from shared.retry import wait_until_reached
from shared.settings import Settings
from shared.shutdown import Shutdown
from shared.storage import ObjectStore
from shared.transcript import Transcript

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2
STATIC = Path(__file__).parent / "static"


def projected_topics() -> list[str]:
    return [t for t in all_topics() if not t.endswith(".dlq")]


CALL_FIELDS = tuple(field.name for field in dataclasses.fields(CallState))
_stage_statuses = itemgetter(*core.STATUS_FIELDS)
_stage_errors = itemgetter(*core.ERROR_FIELDS)


def call_view(call: Mapping[str, Any]) -> dict[str, Any]:
    """A call as the API shows it, from its fields: a status table row (the call list) or a
    CallState's (`vars(state)`)."""
    view = {name: call[name] for name in CALL_FIELDS}
    statuses = _stage_statuses(call)
    view["status"] = core.overall_status(statuses)
    view["last_error"] = core.last_error(statuses, _stage_errors(call))
    view["lead"] = json.loads(view.pop("lead_json")) if view["lead_json"] else None
    view["created_at"] = call["created_at"].isoformat()
    view["updated_at"] = call["updated_at"].isoformat()
    return view


def stored_objects(event: AnyEvent) -> list[str]:
    """The keys of the objects the event announces as stored."""
    match event:
        case RecordingDownloaded():
            return recording_objects(event.object_key)
        case TranscriptReady():
            return [event.transcript_key]
    return []


def recording_objects(recording_key: str) -> list[str]:
    """The audio and the downloader's record of it."""
    return [recording_key, f"{recording_key}.manifest.json"]


class Projector:
    """The player's handler: applies the events of a poll to the status table in one
    transaction, or one event in its own (the runtime's fallback when a batch fails). An
    event of a deleted call is not applied, and the objects it announces are deleted: a stage
    that was still at work when the call was deleted stored them after the deletion."""

    def __init__(self, repository: CallRepository, store: ObjectStore) -> None:
        self._repository = repository
        self._store = store

    async def __call__(self, event: AnyEvent) -> Sequence[Event]:
        applied = await self._repository.apply(event)
        _log_applied(event, applied)
        if not applied:
            await self._delete_objects_of_deleted_calls([event])
        return []

    async def apply_batch(self, events: Sequence[AnyEvent]) -> Sequence[Event]:
        applied = await self._repository.apply_batch(events)
        for event, changed in zip(events, applied, strict=True):
            with call_context(event.call_sid, str(event.event_id)):
                _log_applied(event, changed)
        ignored = [event for event, changed in zip(events, applied, strict=True) if not changed]
        await self._delete_objects_of_deleted_calls(ignored)
        return []

    async def _delete_objects_of_deleted_calls(self, ignored: Sequence[AnyEvent]) -> None:
        announcing = [event for event in ignored if stored_objects(event)]
        if not announcing:
            return
        deleted = await self._repository.deleted_among({e.call_sid for e in announcing})
        for event in announcing:
            if event.call_sid in deleted:
                with call_context(event.call_sid, str(event.event_id)):
                    for key in stored_objects(event):
                        await self._store.delete(key)
                    log.info(
                        "deleted the objects %s announced: its call is deleted", event.event_type
                    )


def _log_applied(event: AnyEvent, applied: bool) -> None:
    if applied:
        log.info("%s applied", event.event_type)
    else:
        log.info("%s already applied (or the call was deleted)", event.event_type)


def create_app(settings: Settings) -> FastAPI:
    database_url = settings.effective_database_url
    engine = create_engine(database_url)
    repository = CallRepository(engine)
    store = ObjectStore(settings)
    producer = EventProducer(settings)
    projector = Projector(repository, store)
    workers = [
        StageWorker(
            name="player",
            topics=projected_topics(),
            handle=projector,
            settings=settings,
            producer=producer,
            handle_batch=projector.apply_batch,
        )
        for _ in range(settings.player_consumers)
    ]

    database_ready = asyncio.Event()

    async def prepare_database() -> None:
        await asyncio.to_thread(migrate, database_url)
        if settings.api_key.get_secret_value():
            await repository.add_api_key(
                settings.default_business_id, settings.api_key.get_secret_value(), "configured"
            )
        database_ready.set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        shutdown = Shutdown("player", settings)
        # A configuration error fails the start; a database or broker not reachable yet is
        # waited for, while /healthz says `connecting` and the API answers 503.
        try:
            await prepare_database()
        except Exception as error:
            if not database_unreachable(error):
                raise
        await store.start()
        with contextlib.suppress(KafkaError, OSError):
            await probe_broker(settings)

        async def consume() -> None:
            if not database_ready.is_set() and not await wait_until_reached(
                f"database {database_url_for_logs(database_url)}",
                prepare_database,
                database_unreachable,
                shutdown.stop,
                settings.retry_base_seconds,
                settings.retry_max_seconds,
            ):
                return
            if await start_producer_patiently(
                settings, producer, shutdown.stop, create_topics=True
            ):
                await asyncio.gather(*(worker.run(shutdown.stop, shutdown) for worker in workers))

        consuming = asyncio.create_task(consume())
        try:
            yield
        finally:
            # uvicorn handles the signals: the stop is bounded here, without the last resort.
            shutdown.begin(last_resort=False)
            await consuming
            await shutdown.within_bound("closing the producer", producer.stop())
            await shutdown.within_bound("closing the object store client", store.stop())
            repository.close()
            await shutdown.within_bound("closing the database", engine.dispose())
            shutdown.finished()

    bearer = HTTPBearer(auto_error=False)
    known_keys: TTLCache[str, str] = TTLCache(maxsize=10_000, ttl=settings.api_key_cache_seconds)

    async def business_of_key(api_key: str) -> str | None:
        """The key's business, remembered for `api_key_cache_seconds`: an API client sends
        its key with every request. An unknown key is not remembered (it may be added)."""
        digest = key_digest(api_key)
        business = known_keys.get(digest)
        if business is None:
            business = await repository.business_of_key(api_key)
            if business is not None:
                known_keys[digest] = business
        return business

    session_lifetime = timedelta(seconds=settings.session_lifetime_seconds)
    own_origin = origins.origin_of(settings.effective_player_public_url)
    if own_origin is None:
        raise ValueError("CALLPIPE_PLAYER_PUBLIC_URL must be an http(s) URL")

    async def database_prepared(request: Request) -> None:
        if not database_ready.is_set() and request.url.path != "/healthz":
            raise HTTPException(
                status_code=503,
                detail="waiting for the database",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )

    async def from_own_pages(request: Request) -> None:
        """Refuses a write that only a cookie authenticates unless the player's own pages
        sent it (cross-site request forgery, login included)."""
        headers = request.headers
        if origins.needs_own_origin(
            request.method, headers.get("authorization")
        ) and not origins.from_own_origin(
            headers.get("origin"), headers.get("referer"), own_origin
        ):
            raise HTTPException(status_code=403, detail="cross-origin request refused")

    async def session_business(request: Request) -> str | None:
        """The business of the request's login session, if the session is still live."""
        session_id = request.session.get("session_id")
        if not isinstance(session_id, str):
            return None
        business = await repository.session_business(session_id)
        if business is None:
            request.session.clear()
        return business

    async def current_business(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        """The business of the API key (Bearer) or of the page's login session."""
        if credentials is not None:
            business = await business_of_key(credentials.credentials)
            if business is None:
                raise HTTPException(status_code=401, detail="unknown API key")
            return business
        business = await session_business(request)
        if not business:
            raise HTTPException(
                status_code=401,
                detail="an API key (Authorization: Bearer) or a login is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return business

    Business = Annotated[str, Depends(current_business)]

    def own_key(call: CallState, key: str | None) -> str | None:
        """The row's object key, only when under the call's own business prefix: even a
        poisoned status row never makes the player read, presign or delete another's."""
        return key if key and key_of_business(key, call.business_id) else None

    async def business_call(call_sid: str, business: Business) -> CallState:
        state = await repository.get(call_sid, business)
        if state is None:
            raise HTTPException(status_code=404, detail="no such call")
        return state

    Call = Annotated[CallState, Depends(business_call)]

    app = FastAPI(
        title="callpipe player",
        summary="Status of every call, its transcript, summary, lead and audio.",
        lifespan=lifespan,
        dependencies=[Depends(database_prepared), Depends(from_own_pages)],
    )
    app.add_middleware(BodyLimit, max_bytes=settings.player_max_body_bytes)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret.get_secret_value() or secrets.token_urlsafe(32),
        session_cookie="callpipe_session",
        max_age=settings.session_lifetime_seconds,
        same_site="strict",
        https_only=own_origin.startswith("https:"),
    )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        ready = database_ready.is_set() and all(worker.state == "ready" for worker in workers)
        if not ready:
            return JSONResponse({"status": "connecting"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/api/calls")
    async def list_calls(
        business: Business,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
        status: Annotated[
            str | None, Query(pattern="^(pending|processing|completed|failed)$")
        ] = None,
        stage: Stage | None = None,
        stage_status: Annotated[str | None, Query(pattern="^[a-z_]{1,16}$")] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        phone: Annotated[str | None, Query(pattern=r"^\+?[0-9]{1,20}$")] = None,
        q: Annotated[
            str | None,
            Query(max_length=200, pattern=r"^[^\x00-\x1f]+$", description="Text search"),
        ] = None,
    ) -> dict[str, Any]:
        where = CallFilter(status, stage, stage_status, since, until, phone, q)
        rows, total = await repository.page_rows(limit, offset, business, where)
        return {
            "calls": [call_view(row) for row in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    @app.get("/api/calls/{call_sid}")
    async def get_call(call: Call) -> dict[str, Any]:
        return {**call_view(vars(call)), "timeline": await repository.timeline(call.call_sid)}

    @app.get("/api/calls/{call_sid}/timeline")
    async def get_timeline(call: Call) -> list[dict[str, Any]]:
        return await repository.timeline(call.call_sid)

    @app.get("/api/calls/{call_sid}/transcript")
    async def get_transcript(call: Call) -> Transcript:
        key = own_key(call, call.transcript_key)
        if not key:
            raise HTTPException(status_code=404, detail="no transcript for this call yet")
        return Transcript.model_validate_json(await store.get(key))

    @app.post("/api/calls/{call_sid}/retry/{stage}", status_code=202)
    async def retry_stage(call: Call, stage: Stage) -> dict[str, Any]:
        """Re-emits the failed stage's input with a higher attempt; a double click retries
        once (the second finds the stage no longer failed and answers 409)."""
        try:
            attempt = core.retry_attempt(call, stage)
        except core.NotRetryable as error:
            raise HTTPException(status_code=409, detail=str(error)) from error
        stage_input = await repository.stage_input(call.call_sid, stage)
        if stage_input is None:
            raise HTTPException(status_code=409, detail=f"nothing to retry the {stage} stage on")
        if not await repository.claim_retry(call, stage, attempt):
            raise HTTPException(status_code=409, detail="this stage is being retried already")
        await producer.publish(core.as_retry(stage_input, attempt))
        return {"call_sid": call.call_sid, "stage": stage, "attempt": attempt}

    @app.post("/api/recordings/{call_sid}/prepare", status_code=202)
    async def prepare_recording(call: Call, response: Response) -> dict[str, Any]:
        """Makes sure the recording is on its way: idempotent, a double click queues one job."""
        status = call.recording_status
        if status == core.COMPLETED:
            response.status_code = 200
        elif status == core.FAILED:
            try:
                await retry_stage(call, Stage.RECORDING)
            except HTTPException as error:
                if error.status_code != 409:  # 409: another request queued it already
                    raise
            status = core.PENDING
        elif status == core.NO_RECORDING:
            raise HTTPException(status_code=404, detail="no recording exists for this call")
        return {"call_sid": call.call_sid, "recording_status": status}

    @app.delete("/api/calls/{call_sid}", status_code=204)
    async def delete_call(call: Call) -> Response:
        """Deletes the audio and transcript objects and the row; downstream consumers get a
        `call.deleted` tombstone."""
        keys = [own_key(call, call.transcript_key)]
        if recording := own_key(call, call.recording_key):
            keys += recording_objects(recording)
        for key in filter(None, keys):
            await store.delete(key)
        await repository.delete_call(call.call_sid)
        await producer.publish(
            CallDeleted(
                event_id=uuid.uuid5(TWILIO_NAMESPACE, f"{call.call_sid}:deleted"),
                call_sid=call.call_sid,
                business_id=call.business_id,
                correlation_id=call_correlation_id(call.call_sid),
            )
        )
        return Response(status_code=204)

    @app.api_route(
        "/api/recordings/{call_sid}/file",
        methods=["GET", "HEAD"],
        responses={
            307: {"description": "GET of the whole recording or of one byte range: fetch "
                  "it (same Range) from this short-lived presigned object-store URL"},
            206: {"description": "Several ranges (multipart/byteranges); HEAD of a range"},
        },
    )  # fmt: skip
    async def recording_file(call: Call, request: Request) -> Response:
        """200/206 with the audio, or 307 to a presigned object-store URL that serves it;
        202 + Retry-After while it is on its way; 404 when the call has no recording; 410
        with the reason when the download failed for good. Never enqueues work."""
        match call.recording_status:
            case core.COMPLETED if key := own_key(call, call.recording_key):
                return await _audio(key, request)
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
        headers = {"Accept-Ranges": "bytes", "ETag": info.etag, "Cache-Control": "private"}
        range_header = request.headers.get("range")
        if_range = request.headers.get("if-range")
        honoured = range_header if if_range in (None, info.etag) else None
        try:
            wanted = ranges.resolve(honoured, info.size)
        except ranges.Unsatisfiable as error:
            return JSONResponse(
                {"detail": str(error)},
                status_code=416,
                headers={**headers, "Content-Range": f"bytes */{info.size}"},
            )
        head = request.method == "HEAD"
        if not head and ranges.store_answers_alike(range_header, wanted):
            # The bytes go from the object store to the client, not through this process.
            url = await store.presigned_get(key, settings.playback_url_seconds, info.content_type)
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
        if wanted is None:
            headers["Content-Length"] = str(info.size)
            body = None if head else store.stream(key)
            return _stream(200, body, headers, info.content_type)
        if len(wanted) == 1:
            part = wanted[0]
            headers["Content-Range"] = part.content_range(info.size)
            headers["Content-Length"] = str(part.length)
            body = None if head else store.stream(key, (part.start, part.end))
            return _stream(206, body, headers, info.content_type)
        boundary = secrets.token_hex(12)
        parts = [
            (f"--{boundary}\r\nContent-Type: {info.content_type}\r\n"
             f"Content-Range: {part.content_range(info.size)}\r\n\r\n").encode()
            for part in wanted
        ]  # fmt: skip
        closing = f"\r\n--{boundary}--\r\n".encode()
        length = sum(len(p) for p in parts) + sum(p.length for p in wanted)
        length += 2 * (len(wanted) - 1) + len(closing)
        headers["Content-Length"] = str(length)

        async def multipart() -> AsyncIterator[bytes]:
            for index, (preamble, part) in enumerate(zip(parts, wanted, strict=True)):
                yield (b"\r\n" if index else b"") + preamble
                async for chunk in store.stream(key, (part.start, part.end)):
                    yield chunk
            yield closing

        media = f"multipart/byteranges; boundary={boundary}"
        return _stream(206, None if head else multipart(), headers, media)

    def _stream(
        status: int, body: AsyncIterator[bytes] | None, headers: dict[str, str], media: str
    ) -> Response:
        if body is None:
            return Response(status_code=status, headers=headers, media_type=media)
        return StreamingResponse(body, status_code=status, headers=headers, media_type=media)

    @app.get("/", include_in_schema=False)
    async def page(request: Request) -> Response:
        if not await session_business(request):
            return RedirectResponse("/login", status_code=303)
        return FileResponse(STATIC / "index.html")

    @app.get("/login", include_in_schema=False)
    async def login_page() -> Response:
        return FileResponse(STATIC / "login.html")

    @app.post("/login", include_in_schema=False)
    async def login(request: Request, api_key: Annotated[str, Form()]) -> Response:
        session_id = await repository.open_session(api_key.strip(), session_lifetime)
        if session_id is None:
            return RedirectResponse("/login?failed=1", status_code=303)
        await end_session(request)  # one browser, one live session
        request.session["session_id"] = session_id
        return RedirectResponse("/", status_code=303)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await end_session(request)
        return RedirectResponse("/login", status_code=303)

    async def end_session(request: Request) -> None:
        """Ends the session for every copy of its cookie, not just this browser's."""
        session_id = request.session.get("session_id")
        if isinstance(session_id, str):
            await repository.close_session(session_id)
        request.session.clear()

    return app
