"""The player's request dependencies, in one place: what a route declares it needs."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.player import origins
from services.player.config import PlayerConfig
from services.player.deletion import Deleter as CallDeleter
from services.player.http.state import PlayerState
from services.player.repository import CallRepository
from shared.call_state import CallState
from shared.kafka.producer import EventProducer
from shared.storage import ObjectStore

RETRY_AFTER_SECONDS = 2


def player_state(request: Request) -> PlayerState:
    return cast(PlayerState, request.app.state.player)


State = Annotated[PlayerState, Depends(player_state)]


def settings(state: State) -> PlayerConfig:
    return state.settings


def repository(state: State) -> CallRepository:
    return state.resources.repository


def store(state: State) -> ObjectStore:
    return state.resources.store


def producer(state: State) -> EventProducer:
    return state.resources.producer


def deleter(state: State) -> CallDeleter:
    return state.deleter


AppSettings = Annotated[PlayerConfig, Depends(settings)]
Repository = Annotated[CallRepository, Depends(repository)]
Store = Annotated[ObjectStore, Depends(store)]
Producer = Annotated[EventProducer, Depends(producer)]
Deleter = Annotated[CallDeleter, Depends(deleter)]


async def database_prepared(request: Request, state: State) -> None:
    if not state.database_ready.is_set() and request.url.path != "/healthz":
        raise HTTPException(
            status_code=503,
            detail="waiting for the database",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


async def from_own_pages(request: Request, state: State) -> None:
    """Refuses a write that only a cookie authenticates unless the player's own pages
    sent it (cross-site request forgery, login included)."""
    headers = request.headers
    if origins.needs_own_origin(
        request.method, headers.get("authorization")
    ) and not origins.from_own_origin(
        headers.get("origin"), headers.get("referer"), state.own_origin
    ):
        raise HTTPException(status_code=403, detail="cross-origin request refused")


async def session_business(request: Request, repository: CallRepository) -> str | None:
    """The business of the request's login session, if the session is still live."""
    session_id = request.session.get("session_id")
    if not isinstance(session_id, str):
        return None
    business = await repository.session_business(session_id)
    if business is None:
        request.session.clear()
    return business


bearer = HTTPBearer(auto_error=False)


async def current_business(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    state: State,
) -> str:
    """The business of the API key (Bearer) or of the page's login session."""
    if credentials is not None:
        business = await state.known_keys.business_of(credentials.credentials)
        if business is None:
            raise HTTPException(status_code=401, detail="unknown API key")
        return business
    business = await session_business(request, state.resources.repository)
    if not business:
        raise HTTPException(
            status_code=401,
            detail="an API key (Authorization: Bearer) or a login is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return business


Business = Annotated[str, Depends(current_business)]


async def business_call(call_sid: str, business: Business, repository: Repository) -> CallState:
    state = await repository.get(call_sid, business)
    if state is None:
        raise HTTPException(status_code=404, detail="no such call")
    return state


Call = Annotated[CallState, Depends(business_call)]
