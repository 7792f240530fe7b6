"""Bodies over the ingress's cap are refused before they are read: a client sending hundreds
of megabytes, with or without a Content-Length, gets 413 at once and the server keeps none of
it. The client is a raw socket, as an attacker's would be: it sends while it reads."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from callpipe.bootstrap import ingress_app
from shared.settings import Settings
from tests.support.ingress import INGRESS_PORT, serving

HUGE = 256 * 1024**2
CHUNK = b"x" * (64 * 1024)
MIB = 1024**2


def server_rss() -> int:
    """This process's resident memory: the ingress under test serves from it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def send_body(writer: asyncio.StreamWriter, *, chunked: bool) -> None:
    """Up to HUGE bytes, until the server hangs up."""
    sent = 0
    try:
        while sent < HUGE:
            if chunked:
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
            else:
                writer.write(CHUNK)
            sent += len(CHUNK)
            await writer.drain()
    except ConnectionError:
        pass


async def post_huge(*, chunked: bool) -> tuple[bytes, float]:
    """An unsigned webhook POST of HUGE bytes; the response's status line and how long it
    took to come."""
    reader, writer = await asyncio.open_connection("127.0.0.1", INGRESS_PORT)
    length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % HUGE
    started = time.monotonic()
    writer.write(
        b"POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n" + length + b"\r\n\r\n"
    )
    sending = asyncio.create_task(send_body(writer, chunked=chunked))
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=60)
        took = time.monotonic() - started
    finally:
        sending.cancel()
        writer.close()
    return status_line, took


async def test_a_huge_declared_body_is_refused_at_once_without_being_read(
    settings: Settings,
) -> None:
    async with serving(ingress_app(settings), INGRESS_PORT):
        await post_huge(chunked=False)  # the first request's one-off allocations
        before = server_rss()
        status_line, took = await post_huge(chunked=False)
        grown = server_rss() - before
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert took < 1.0
    assert grown < 20 * MIB


async def test_a_huge_chunked_body_is_refused_once_it_passes_the_cap(
    settings: Settings,
) -> None:
    async with serving(ingress_app(settings), INGRESS_PORT):
        await post_huge(chunked=True)
        before = server_rss()
        status_line, took = await post_huge(chunked=True)
        grown = server_rss() - before
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert took < 1.0
    assert grown < 20 * MIB
