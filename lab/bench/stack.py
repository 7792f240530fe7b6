"""The benchmark's own stack: `callpipe up`'s parts on ports of their own, in a temporary data
directory, with the instant transcriber and extractor, stopped and removed afterwards."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from pydantic import SecretStr

from callpipe.stack import Child, Stack
from shared.settings import Settings

BENCH_BUSINESS = "bench"
# Bench ports sit 20000 above the defaults, plus the offset: clear of a `callpipe up` and of
# the tests' stack (10000 above).
PORT_SHIFT = 20000


def bench_settings(data_dir: Path, port_offset: int, database_url: str = "") -> Settings:
    shift = PORT_SHIFT + port_offset
    return Settings(
        data_dir=data_dir,
        database={"url": database_url},
        kafka={"bootstrap": f"127.0.0.1:{9092 + shift}"},
        s3={"endpoint_url": f"http://127.0.0.1:{8333 + shift}"},
        ingress={
            "port": 8000 + shift,
            "public_base_url": f"http://127.0.0.1:{8000 + shift}",
            "recording_mode": "twiml",
        },
        player={
            "port": 8080 + shift,
            "api_key": SecretStr(f"cp_bench_{secrets.token_urlsafe(24)}"),
        },
        local={"simulator_port": 8090 + shift},
        downloader={"health_port": 8101 + shift},
        transcriber={"health_port": 8102 + shift, "backend": "instant"},
        extractor={"health_port": 8103 + shift, "backend": "instant"},
        business={"default_id": BENCH_BUSINESS, "numbers": ""},
    )


@contextlib.asynccontextmanager
async def bench_stack(
    port_offset: int,
    database_url: str = "",
    keep_dir: Path | None = None,
    adjust_child: Callable[[Child], None] | None = None,
) -> AsyncIterator[Stack]:
    """A started stack; every process it started is stopped on the way out (and dies with
    this process if it is killed: the children have a parent-death signal). `adjust_child`,
    when given, may change each child's command line or environment before it starts (the
    measuring scripts use it)."""
    data_dir = keep_dir or Path(tempfile.mkdtemp(prefix="callpipe-bench-"))
    stack = Stack(bench_settings(data_dir, port_offset, database_url))
    if adjust_child is not None:
        for child in stack.children:
            adjust_child(child)
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()
        if keep_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
