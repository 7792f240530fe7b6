"""The local stack's secrets: `callpipe up` makes them once per data directory and keeps them
there (mode 0600), one file each named after its environment variable; every command that
talks to that stack reads them from there. A value set in the environment, or passed
explicitly, wins over the file (decision 1103)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from callpipe.env_example import env_name
from shared.settings import Settings

SECRETS_DIR = "secrets"

MAKERS: dict[str, Callable[[], str]] = {
    "session_secret": lambda: secrets.token_urlsafe(32),
    # Shared by the Twilio simulator and the ingress and downloader; a real token's form.
    "twilio_auth_token": lambda: secrets.token_hex(16),
    # The embedded S3 server (SeaweedFS) takes its only identity from these at each start.
    "s3_access_key": lambda: f"callpipe-{secrets.token_hex(6)}",
    "s3_secret_key": lambda: secrets.token_urlsafe(32),
}


def secret_path(data_dir: Path, name: str) -> Path:
    return data_dir / SECRETS_DIR / env_name(name, Settings.model_fields[name])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _read_or_make(path: Path, make: Callable[[], str]) -> str:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    value = make()
    with os.fdopen(descriptor, "w") as file:
        file.write(value + "\n")
    return value


def with_local_secrets(settings: Settings, *, create: bool = False) -> Settings:
    """`settings` with the data directory's secrets where none was set; `create` makes the
    missing ones (what `callpipe up` does)."""
    update: dict[str, object] = {}
    for name, make in MAKERS.items():
        if name in settings.model_fields_set:
            continue
        path = secret_path(settings.data_dir, name)
        value = _read_or_make(path, make) if create else _read(path)
        if value is not None:
            secret = isinstance(Settings.model_fields[name].default, SecretStr)
            update[name] = SecretStr(value) if secret else value
    return settings.model_copy(update=update)


def local_settings(data_dir: Path | None = None) -> Settings:
    """The settings of a command that may talk to `callpipe up`'s stack."""
    return with_local_secrets(Settings(data_dir=data_dir) if data_dir else Settings())
