"""A call's recording: made sure to be on its way, and played back (Range requests, or a
redirect to the object store that serves the same bytes)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from services.player import ranges
from services.player.core import Playback, own_key, playback
from services.player.http.deps import (
    RETRY_AFTER_SECONDS,
    AppSettings,
    Call,
    Producer,
    Repository,
    Store,
)
from services.player.http.stage_retry import retry_failed_stage
from services.player.retention import AUDIO_EXPIRED
from shared.call_state import CallState, StageStatus
from shared.events import Stage
from shared.storage import ObjectInfo, ObjectStore

router = APIRouter(prefix="/api/recordings")


@router.post("/{call_sid}/prepare", status_code=202)
async def prepare_recording(
    call: Call, response: Response, repository: Repository, producer: Producer
) -> dict[str, Any]:
    """Makes sure the recording is on its way: idempotent, a double click queues one job."""
    if call.audio_expired_at is not None:
        raise HTTPException(status_code=410, detail=AUDIO_EXPIRED)
    status = call.recording_status
    if status == StageStatus.COMPLETED:
        response.status_code = 200
    elif status == StageStatus.FAILED:
        try:
            await retry_failed_stage(call, Stage.RECORDING, repository, producer)
        except HTTPException as error:
            if error.status_code != 409:  # 409: another request queued it already
                raise
        status = StageStatus.PENDING
    elif status == StageStatus.NO_RECORDING:
        raise HTTPException(status_code=404, detail="no recording exists for this call")
    return {"call_sid": call.call_sid, "recording_status": status}


@router.api_route(
    "/{call_sid}/file",
    methods=["GET", "HEAD"],
    responses={
        307: {"description": "GET of the whole recording or of one byte range: fetch "
              "it (same Range) from this short-lived presigned object-store URL"},
        206: {"description": "Several ranges (multipart/byteranges); HEAD of a range"},
        409: {"description": "Not redacted: `status` `redacting` (with Retry-After) while "
              "the transcriber redacts it, `not_redacted` when it never will be"},
    },
)  # fmt: skip
async def recording_file(
    call: Call, request: Request, store: Store, settings: AppSettings
) -> Response:
    """200/206 with the audio, or 307 to a presigned object-store URL that serves it, once
    the recording is redacted; 202 + Retry-After while it is on its way; 409 + Retry-After
    while it is being redacted, 409 without when it never was (its transcription failed);
    404 when the call has no recording; 410 with the reason when the download failed for
    good or the business's retention deleted the audio. Never enqueues work."""
    if call.audio_expired_at is not None:
        return _expired(call.audio_expired_at, call.audio_expired_reason)
    match call.recording_status:
        case StageStatus.COMPLETED if key := own_key(call, call.recording_key):
            match playback(call, key):
                case Playback.READY:
                    url_seconds = settings.player.playback_url_seconds
                    return await _audio(store, key, request, url_seconds)
                case Playback.REDACTING:
                    return JSONResponse(
                        {"status": Playback.REDACTING, "detail": "the recording is being redacted"},
                        status_code=409,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                    )
            return JSONResponse({"status": Playback.NOT_REDACTED, "detail": _unredacted(call)}, 409)
        case StageStatus.PENDING | StageStatus.PROCESSING:
            return JSONResponse(
                {"status": call.recording_status, "detail": "recording is being prepared"},
                status_code=202,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        case StageStatus.FAILED:
            return JSONResponse({"status": "failed", "detail": call.last_error}, status_code=410)
    raise HTTPException(status_code=404, detail="no recording exists for this call")


def _unredacted(call: CallState) -> str:
    if call.transcript_status == StageStatus.FAILED:
        return (
            "the recording is not played: its transcription failed, so it was not redacted "
            f"(retry the transcript stage): {call.transcript_error}"
        )
    return "the recording is not played: it was not redacted"


def _expired(expired_at: datetime, reason: str | None) -> JSONResponse:
    """410: the business's retention deleted the call's audio; when, and by which rule."""
    return JSONResponse(
        {
            "status": "expired",
            "detail": AUDIO_EXPIRED,
            "expired_at": expired_at.isoformat(),
            "reason": reason,
        },
        status_code=410,
    )


async def _audio(store: ObjectStore, key: str, request: Request, url_seconds: int) -> Response:
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
        url = await store.presigned_get(key, url_seconds, info.content_type)
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
    return _multipart(store, key, info, wanted, headers, head)


def _multipart(
    store: ObjectStore,
    key: str,
    info: ObjectInfo,
    wanted: list[ranges.ByteRange],
    headers: dict[str, str],
    head: bool,
) -> Response:
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
