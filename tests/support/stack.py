"""A running `callpipe up` for tests: real processes on ports of their own, so a stack already
running on the default ports is left alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from callpipe.local_secrets import with_local_secrets
from callpipe.stack import Child, Stack
from callpipe.twilio_simulator.samples import sample_path
from shared.settings import Settings
from shared.storage import ObjectStore

# CALLPIPE_TEST_PORT_OFFSET moves every port, so several checkouts can test side by side.
_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
PORTS = {
    "CALLPIPE_INGRESS_PORT": str(18000 + _OFFSET),
    "CALLPIPE_PLAYER_PORT": str(18080 + _OFFSET),
    "CALLPIPE_SIMULATOR_PORT": str(18090 + _OFFSET),
    "CALLPIPE_KAFKA_BOOTSTRAP": f"127.0.0.1:{19092 + _OFFSET}",
    "CALLPIPE_S3_ENDPOINT_URL": f"http://127.0.0.1:{18333 + _OFFSET}",
    "CALLPIPE_PUBLIC_BASE_URL": f"http://127.0.0.1:{18000 + _OFFSET}",
    "CALLPIPE_DOWNLOADER_HEALTH_PORT": str(18101 + _OFFSET),
    "CALLPIPE_TRANSCRIBER_HEALTH_PORT": str(18102 + _OFFSET),
    "CALLPIPE_EXTRACTOR_HEALTH_PORT": str(18103 + _OFFSET),
}
UP_TIMEOUT_SECONDS = 120
CALL_TIMEOUT_SECONDS = 90


class RunningStack:
    def __init__(self, data_dir: Path, database_url: str = "") -> None:
        """`database_url`: the services' database (CALLPIPE_DATABASE_URL); empty: SQLite
        files in the data directory, `callpipe up`'s default."""
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            **PORTS,
            "CALLPIPE_DATA_DIR": str(data_dir),
            "CALLPIPE_DATABASE_URL": database_url,
        }
        self.process: subprocess.Popen[str] | None = None
        self._output_from = 0
        self.api = httpx.Client()
        self.player = f"http://127.0.0.1:{PORTS['CALLPIPE_PLAYER_PORT']}"
        self.simulator = f"http://127.0.0.1:{PORTS['CALLPIPE_SIMULATOR_PORT']}"
        self.ingress = f"http://127.0.0.1:{PORTS['CALLPIPE_INGRESS_PORT']}"

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the database the stack's services share."""
        return Settings(
            data_dir=self.data_dir, database={"url": self.env["CALLPIPE_DATABASE_URL"]}
        ).database_url

    @property
    def settings(self) -> Settings:
        """What a client of this stack needs: its ports, and the secrets `callpipe up` made
        in its data directory (the Twilio auth token that signs webhooks, the S3 keys, the
        key that wraps the calls' keys in its database)."""
        return with_local_secrets(
            Settings(
                data_dir=self.data_dir,
                database={"url": self.env["CALLPIPE_DATABASE_URL"]},
                kafka={"bootstrap": PORTS["CALLPIPE_KAFKA_BOOTSTRAP"]},
                s3={"endpoint_url": PORTS["CALLPIPE_S3_ENDPOINT_URL"]},
                ingress={
                    "public_base_url": PORTS["CALLPIPE_PUBLIC_BASE_URL"],
                    "port": int(PORTS["CALLPIPE_INGRESS_PORT"]),
                },
                player={"port": int(PORTS["CALLPIPE_PLAYER_PORT"])},
                local={"simulator_port": int(PORTS["CALLPIPE_SIMULATOR_PORT"])},
            )
        )

    def start(self) -> None:
        log = (self.data_dir / "up.out").open("a")
        self._output_from = log.tell()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "callpipe", "up", "--data-dir", str(self.data_dir)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + UP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"callpipe up exited early:\n{self.output()}")
            if "Ctrl-C stops everything" in self.output()[self._output_from :]:
                key = (self.data_dir / "api-key").read_text().strip()
                # Playback answers 307 to the S3 server: followed, as a browser does.
                self.api = httpx.Client(
                    base_url=self.player,
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=10,
                    follow_redirects=True,
                )
                return
            time.sleep(0.5)
        pytest.fail(f"callpipe up not ready in {UP_TIMEOUT_SECONDS} s:\n{self.output()}")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=90)

    def output(self) -> str:
        return (self.data_dir / "up.out").read_text()

    def place_call(self, audio: str, **options: Any) -> str:
        response = httpx.post(
            f"{self.simulator}/simulator/calls",
            json={"audio": str(sample_path(audio)), **options},
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["call_sid"])

    def wait_for_call(self, call_sid: str) -> dict[str, Any]:
        deadline = time.monotonic() + CALL_TIMEOUT_SECONDS
        call: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = self.api.get(f"/api/calls/{call_sid}")
            if response.status_code == 200:
                call = response.json()
                if call["status"] in ("completed", "failed"):
                    return call
            time.sleep(0.5)
        pytest.fail(f"call {call_sid} not final in {CALL_TIMEOUT_SECONDS} s: {call}")

    def expired_recording_url(self, key: str) -> str:
        """A presigned URL of the recording object, as the player makes, already expired.
        Signed on a thread of its own: Playwright's sync API owns the test thread's loop."""

        async def sign() -> str:
            store = ObjectStore(self.settings.s3)
            await store.start()
            try:
                return await store.presigned_get(key, expires_in=1, content_type="audio/wav")
            finally:
                await store.stop()

        with ThreadPoolExecutor(1) as thread:
            url = thread.submit(asyncio.run, sign()).result()
        time.sleep(2.5)  # past the one second (and the one-second rounding of X-Amz-Date)
        return url


def leftover_processes(data_dir: Path) -> list[str]:
    """Every live process of the stack in `data_dir`, as "pid command line": the ones naming
    the directory on their command line (the supervisor, the S3 server) and the ones that
    carry it only in their environment (`CALLPIPE_DATA_DIR`: the broker and every service).
    A process that ends while being read, or is not ours to read, is left out."""
    directories = {str(data_dir), str(data_dir.resolve())}
    in_environment = {f"CALLPIPE_DATA_DIR={d}".encode() for d in directories}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        command = " ".join(arg.decode(errors="replace") for arg in argv if arg)
        named = any(d in command for d in directories) or in_environment & set(environment)
        if named and state != "Z":
            found.append(f"{entry.name} {command}")
    return found


# The S3 server of the module-scoped tests (they run one after another): clear of the
# end-to-end stacks' ports; it also takes +555…+1100 and each of those +10000 (gRPC).
MODULE_S3_PORT = 21333 + _OFFSET


@contextmanager
def module_s3_server(data_dir: Path) -> Iterator[Settings]:
    """The S3 server alone, on MODULE_S3_PORT, with settings that point at it."""
    stack = Stack(
        Settings(data_dir=data_dir, s3={"endpoint_url": f"http://127.0.0.1:{MODULE_S3_PORT}"})
    )
    s3 = stack.children[0]
    assert s3.name == "s3"
    process = start_child(s3, data_dir, data_dir)
    try:
        yield stack.settings
    finally:
        process.terminate()
        process.wait(timeout=30)


def start_child(child: Child, data_dir: Path, log_dir: Path) -> subprocess.Popen[bytes]:
    """One part of `callpipe up` (the S3 server, the broker…) started alone, once healthy."""
    log = (log_dir / f"{child.name}.log").open("ab")
    process = subprocess.Popen(
        child.argv,
        env=child.env,
        cwd=data_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{child.name} exited: {(log_dir / f'{child.name}.log').read_text()}")
        if asyncio.run(child.healthy()):
            return process
        time.sleep(0.3)
    process.kill()  # not left behind holding its port
    process.wait()
    pytest.fail(f"{child.name} not healthy in 60 s")
