"""A pass-through proxy in front of the S3 server, for measuring and for tests: it forwards
each HTTP/1.1 request's bytes untouched (the Host header is kept, so signatures stay valid),
tells `on_request` its method and target first, and does what that answers: forward at once,
hold the request for some seconds first, or refuse it with 403 (a terminal error, which S3
clients do not retry). Not for production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"


@dataclass(frozen=True)
class Forward:
    hold_seconds: float = 0.0


@dataclass(frozen=True)
class Refuse:
    pass


OnRequest = Callable[[str, str], Forward | Refuse]


def forward_all(_method: str, _target: str) -> Forward:
    return Forward()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        writer.close()


async def _body(client: asyncio.StreamReader, head: bytes) -> bytes:
    """The request's body: Content-Length bytes, or chunks up to the last one."""
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (
            line.decode().partition(":") for line in head.split(b"\r\n")[1:] if line
        )
    }
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return await client.readexactly(int(headers.get("content-length", 0)))
    body = b""
    while True:
        size_line = await client.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        body += size_line + await client.readexactly(size + 2)
        if size == 0:
            return body


async def _forward_requests(
    client: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream: asyncio.StreamWriter,
    on_request: OnRequest,
) -> None:
    """Requests one after another (S3 clients wait for each answer: no pipelining)."""
    try:
        while head := await client.readuntil(b"\r\n\r\n"):
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            action = on_request(method, target)
            body = await _body(client, head)
            if isinstance(action, Refuse):
                client_writer.write(REFUSED)
                await client_writer.drain()
                continue
            if action.hold_seconds:
                await asyncio.sleep(action.hold_seconds)
            upstream.write(head + body)
            await upstream.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        upstream.close()


async def start_proxy(
    listen_port: int, s3_port: int, on_request: OnRequest = forward_all
) -> asyncio.Server:
    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", s3_port)
        await asyncio.gather(
            _forward_requests(reader, writer, up_writer, on_request), _relay(up_reader, writer)
        )

    return await asyncio.start_server(connected, "127.0.0.1", listen_port)
