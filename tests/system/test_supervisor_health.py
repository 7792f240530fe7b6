"""`callpipe up`'s supervisor reads each running service's /healthz and logs every change of
what it says: a service waiting for its broker shows as `connecting`, and `ready` again once
it is back."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from callpipe.stack import Child, Stack, health_state
from shared.settings import Settings

PORT = 27720 + int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
URL = f"http://127.0.0.1:{PORT}/healthz"


class Service:
    """A /healthz answering what the test sets, as a stage worker or the ingress does."""

    def __init__(self) -> None:
        self.answer: tuple[int, dict[str, str]] = (200, {"status": "ready"})

    async def healthz(self, _request: web.Request) -> web.Response:
        status, body = self.answer
        return web.json_response(body, status=status)


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    running = Service()
    app = web.Application()
    app.router.add_get("/healthz", running.healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    yield running
    await runner.cleanup()


async def test_each_change_of_a_service_s_health_is_logged_once(
    service: Service, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = Stack(Settings(data_dir=tmp_path))
    process = await asyncio.create_subprocess_exec("sleep", "60")
    stack.children = [
        Child(
            "extractor",
            [],
            {},
            lambda: asyncio.sleep(0, True),
            URL,
            health_url=URL,
            process=process,
        )
    ]
    try:
        with caplog.at_level(logging.INFO, logger="callpipe.stack"):
            await stack.watch_health()
            service.answer = (503, {"status": "connecting"})
            await stack.watch_health()
            await stack.watch_health()
            service.answer = (200, {"status": "ready"})
            await stack.watch_health()
    finally:
        process.kill()
        await process.wait()
    said = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert said == [
        ("WARNING", "extractor is connecting (was ready)"),
        ("INFO", "extractor is ready (was connecting)"),
    ]


async def test_the_ingress_serving_while_its_broker_is_away_reads_as_connecting(
    service: Service,
) -> None:
    service.answer = (200, {"status": "ok", "broker": "connecting"})
    assert await health_state(URL) == "connecting"
    service.answer = (200, {"status": "ok", "broker": "connected"})
    assert await health_state(URL) == "ready"


async def test_a_service_not_answering_reads_as_starting() -> None:
    assert await health_state(f"http://127.0.0.1:{PORT + 1}/healthz") == "starting"
