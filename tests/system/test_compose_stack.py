"""The call scenarios (tests/support/call_scenarios.py) on the docker compose stack: Apache
Kafka, MinIO, PostgreSQL and the five services as containers built from deploy/Dockerfile,
with the test overlay's Twilio simulator, brought up by testcontainers.

They need a Docker engine with the compose plugin and skip, saying so, where none is
reachable (the development and CI machines here have none); the same scenarios run on every
CI run against the local-process stack (test_call_scenarios.py).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from testcontainers.compose import DockerCompose

from tests.support.call_scenarios import (
    a_call_completes,
    a_downloader_killed_mid_call_loses_nothing,
)

ROOT = Path(__file__).resolve().parents[2]
_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
UP_TIMEOUT_SECONDS = 300
CALL_TIMEOUT_SECONDS = 180


def _engine_problem() -> str | None:
    try:
        docker.from_env(timeout=5).ping()
    except Exception as error:
        return f"no Docker engine is reachable ({error.__class__.__name__}: {error})"
    return None


ENGINE_PROBLEM = _engine_problem()
pytestmark = [
    pytest.mark.compose,
    pytest.mark.skipif(
        ENGINE_PROBLEM is not None,
        reason=f"{ENGINE_PROBLEM}: the compose stack cannot start here. The same call "
        "scenarios run against the local-process stack (test_call_scenarios.py).",
    ),
]


class ComposeStack:
    """The CallStack adapter for docker compose; Docker is the supervisor that restarts."""

    def __init__(self, compose: DockerCompose, api_key: str) -> None:
        self._compose = compose
        simulator_port = compose.get_service_port("twilio-simulator", 8090)
        player_port = compose.get_service_port("player", 8080)
        self._simulator = f"http://127.0.0.1:{simulator_port}"
        self._api = httpx.Client(
            base_url=f"http://127.0.0.1:{player_port}",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=10,
            follow_redirects=True,  # playback answers 307 to MinIO, as a browser follows
        )

    def place_call(self, audio: str, **options: Any) -> str:
        response = httpx.post(
            f"{self._simulator}/simulator/calls", json={"audio": audio, **options}, timeout=10
        )
        response.raise_for_status()
        return str(response.json()["call_sid"])

    def call(self, call_sid: str) -> dict[str, Any] | None:
        response = self._api.get(f"/api/calls/{call_sid}")
        return response.json() if response.status_code == 200 else None

    def wait_for_call(self, call_sid: str) -> dict[str, Any]:
        deadline = time.monotonic() + CALL_TIMEOUT_SECONDS
        call = None
        while time.monotonic() < deadline:
            call = self.call(call_sid)
            if call is not None and call["status"] in ("completed", "failed"):
                return call
            time.sleep(0.5)
        pytest.fail(f"call {call_sid} not final in {CALL_TIMEOUT_SECONDS} s: {call}")

    def recording(self, call_sid: str) -> bytes:
        response = self._api.get(f"/api/recordings/{call_sid}/file")
        assert response.status_code == 200, response.text
        return response.content

    def kill_worker(self, name: str) -> None:
        # `docker kill` counts as a deliberate stop, which a restart policy respects: start it
        # again as an orchestrator would.
        compose = self._compose.compose_command_property
        self._compose._run_command([*compose, "kill", "--signal", "SIGKILL", name])
        self._compose._run_command([*compose, "up", "--detach", "--no-deps", name])


def _write_env(path: Path, api_key: str) -> Path:
    values = {
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "MINIO_ROOT_USER": "minio-admin",
        "MINIO_ROOT_PASSWORD": secrets.token_hex(12),
        "CALLPIPE_S3_ACCESS_KEY": "callpipe",
        "CALLPIPE_S3_SECRET_KEY": secrets.token_hex(12),
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "CALLPIPE_PUBLIC_BASE_URL": "http://ingress:8000",
        "CALLPIPE_SESSION_SECRET": secrets.token_hex(16),
        "CALLPIPE_API_KEY": api_key,
        "CALLPIPE_INGRESS_PUBLISHED_PORT": str(28000 + _OFFSET),
        "CALLPIPE_PLAYER_PUBLISHED_PORT": str(28080 + _OFFSET),
        "MINIO_PUBLISHED_PORT": str(29000 + _OFFSET),
        "CALLPIPE_S3_PUBLIC_ENDPOINT_URL": f"http://127.0.0.1:{29000 + _OFFSET}",
    }
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


SERVICES = {"ingress", "downloader", "transcriber", "extractor", "player", "twilio-simulator"}


def _until_healthy(compose: DockerCompose) -> None:
    deadline = time.monotonic() + UP_TIMEOUT_SECONDS
    health: dict[str | None, str | None] = {}
    while time.monotonic() < deadline:
        health = {c.Service: c.Health for c in compose.get_containers(include_all=True)}
        if all(health.get(service) == "healthy" for service in SERVICES):
            return
        time.sleep(2)
    stdout, stderr = compose.get_logs()
    pytest.fail(
        f"not healthy in {UP_TIMEOUT_SECONDS} s: {health}\n{stdout[-5000:]}{stderr[-5000:]}"
    )


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    api_key = f"cp_{secrets.token_urlsafe(24)}"
    env_file = _write_env(tmp_path_factory.mktemp("compose") / "test.env", api_key)
    compose = DockerCompose(
        ROOT,
        compose_file_name=["docker-compose.yml", "deploy/compose.test.yml"],
        env_file=str(env_file),
        build=True,
        wait=False,  # the one-shot jobs exit by design; health is polled below
    )
    with compose:
        _until_healthy(compose)
        yield ComposeStack(compose, api_key)


def test_a_call_completes(compose_stack: ComposeStack) -> None:
    a_call_completes(compose_stack)


def test_a_downloader_killed_mid_call_loses_nothing(compose_stack: ComposeStack) -> None:
    a_downloader_killed_mid_call_loses_nothing(compose_stack)
