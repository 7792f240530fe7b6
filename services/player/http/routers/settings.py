"""The business's data settings: which personal data is redacted, how long audio and calls
are kept. Each business reads and replaces its own only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.player.data_settings import DataSettings
from services.player.http.deps import Business, Repository

router = APIRouter(prefix="/api/settings")

REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key (Bearer) or login, or an unknown or revoked one"},
}


@router.get("", responses=REFUSALS, response_description="The business's data settings")
async def get_data_settings(business: Business, repository: Repository) -> DataSettings:
    """The business's data settings; the defaults (`card` redacted, everything kept) until
    it saves its own."""
    return await repository.data_settings(business)


@router.put(
    "",
    responses={
        **REFUSALS,
        403: {"description": "A write the login cookie authenticates, sent by another site"},
    },
    response_description="The data settings now saved",
)
async def put_data_settings(
    document: DataSettings, business: Business, repository: Repository
) -> DataSettings:
    """Replaces the business's data settings with this whole document. A document that is
    not valid is refused with 422, each error's `msg` saying why: `card` left out, a kind
    unknown, repeated or `number`, a retention not an integer in 1..36500, calls kept for
    less time than their audio (a null retention is "kept": a call kept N days cannot keep
    its audio for good), a field missing or unknown."""
    await repository.save_data_settings(business, document)
    return document
