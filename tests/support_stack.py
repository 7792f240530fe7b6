"""A running `callpipe up` for tests: real processes on ports of their own, so a stack already
running on the default ports is left alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from callpipe.stack import Child
from callpipe.twilio_simulator import sample_path
from shared.settings import Settings

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
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, **PORTS, "CALLPIPE_DATA_DIR": str(data_dir)}
        self.settings = Settings()  # the Twilio credentials the stack uses too
        self.process: subprocess.Popen[str] | None = None
        self._output_from = 0
        self.api = httpx.Client()
        self.player = f"http://127.0.0.1:{PORTS['CALLPIPE_PLAYER_PORT']}"
        self.simulator = f"http://127.0.0.1:{PORTS['CALLPIPE_SIMULATOR_PORT']}"
        self.ingress = f"http://127.0.0.1:{PORTS['CALLPIPE_INGRESS_PORT']}"

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
                self.api = httpx.Client(
                    base_url=self.player, headers={"Authorization": f"Bearer {key}"}, timeout=10
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


def leftover_processes(data_dir: Path) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True)
    return [
        line
        for line in listing.stdout.splitlines()
        if str(data_dir) in line and " Z" not in line and "ps -eo" not in line
    ]


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
    pytest.fail(f"{child.name} not healthy in 60 s")
