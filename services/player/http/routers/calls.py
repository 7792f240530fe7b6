from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response

from services.player import deletion
from services.player.core import call_view, own_key
from services.player.http.deps import Business, Call, Producer, Repository, Store
from services.player.http.stage_retry import retry_failed_stage
from services.player.repository import CallFilter
from shared.events import Stage
from shared.transcript import Transcript

router = APIRouter(prefix="/api/calls")


@router.get("")
async def list_calls(
    business: Business,
    repository: Repository,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    status: Annotated[str | None, Query(pattern="^(pending|processing|completed|failed)$")] = None,
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


@router.get("/{call_sid}")
async def get_call(call: Call, repository: Repository) -> dict[str, Any]:
    return {**call_view(vars(call)), "timeline": await repository.timeline(call.call_sid)}


@router.get("/{call_sid}/timeline")
async def get_timeline(call: Call, repository: Repository) -> list[dict[str, Any]]:
    return await repository.timeline(call.call_sid)


@router.get("/{call_sid}/transcript")
async def get_transcript(call: Call, store: Store) -> Transcript:
    key = own_key(call, call.transcript_key)
    if not key:
        raise HTTPException(status_code=404, detail="no transcript for this call yet")
    return Transcript.model_validate_json(await store.get(key))


@router.post("/{call_sid}/retry/{stage}", status_code=202)
async def retry_stage(
    call: Call, stage: Stage, repository: Repository, producer: Producer
) -> dict[str, Any]:
    """Re-emits the failed stage's input with a higher attempt; a double click retries
    once (the second finds the stage no longer failed and answers 409)."""
    attempt = await retry_failed_stage(call, stage, repository, producer)
    return {"call_sid": call.call_sid, "stage": stage, "attempt": attempt}


@router.delete("/{call_sid}", status_code=204)
async def delete_call(
    call: Call, repository: Repository, store: Store, producer: Producer
) -> Response:
    """Deletes the call everywhere (`services.player.deletion.delete_call`)."""
    await deletion.delete_call(call, repository, store, producer)
    return Response(status_code=204)
