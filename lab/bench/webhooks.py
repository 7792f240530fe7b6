"""The ingress alone: signed recording status callbacks (`in-progress`: the event goes to
Kafka with acks=all and the dedupe table records it, then the answer; nothing is downloaded
afterwards), at an offered rate for the latency and as fast as possible for throughput."""

from __future__ import annotations

import aiohttp

from lab.bench.load import LoadResult, as_fast_as_possible, offer
from lab.bench.twilio import SignedWebhooks, unregistered_recording
from shared.settings import Settings

CONCURRENCY = 32


async def webhooks_at_rate(
    settings: Settings, http: aiohttp.ClientSession, rate_per_s: float, seconds: float
) -> LoadResult:
    webhooks = SignedWebhooks(settings, http)

    async def post(_index: int) -> None:
        await webhooks.recording_status(
            unregistered_recording(settings.business.default_id), "in-progress"
        )

    return await offer(post, rate_per_s, seconds)


async def webhooks_per_s(settings: Settings, http: aiohttp.ClientSession, count: int) -> LoadResult:
    webhooks = SignedWebhooks(settings, http)

    async def post(_index: int) -> None:
        await webhooks.recording_status(
            unregistered_recording(settings.business.default_id), "in-progress"
        )

    return await as_fast_as_possible(post, count, CONCURRENCY)
