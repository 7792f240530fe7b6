"""The player's application, assembled: middleware, routers, lifespan."""

from __future__ import annotations

import secrets

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from services.player import origins
from services.player.config import PlayerConfig
from services.player.http.deps import database_prepared, from_own_pages
from services.player.http.lifespan import lifespan
from services.player.http.routers import business, calls, export, health, pages, recordings
from services.player.http.routers import settings as data_settings
from services.player.http.routers.pages import STATIC
from services.player.http.state import KnownKeys, PlayerResources, PlayerState
from shared.body_limit import BodyLimit


def create_app(settings: PlayerConfig, resources: PlayerResources) -> FastAPI:
    own_origin = origins.origin_of(settings.player.browser_url)
    if own_origin is None:
        raise ValueError("CALLPIPE_PLAYER_PUBLIC_URL must be an http(s) URL")
    state = PlayerState(
        settings,
        resources,
        own_origin,
        KnownKeys(resources.repository, settings.player.api_key_cache_seconds),
    )
    app = FastAPI(
        title="callpipe player",
        summary="Status of every call, its transcript, summary, lead and audio.",
        lifespan=lifespan(state),
        dependencies=[Depends(database_prepared), Depends(from_own_pages)],
    )
    app.state.player = state
    app.add_middleware(BodyLimit, max_bytes=settings.player.max_body_bytes)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.player.session_secret.get_secret_value() or secrets.token_urlsafe(32),
        session_cookie="callpipe_session",
        max_age=settings.player.session_lifetime_seconds,
        same_site="strict",
        https_only=own_origin.startswith("https:"),
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in (
        health.router,
        calls.router,
        export.router,
        recordings.router,
        data_settings.router,
        business.router,
        pages.router,
    ):
        app.include_router(router)
    return app
