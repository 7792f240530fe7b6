from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.player.http.deps import State
from shared.health import Health

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz(state: State) -> JSONResponse:
    workers = state.resources.workers
    ready = state.database_ready.is_set() and all(
        worker.state == Health.READY for worker in workers
    )
    if not ready:
        return JSONResponse({"status": Health.CONNECTING}, status_code=503)
    return JSONResponse({"status": Health.READY})
