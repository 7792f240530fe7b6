"""A call's export, for a subject access request (decision 1207)."""

from __future__ import annotations

from fastapi import APIRouter

from services.player.core import call_view, own_key
from services.player.export import CallExport, call_export
from services.player.http.deps import AppSettings, Call, Repository, Store
from shared.events import utc_now
from shared.transcript import Transcript

router = APIRouter(prefix="/api/calls")


@router.get(
    "/{call_sid}/export",
    responses={
        401: {"description": "No API key (Bearer) or login, or an unknown or revoked one"},
        404: {"description": "No such call: deleted, never known, or another business's"},
    },
)
async def export_call(
    call: Call, repository: Repository, store: Store, settings: AppSettings
) -> CallExport:
    """Everything held about the call, in one document: its row, timeline, transcript,
    summary, lead with evidence, the data settings that applied, and the link to its audio."""
    key = own_key(call, call.transcript_key)
    raw = await store.get_if_exists(key) if key else None
    return call_export(
        call_view(vars(call)),
        await repository.timeline(call.call_sid),
        Transcript.model_validate_json(raw) if raw else None,
        await repository.data_settings(call.business_id),
        f"{settings.player.browser_url.rstrip('/')}/api/recordings/{call.call_sid}/file",
        utc_now(),
    )
