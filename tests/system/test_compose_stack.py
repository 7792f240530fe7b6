"""The call scenarios (tests/support/call_scenarios.py) on the docker compose stack: Apache
Kafka, MinIO, PostgreSQL and the five services as containers built from deploy/Dockerfile,
with the test overlay's Twilio simulator, brought up by testcontainers.

They need a Docker engine with the compose plugin and skip, saying so, where none is
reachable (the development and CI machines here have none); the same scenarios run on every
CI run against the local-process stack (test_call_scenarios.py).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from testcontainers.compose import DockerCompose

from tests.support.call_scenarios import (
    a_call_completes,
    a_downloader_killed_mid_call_loses_nothing,
)
from tests.support.compose import ROOT, ComposeCalls, env_lines, reachable_env

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


class ComposeStack(ComposeCalls):
    """The CallStack adapter for docker compose; Docker is the supervisor that restarts."""

    def __init__(self, compose: DockerCompose, api_key: str) -> None:
        super().__init__(
            compose.get_service_port("twilio-simulator", 8090),
            compose.get_service_port("player", 8080),
            api_key,
            CALL_TIMEOUT_SECONDS,
        )
        self._compose = compose

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
        "CALLPIPE_SESSION_SECRET": secrets.token_hex(16),
        **reachable_env(api_key),
    }
    path.write_text(env_lines(values))
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
