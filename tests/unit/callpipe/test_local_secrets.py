"""`callpipe up`'s own secrets: made once per data directory, private to its owner, read by
every command that talks to that stack, and overridden by the environment."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from callpipe.local_secrets import MAKERS, local_settings, secret_path
from callpipe.stack import Stack
from shared.settings import Settings, setting
from shared.weak_secrets import SECRETS_OF_SERVICE, weak_secrets

DEFAULTS = Settings()


def child_env(stack: Stack, name: str) -> dict[str, str]:
    [child] = [child for child in stack.children if child.name == name]
    return child.env


def test_two_starts_on_one_data_dir_keep_the_same_secrets(tmp_path: Path) -> None:
    first = Stack(Settings(data_dir=tmp_path)).settings
    second = Stack(Settings(data_dir=tmp_path)).settings
    for name in MAKERS:
        assert setting(name).value(first) == setting(name).value(second), name
        assert setting(name).value(first) != setting(name).value(DEFAULTS), name
    other = Stack(Settings(data_dir=tmp_path / "other")).settings
    assert all(setting(name).value(other) != setting(name).value(first) for name in MAKERS)


def test_the_secret_files_are_private_to_their_owner(tmp_path: Path) -> None:
    Stack(Settings(data_dir=tmp_path))
    for name in MAKERS:
        mode = stat.S_IMODE(secret_path(tmp_path, name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert (
        stat.S_IMODE(secret_path(tmp_path, "player.session_secret").parent.stat().st_mode) == 0o700
    )


def test_the_made_secrets_pass_the_rules_of_a_reachable_deployment(tmp_path: Path) -> None:
    settings = Stack(Settings(data_dir=tmp_path)).settings
    exposed = settings.updated(ingress={"public_base_url": "https://calls.example.com"})
    assert weak_secrets(exposed, {s for uses in SECRETS_OF_SERVICE.values() for s in uses}) == []


def test_every_part_of_the_stack_gets_the_same_secrets(tmp_path: Path) -> None:
    stack = Stack(Settings(data_dir=tmp_path))
    token = stack.settings.twilio.auth_token.get_secret_value()
    for name in ("twilio-simulator", "ingress", "downloader"):
        assert child_env(stack, name)["TWILIO_AUTH_TOKEN"] == token
    s3_key = stack.settings.s3.secret_key.get_secret_value()
    for name in ("s3", "broker"):
        assert child_env(stack, name)["AWS_SECRET_ACCESS_KEY"] == s3_key
        assert child_env(stack, name)["AWS_ACCESS_KEY_ID"] == stack.settings.s3.access_key
    for name in ("player", "transcriber"):
        assert child_env(stack, name)["CALLPIPE_S3_SECRET_KEY"] == s3_key


def test_a_command_reads_the_stacks_secrets_from_its_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = Stack(Settings(data_dir=tmp_path)).settings
    monkeypatch.setenv("CALLPIPE_DATA_DIR", str(tmp_path))
    read = local_settings()
    assert read.twilio.auth_token == made.twilio.auth_token
    assert (read.s3.access_key, read.s3.secret_key) == (made.s3.access_key, made.s3.secret_key)


def test_a_command_without_a_stack_makes_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLPIPE_DATA_DIR", str(tmp_path))
    assert local_settings().twilio.auth_token == DEFAULTS.twilio.auth_token
    assert not secret_path(tmp_path, "twilio.auth_token").parent.exists()


def test_a_value_set_in_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Stack(Settings(data_dir=tmp_path))
    token = "0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", token)
    monkeypatch.setenv("CALLPIPE_S3_ACCESS_KEY", "operator-key")
    stack = Stack(Settings(data_dir=tmp_path))
    assert stack.settings.twilio.auth_token == SecretStr(token)
    assert child_env(stack, "s3")["AWS_ACCESS_KEY_ID"] == "operator-key"
    assert local_settings(tmp_path).twilio.auth_token == SecretStr(token)
