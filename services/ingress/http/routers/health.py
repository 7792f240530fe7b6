from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.ingress.http.deps import State
from shared.health import Health

router = APIRouter()


@router.get("/healthz")
async def healthz(state: State) -> JSONResponse:
    # Up while the broker is away: webhooks are still stored (the relay publishes later).
    broker = state.resources.relay.broker_state
    if not state.database_ready.is_set():
        return JSONResponse(
            {"status": Health.CONNECTING, "database": Health.CONNECTING, "broker": broker},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "broker": broker})
