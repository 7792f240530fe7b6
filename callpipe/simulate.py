"""`callpipe simulate-call`: one call through the running stack, as Twilio would place it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from callpipe.stack import local_api_key
from callpipe.twilio_simulator.samples import sample_path
from shared.settings import Settings

FINAL_STATUSES = {"completed", "failed"}


async def place_call(settings: Settings, audio: str, **options: Any) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"http://127.0.0.1:{settings.local.simulator_port}/simulator/calls",
            json={"audio": str(sample_path(audio)), **options},
        )
        response.raise_for_status()
        return str(response.json()["call_sid"])


async def wait_for_call(settings: Settings, call_sid: str, within_seconds: float) -> dict[str, Any]:
    """Polls the player until the call reached a final status; returns the call's detail."""
    url = f"http://127.0.0.1:{settings.player.port}/api/calls/{call_sid}"
    deadline = time.monotonic() + within_seconds
    call: dict[str, Any] = {}
    auth = {"Authorization": f"Bearer {local_api_key(settings)}"}
    async with httpx.AsyncClient(timeout=5, headers=auth) as client:
        while time.monotonic() < deadline:
            response = await client.get(url)
            if response.status_code == 200:
                call = response.json()
                if call["status"] in FINAL_STATUSES:
                    return call
            await asyncio.sleep(0.5)
    raise TimeoutError(
        f"call {call_sid} not finished after {within_seconds:.0f} s; "
        f"last seen: {call or 'not listed'}"
    )
