"""The lab's S3 proxy: relays S3 requests unchanged, counts accepted object writes per key, and
holds or refuses the requests it is told to (against a small HTTP server standing in for the
S3 server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from lab.s3_proxy import Forward, Refuse, S3Proxy, object_write


@pytest.mark.parametrize(
    ("method", "target", "written"),
    [
        ("PUT", "/media/demo/CA1/RE1.wav", ("media", "demo/CA1/RE1.wav")),
        ("PUT", "/media/demo/a%20b.json?x-id=PutObject", ("media", "demo/a b.json")),
        ("POST", "/media/demo/big.wav?uploadId=u1", ("media", "demo/big.wav")),
        ("PUT", "/media/demo/big.wav?partNumber=1&uploadId=u1", None),
        ("POST", "/media/demo/big.wav?uploads", None),
        ("GET", "/media/demo/CA1/RE1.wav", None),
        ("PUT", "/media", None),
    ],
)
def test_an_object_write_is_a_whole_object_put_or_a_completed_upload(
    method: str, target: str, written: tuple[str, str] | None
) -> None:
    assert object_write(method, target) == written


class StandInS3:
    """Answers every request; a PUT of a key starting with `refused` gets 500. Records the
    Host header and body it received."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            except asyncio.IncompleteReadError:
                break
            start, *header_lines = head.split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in header_lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            method, target = start.split(" ")[:2]
            self.received.append((target, headers["host"], body))
            status = "500 Internal Server Error" if "/refused" in target else "200 OK"
            answer = b"" if method == "HEAD" else b"<ok/>"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n".encode() + answer)
            await writer.drain()
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[StandInS3, int]]:
    stand_in = StandInS3()
    server = await asyncio.start_server(stand_in.serve, "127.0.0.1", 0)
    try:
        yield stand_in, server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_the_proxy_relays_requests_unchanged_and_counts_accepted_writes(
    upstream: tuple[StandInS3, int],
) -> None:
    stand_in, port = upstream
    proxy = S3Proxy("127.0.0.1", port)
    await proxy.start()
    try:
        async with httpx.AsyncClient(base_url=proxy.url) as client:  # one kept-alive connection
            assert (await client.put("/media/demo/a.wav", content=b"audio")).status_code == 200
            assert (await client.put("/media/demo/a.wav", content=b"audio")).status_code == 200
            assert (await client.get("/media/demo/a.wav")).content == b"<ok/>"
            assert (await client.head("/media/demo/a.wav")).status_code == 200
            assert (await client.put("/media/refused.json", content=b"{}")).status_code == 500
            assert (await client.put("/media/demo/b.json", content=b"{}")).status_code == 200
    finally:
        await proxy.stop()
    assert proxy.writes == {("media", "demo/a.wav"): 2, ("media", "demo/b.json"): 1}
    proxy_host = proxy.url.removeprefix("http://")
    assert stand_in.received[0] == ("/media/demo/a.wav", proxy_host, b"audio")
    assert len(stand_in.received) == 6


async def test_with_the_s3_server_away_the_proxy_closes_the_connection() -> None:
    vacant = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = vacant.sockets[0].getsockname()[1]
    vacant.close()
    await vacant.wait_closed()
    proxy = S3Proxy("127.0.0.1", port)
    await proxy.start()
    try:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            with pytest.raises(httpx.TransportError):
                await client.put("/media/demo/a.wav", content=b"audio")
    finally:
        await proxy.stop()
    assert proxy.writes == {}


async def test_a_request_told_to_wait_is_held_and_one_refused_never_reaches_the_s3_server(
    upstream: tuple[StandInS3, int],
) -> None:
    stand_in, port = upstream

    def on_request(method: str, target: str) -> Forward | Refuse:
        if target.endswith("/refuse.json"):
            return Refuse()
        return Forward(hold_seconds=0.5 if target.endswith("/slow.wav") else 0.0)

    proxy = S3Proxy("127.0.0.1", port, on_request)
    await proxy.start()
    try:
        async with httpx.AsyncClient(base_url=proxy.url) as client:  # one kept-alive connection
            assert (await client.put("/media/refuse.json", content=b"{}")).status_code == 403
            began = time.monotonic()
            assert (await client.put("/media/slow.wav", content=b"audio")).status_code == 200
            assert time.monotonic() - began >= 0.5
            assert (await client.put("/media/fast.wav", content=b"audio")).status_code == 200
    finally:
        await proxy.stop()
    assert [target for target, _, _ in stand_in.received] == ["/media/slow.wav", "/media/fast.wav"]
    assert proxy.writes == {("media", "slow.wav"): 1, ("media", "fast.wav"): 1}
