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
        database_url=database_url,
        kafka_bootstrap=f"127.0.0.1:{9092 + shift}",
        s3_endpoint_url=f"http://127.0.0.1:{8333 + shift}",
        ingress_port=8000 + shift,
        public_base_url=f"http://127.0.0.1:{8000 + shift}",
        player_port=8080 + shift,
        simulator_port=8090 + shift,
        downloader_health_port=8101 + shift,
        transcriber_health_port=8102 + shift,
        extractor_health_port=8103 + shift,
        default_business_id=BENCH_BUSINESS,
        business_numbers="",
        api_key=SecretStr(f"cp_bench_{secrets.token_urlsafe(24)}"),
        transcriber_backend="instant",
        extractor_backend="instant",
        recording_mode="twiml",
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
