"""The whole business, deleted at its own request (decision 1207)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from services.player.http.deps import Business, Deleter, State

router = APIRouter(prefix="/api/business")


@router.delete(
    "",
    responses={
        400: {"description": "`confirm` is not the business's id"},
        401: {"description": "No API key (Bearer) or login, or an unknown or revoked one"},
        403: {"description": "A write the login cookie authenticates, sent by another site"},
    },
)
async def delete_business(
    business: Business,
    deleter: Deleter,
    state: State,
    confirm: Annotated[str, Query(max_length=64, description="The business's id, again.")],
) -> dict[str, Any]:
    """Deletes the business: every call as `DELETE /api/calls/{call_sid}` does (a hundred
    at a time), then its data settings, login sessions and API keys, this one included.
    Cut short, it can be sent again (while the key is kept) and finishes what is left; the
    operator's `callpipe business delete` does the same."""
    if confirm != business:
        raise HTTPException(status_code=400, detail="confirm must be the business's id")
    deleted = await deleter.delete_business(business)
    state.known_keys.forget_business(business)
    return asdict(deleted)
