"""An HTTP proxy in front of an S3 server, for the lab and tests; not for production.

It relays each request and its answer byte for byte (the Host header too, so SigV4 signatures
still verify) and counts every object write the S3 server accepted: a `PUT` of an object (not
of a multipart part) and a `POST …?uploadId=` (CompleteMultipartUpload), answered 200, by
bucket and key; `callpipe chaos` points the services at it to count them. Told each request's
method and target first, `on_request` can have it held for some seconds before it goes on, or
refused with 403 (a terminal error, which S3 clients do not retry): the broker's offset-hole
tests make a slow or lost write that way. While the S3 server is away the proxy closes the
connections it cannot relay, as a refused connection would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

HEADERS_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024
RELAY_CHUNK_BYTES = 64 * 1024
BODY_AFTER_ANSWER_SECONDS = 10.0
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


class BodySink(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class Discard:
    """Where a refused request's body goes, so that the connection can carry the next one."""

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


class HttpHead:
    """The start line and headers of a request or an answer, as received."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        lines = raw.decode("latin-1").split("\r\n")
        self.start_line = lines[0]
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                self.headers[name.strip().lower()] = value.strip()

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None else None

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


def object_write(method: str, target: str) -> tuple[str, str] | None:
    """(bucket, key) when the request writes a whole object (path-style addressing)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    if not key:
        return None
    if method == "PUT" and "partNumber" not in query and "uploadId" not in query:
        return bucket, key
    if method == "POST" and "uploadId" in query:
        return bucket, key
    return None


async def _read_head(reader: asyncio.StreamReader) -> HttpHead | None:
    try:
        return HttpHead(await reader.readuntil(HEADERS_END))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None


async def _relay_exactly(reader: asyncio.StreamReader, writer: BodySink, n: int) -> None:
    while n > 0:
        chunk = await reader.read(min(n, RELAY_CHUNK_BYTES))
        if not chunk:
            raise ConnectionError("the peer closed the connection mid-body")
        writer.write(chunk)
        await writer.drain()
        n -= len(chunk)


async def _relay_chunked(reader: asyncio.StreamReader, writer: BodySink) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        writer.write(size_line)
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(trailer)
            writer.write(b"\r\n")
            await writer.drain()
            return
        await _relay_exactly(reader, writer, size + 2)  # the chunk and its CRLF


async def _relay_body(head: HttpHead, reader: asyncio.StreamReader, writer: BodySink) -> None:
    if head.chunked:
        await _relay_chunked(reader, writer)
    elif head.content_length:
        await _relay_exactly(reader, writer, head.content_length)


class S3Proxy:
    def __init__(
        self, upstream_host: str, upstream_port: int, on_request: OnRequest = forward_all
    ) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._on_request = on_request
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.url = ""
        # Accepted object writes by (bucket, key).
        self.writes: Counter[tuple[str, str]] = Counter()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listens on `port` (0: one the system picks); `url` then says where."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD_BYTES)
        bound_host, bound_port = self._server.sockets[0].getsockname()[:2]
        self.url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            upstream_in, upstream_out = await asyncio.open_connection(
                *self._upstream, limit=MAX_HEAD_BYTES
            )
        except OSError:
            client_out.close()
            self._connections.discard(task)
            return
        try:
            while await self._exchange(client_in, client_out, upstream_in, upstream_out):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            log.debug("S3 proxy connection ended: %s", error)
        finally:
            for writer in (client_out, upstream_out):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            self._connections.discard(task)

    async def _exchange(
        self,
        client_in: asyncio.StreamReader,
        client_out: asyncio.StreamWriter,
        upstream_in: asyncio.StreamReader,
        upstream_out: asyncio.StreamWriter,
    ) -> bool:
        """One request and its answer; whether the connection can carry another."""
        request = await _read_head(client_in)
        if request is None:
            return False
        method, target = request.start_line.split(" ")[:2]
        action = self._on_request(method, target)
        if isinstance(action, Refuse):
            await _relay_body(request, client_in, Discard())
            client_out.write(REFUSED)
            await client_out.drain()
            return not request.closes
        if action.hold_seconds:
            await asyncio.sleep(action.hold_seconds)
        upstream_out.write(request.raw)
        await upstream_out.drain()
        # Concurrently with the answer: a client that sent `Expect: 100-continue` sends the
        # body only after the server's interim answer.
        sending = asyncio.create_task(_relay_body(request, client_in, upstream_out))
        try:
            answer = await _read_head(upstream_in)
            while answer is not None and answer.start_line.split(" ")[1].startswith("1"):
                client_out.write(answer.raw)
                await client_out.drain()
                answer = await _read_head(upstream_in)
            if answer is None:
                return False
            client_out.write(answer.raw)
            await client_out.drain()
            status = int(answer.start_line.split(" ")[1])
            if method != "HEAD" and status not in (204, 304):
                if answer.chunked or answer.content_length is not None:
                    await _relay_body(answer, upstream_in, client_out)
                else:  # the body lasts until the server closes
                    while chunk := await upstream_in.read(RELAY_CHUNK_BYTES):
                        client_out.write(chunk)
                        await client_out.drain()
                    return False
            # An answer can come before the whole body (an early error): then the connection
            # cannot carry another request.
            try:
                await asyncio.wait_for(asyncio.shield(sending), BODY_AFTER_ANSWER_SECONDS)
            except TimeoutError:
                return False
        finally:
            if not sending.done():
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await sending
        written = object_write(method, target)
        if written is not None and status == 200:
            self.writes[written] += 1
        return not (request.closes or answer.closes)
