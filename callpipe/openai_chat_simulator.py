"""A LOCAL SIMULATOR of OpenAI's chat-completions endpoint, for tests only: never production.

It speaks `POST /v1/chat/completions` as the real API does, so the extractor's real `openai`
client code path runs against it. It answers from a script given by the test: an answer's
content, or an HTTP error (such as 429 with `Retry-After`); it records every request.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Reply:
    """One scripted reply: `content` as the assistant's message, or an error `status`."""

    content: str | None = None
    status: int = 200
    retry_after: str | None = None


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class OpenAISimulator:
    script: deque[Reply] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def then(self, *replies: Reply) -> None:
        self.script.extend(replies)

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(RecordedRequest(body, dict(request.headers)))
        if not self.script:
            return _error(500, "the simulator has no scripted reply left", "server_error")
        reply = self.script.popleft()
        if reply.status != 200:
            response = _error(reply.status, f"simulated HTTP {reply.status}", "rate_limit_exceeded")
            if reply.retry_after is not None:
                response.headers["Retry-After"] = reply.retry_after
            return response
        return web.json_response(
            {
                "id": f"chatcmpl-sim-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": f"{body['model']}-sim-2026-01-01",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        return app


def _error(status: int, message: str, code: str) -> web.Response:
    error = {"error": {"message": message, "type": "simulated", "param": None, "code": code}}
    return web.Response(status=status, text=json.dumps(error), content_type="application/json")


@asynccontextmanager
async def serve(simulator: OpenAISimulator) -> AsyncIterator[str]:
    """Runs the simulator on a free local port; yields its base URL (ending in /v1)."""
    runner = web.AppRunner(simulator.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
