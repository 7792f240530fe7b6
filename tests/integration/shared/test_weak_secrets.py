"""The rules that keep a reachable deployment off empty, short and published secrets."""

from __future__ import annotations

import os
import re
import secrets
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from callpipe.cli import EXIT_WEAK_SECRET
from shared.settings import Settings, setting
from shared.weak_secrets import (
    GENERATE,
    RULES,
    SECRETS_OF_SERVICE,
    Secret,
    WeakSecrets,
    is_exposed,
    weak_secrets,
)
from tests.support.settings import settings_from

EVERY_SECRET = tuple(Secret)
EXPOSED = {"ingress.public_base_url": "https://calls.example.com"}


def good(**changes: Any) -> Settings:
    """An exposed deployment whose every secret is sound, with `changes` applied."""
    values: dict[str, Any] = {
        **EXPOSED,
        "player.session_secret": SecretStr(secrets.token_urlsafe(32)),
        "twilio.auth_token": SecretStr(secrets.token_hex(16)),
        "s3.secret_key": SecretStr(secrets.token_urlsafe(32)),
        "database.url": f"postgresql+asyncpg://callpipe:{secrets.token_urlsafe(32)}@db/callpipe",
        "keys.wrapping_key": SecretStr(secrets.token_urlsafe(32)),
    }
    return settings_from(values | changes)


def variables(settings: Settings) -> list[str]:
    return [problem.variable for problem in weak_secrets(settings, EVERY_SECRET)]


def test_sound_secrets_pass() -> None:
    assert weak_secrets(good(), EVERY_SECRET) == []


def test_the_defaults_are_refused_once_exposed_and_each_names_its_variable() -> None:
    problems = weak_secrets(
        settings_from({**EXPOSED, "database.url": "postgresql://u@db/x"}), EVERY_SECRET
    )
    assert [problem.variable for problem in problems] == [
        "CALLPIPE_SESSION_SECRET",
        "TWILIO_AUTH_TOKEN",
        "CALLPIPE_S3_SECRET_KEY",
        "the password in CALLPIPE_DATABASE_URL",
        "CALLPIPE_KEY_WRAPPING_KEY",
    ]
    message = str(WeakSecrets(problems))
    assert GENERATE in message
    assert "TWILIO_AUTH_TOKEN is a well-known default" in message


def test_a_purely_local_stack_keeps_its_defaults() -> None:
    assert not is_exposed(Settings())
    assert weak_secrets(Settings(), EVERY_SECRET) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"ingress.public_base_url": "https://calls.example.com"},
        {"ingress.public_base_url": "http://calls.example.com"},
        {"ingress.host": "0.0.0.0"},
        {"player.host": "::"},
        {"player.host": "192.168.1.20"},
        {"worker.health_host": "worker.internal"},
    ],
)
def test_a_public_url_or_a_bind_beyond_loopback_is_exposed(changes: dict[str, str]) -> None:
    assert is_exposed(settings_from(changes))
    assert "CALLPIPE_SESSION_SECRET" in variables(settings_from(changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"ingress.public_base_url": "http://localhost:8000"},
        {"ingress.public_base_url": "http://[::1]:8000", "ingress.host": "::1"},
        {"player.host": "127.0.0.2", "worker.health_host": "localhost"},
    ],
)
def test_loopback_in_any_spelling_is_local(changes: dict[str, str]) -> None:
    assert not is_exposed(settings_from(changes))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("player.session_secret", "", "is empty"),
        ("player.session_secret", "change-me-session-secret-of-forty-bytes!!", "example"),
        ("player.session_secret", "Change-Me", "example"),
        ("player.session_secret", "x" * 31, "31 bytes long, shorter than 32"),
        ("twilio.auth_token", "", "is empty"),
        ("twilio.auth_token", "local-simulator-auth-token", "well-known default"),
        ("twilio.auth_token", "change-me-twilio-auth-token", "example"),
        ("twilio.auth_token", "0123456789abcdef0123456789abcde", "not a Twilio auth token"),
        ("twilio.auth_token", "z" * 32, "not a Twilio auth token"),
        ("s3.secret_key", "callpipe-local-secret", "well-known default"),
        ("s3.secret_key", "change-me-s3-secret", "example"),
        ("s3.secret_key", "minioadmin", "well-known default"),
        ("s3.secret_key", "short-secret", "12 bytes long, shorter than 16"),
        ("keys.wrapping_key", "callpipe-local-wrapping-key", "well-known default"),
        ("keys.wrapping_key", "change-me-key-wrapping-key-of-forty-bytes", "example"),
        ("keys.wrapping_key", "k" * 31, "31 bytes long, shorter than 32"),
    ],
)
def test_weak_values_are_refused(field: str, value: str, reason: str) -> None:
    [problem] = weak_secrets(good(**{field: SecretStr(value)}), EVERY_SECRET)
    assert problem.variable == RULES[Secret(field)].variable
    assert reason in problem.reason


@pytest.mark.parametrize(
    ("password_part", "reason"),
    [
        ("callpipe@", "is empty"),
        ("callpipe:@", "is empty"),
        ("callpipe:change-me-postgres@", "example"),
        ("callpipe:postgres@", "well-known default"),
        ("callpipe:Password@", "well-known default"),
        ("callpipe:s3cr3t@", "shorter than 16"),
    ],
)
def test_weak_database_passwords_are_refused(password_part: str, reason: str) -> None:
    url = f"postgresql+asyncpg://{password_part}postgres:5432/callpipe"
    [problem] = weak_secrets(good(**{"database.url": url}), EVERY_SECRET)
    assert problem.variable == "the password in CALLPIPE_DATABASE_URL"
    assert reason in problem.reason


def test_the_embedded_sqlite_database_has_no_password_to_check() -> None:
    assert weak_secrets(good(**{"database.url": ""}), [Secret.DATABASE_PASSWORD]) == []
    sqlite = good(**{"database.url": "sqlite+aiosqlite:////var/lib/callpipe/callpipe.db"})
    assert weak_secrets(sqlite, [Secret.DATABASE_PASSWORD]) == []


def test_a_service_is_checked_only_for_the_secrets_it_uses() -> None:
    weak_session = good(**{"player.session_secret": SecretStr("change-me-session-secret")})
    assert weak_secrets(weak_session, SECRETS_OF_SERVICE["ingress"]) == []
    assert len(weak_secrets(weak_session, SECRETS_OF_SERVICE["player"])) == 1


def test_the_variables_named_are_the_settings_environment_variables() -> None:
    for secret in (
        Secret.SESSION,
        Secret.TWILIO_AUTH_TOKEN,
        Secret.S3_SECRET_KEY,
        Secret.KEY_WRAPPING,
    ):
        assert RULES[secret].variable == setting(secret.value).variable


# The services' start-up: `callpipe run NAME` (and `callpipe reconcile`) as the compose file
# runs them, exposed by an https public URL, with every server they would reach listening on
# a socket of this test that records whether anyone connected.
_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
START_BOUND_SECONDS = 60
COMMANDS = {
    "ingress": ["run", "ingress"],
    "player": ["run", "player"],
    "downloader": ["run", "downloader"],
    "transcriber": ["run", "transcriber"],
    "extractor": ["run", "extractor"],
    "reconciler": ["reconcile"],
}
EXAMPLES = {
    Secret.SESSION: ("CALLPIPE_SESSION_SECRET", "change-me-session-secret"),
    Secret.TWILIO_AUTH_TOKEN: ("TWILIO_AUTH_TOKEN", "change-me-twilio-auth-token"),
    Secret.S3_SECRET_KEY: ("CALLPIPE_S3_SECRET_KEY", "change-me-s3-secret"),
    Secret.KEY_WRAPPING: ("CALLPIPE_KEY_WRAPPING_KEY", "change-me-key-wrapping-key"),
}


@pytest.fixture
def servers() -> Iterator[dict[str, socket.socket]]:
    """Listening sockets standing in for the broker, the S3 server and PostgreSQL."""
    listeners = {name: socket.create_server(("127.0.0.1", 0)) for name in ("kafka", "s3", "db")}
    yield listeners
    for listener in listeners.values():
        listener.close()


def service_env(
    data_dir: Path, servers: dict[str, socket.socket], secret_values: dict[str, str]
) -> dict[str, str]:
    port = {name: listener.getsockname()[1] for name, listener in servers.items()}
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CALLPIPE_", "TWILIO_", "AWS_"))
    }
    database_password = secret_values.pop("database_password")
    return inherited | {
        "CALLPIPE_DATA_DIR": str(data_dir),
        "CALLPIPE_PUBLIC_BASE_URL": "https://calls.example.com",
        "CALLPIPE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port['kafka']}",
        "CALLPIPE_S3_ENDPOINT_URL": f"http://127.0.0.1:{port['s3']}",
        "CALLPIPE_DATABASE_URL": (
            f"postgresql+asyncpg://callpipe:{database_password}@127.0.0.1:{port['db']}/callpipe"
        ),
        "CALLPIPE_INGRESS_PORT": str(23000 + _OFFSET),
        "CALLPIPE_PLAYER_PORT": str(23080 + _OFFSET),
        "CALLPIPE_DOWNLOADER_HEALTH_PORT": str(23101 + _OFFSET),
        "CALLPIPE_TRANSCRIBER_HEALTH_PORT": str(23102 + _OFFSET),
        "CALLPIPE_EXTRACTOR_HEALTH_PORT": str(23103 + _OFFSET),
        **secret_values,
    }


def connected(servers: dict[str, socket.socket]) -> list[str]:
    """The servers someone opened a connection to (it waits in the listen queue)."""
    reached = []
    for name, listener in servers.items():
        listener.setblocking(False)
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            continue
        connection.close()
        reached.append(name)
    return reached


@pytest.mark.parametrize("service", list(COMMANDS))
def test_a_service_refuses_to_start_on_example_secrets_before_connecting(
    service: str, servers: dict[str, socket.socket], tmp_path: Path
) -> None:
    examples = {variable: value for variable, value in EXAMPLES.values()}
    env = service_env(tmp_path, servers, {**examples, "database_password": "change-me-postgres"})
    result = subprocess.run(
        [sys.executable, "-m", "callpipe", *COMMANDS[service]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=START_BOUND_SECONDS,
    )
    assert result.returncode == EXIT_WEAK_SECRET, result.stderr
    uses = SECRETS_OF_SERVICE[service]
    for secret in Secret:
        assert (RULES[secret].variable in result.stderr) == (secret in uses), result.stderr
    assert "is an example value" in result.stderr
    assert "Traceback" not in result.stderr
    assert connected(servers) == []


@pytest.mark.parametrize("service", ["player", "downloader"])
def test_a_service_with_sound_secrets_goes_on_to_connect(
    service: str, servers: dict[str, socket.socket], tmp_path: Path
) -> None:
    sound = {
        "CALLPIPE_SESSION_SECRET": secrets.token_urlsafe(32),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "CALLPIPE_S3_SECRET_KEY": secrets.token_urlsafe(32),
        "CALLPIPE_KEY_WRAPPING_KEY": secrets.token_urlsafe(32),
        "database_password": secrets.token_urlsafe(32),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "callpipe", *COMMANDS[service]],
        env=service_env(tmp_path, servers, sound),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        readable, _, _ = select.select(list(servers.values()), [], [], START_BOUND_SECONDS)
        assert readable, "the service never reached a server"
    finally:
        process.kill()
        _, stderr = process.communicate()
    assert "CALLPIPE_" not in stderr and "TWILIO_AUTH_TOKEN" not in stderr, stderr


def test_callpipe_secrets_prints_fresh_sound_values_for_env() -> None:
    from typer.testing import CliRunner

    from callpipe.cli import app

    first, second = (CliRunner().invoke(app, ["secrets"]).stdout for _ in range(2))
    values = dict(re.findall(r"^(\w+)=(\S+)$", first, re.MULTILINE))
    assert set(values) == {
        "POSTGRES_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "CALLPIPE_S3_SECRET_KEY",
        "CALLPIPE_SESSION_SECRET",
        "CALLPIPE_KEY_WRAPPING_KEY",
    }
    assert not set(values.values()) & set(re.findall(r"=(\S+)$", second, re.MULTILINE))
    assert "TWILIO_AUTH_TOKEN" in first  # named, with where to find it: Twilio makes it
    settings = good(
        **{
            "player.session_secret": SecretStr(values["CALLPIPE_SESSION_SECRET"]),
            "s3.secret_key": SecretStr(values["CALLPIPE_S3_SECRET_KEY"]),
            "keys.wrapping_key": SecretStr(values["CALLPIPE_KEY_WRAPPING_KEY"]),
            "database.url": f"postgresql+asyncpg://callpipe:{values['POSTGRES_PASSWORD']}@db/callpipe",
        }
    )
    assert weak_secrets(settings, EVERY_SECRET) == []
