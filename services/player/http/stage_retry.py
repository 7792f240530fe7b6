"""Retrying a failed stage of a call: what the retry route and the recording's preparation
share."""

from __future__ import annotations

from fastapi import HTTPException

from services.player import core
from services.player.repository import CallRepository
from shared.call_state import CallState
from shared.events import Stage
from shared.kafka.producer import EventProducer


async def retry_failed_stage(
    call: CallState, stage: Stage, repository: CallRepository, producer: EventProducer
) -> int:
    """Re-emits the failed stage's input with a higher attempt, and returns the attempt; a
    double click retries once (the second finds the stage no longer failed: 409)."""
    try:
        attempt = core.retry_attempt(call, stage)
    except core.NotRetryable as error:
        raise HTTPException(status_code=409, detail=str(error)) from error
    stage_input = await repository.stage_input(call.call_sid, stage)
    if stage_input is None:
        raise HTTPException(status_code=409, detail=f"nothing to retry the {stage} stage on")
    if not await repository.claim_retry(call, stage, attempt):
        raise HTTPException(status_code=409, detail="this stage is being retried already")
    await producer.publish(core.as_retry(stage_input, attempt))
    return attempt
