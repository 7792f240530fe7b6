"""What the ingress and the player serve only on their internal port, when they have one:
/metrics and the API documentation. The public port answers those paths exactly as it answers
any unknown path, so they are neither served nor seen to exist behind it (decision 1104)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

METRICS_PATH = "/metrics"


def internal_paths(app: FastAPI) -> frozenset[str]:
    """/metrics and every page of the app's generated documentation."""
    documentation = (
        app.openapi_url,
        app.docs_url,
        app.swagger_ui_oauth2_redirect_url,
        app.redoc_url,
    )
    return frozenset({METRICS_PATH, *filter(None, documentation)})


def refused(
    path: str, listener_port: int | None, internal_port: int, paths: frozenset[str]
) -> bool:
    # "/docs/" too: the router would redirect it to "/docs", showing that the page exists.
    return (path.rstrip("/") or "/") in paths and listener_port != internal_port


class InternalOnly:
    """ASGI middleware, outermost: on any listener but `internal_port`, `paths` are 404."""

    def __init__(self, app: ASGIApp, internal_port: int, paths: frozenset[str]) -> None:
        self._app = app
        self._internal_port = internal_port
        self._paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server") or (None, None)
            if refused(scope["path"], server[1], self._internal_port, self._paths):
                await JSONResponse({"detail": "Not Found"}, 404)(scope, receive, send)
                return
        await self._app(scope, receive, send)
