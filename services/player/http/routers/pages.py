"""The status page and its login: a session cookie carries the business of the API key it
was opened with."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from services.player.http.deps import AppSettings, Repository, session_business
from services.player.repository import CallRepository

STATIC = Path(__file__).parents[2] / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page(request: Request, repository: Repository) -> Response:
    if not await session_business(request, repository):
        return RedirectResponse("/login", status_code=303)
    return FileResponse(STATIC / "index.html")


@router.get("/settings")
async def settings_page(request: Request, repository: Repository) -> Response:
    if not await session_business(request, repository):
        return RedirectResponse("/login", status_code=303)
    return FileResponse(STATIC / "settings.html")


@router.get("/login")
async def login_page() -> Response:
    return FileResponse(STATIC / "login.html")


@router.post("/login")
async def login(
    request: Request,
    api_key: Annotated[str, Form()],
    repository: Repository,
    settings: AppSettings,
) -> Response:
    lifetime = timedelta(seconds=settings.player.session_lifetime_seconds)
    session_id = await repository.open_session(api_key.strip(), lifetime)
    if session_id is None:
        return RedirectResponse("/login?failed=1", status_code=303)
    await end_session(request, repository)  # one browser, one live session
    request.session["session_id"] = session_id
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
async def logout(request: Request, repository: Repository) -> Response:
    await end_session(request, repository)
    return RedirectResponse("/login", status_code=303)


async def end_session(request: Request, repository: CallRepository) -> None:
    """Ends the session for every copy of its cookie, not just this browser's."""
    session_id = request.session.get("session_id")
    if isinstance(session_id, str):
        await repository.close_session(session_id)
    request.session.clear()
