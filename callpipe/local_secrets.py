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

from shared.settings import Settings, setting

SECRETS_DIR = "secrets"

MAKERS: dict[str, Callable[[], str]] = {
    "player.session_secret": lambda: secrets.token_urlsafe(32),
    # Shared by the Twilio simulator and the ingress and downloader; a real token's form.
    "twilio.auth_token": lambda: secrets.token_hex(16),
    # The embedded S3 server (SeaweedFS) takes its only identity from these at each start.
    "s3.access_key": lambda: f"callpipe-{secrets.token_hex(6)}",
    "s3.secret_key": lambda: secrets.token_urlsafe(32),
    # Wraps every call's data key: each service of the stack seals and opens events with it.
    "keys.wrapping_key": lambda: secrets.token_urlsafe(32),
}


def secret_path(data_dir: Path, path: str) -> Path:
    return data_dir / SECRETS_DIR / setting(path).variable


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
    changes: dict[str, dict[str, object]] = {}
    for path, make in MAKERS.items():
        made = setting(path)
        if made.is_set(settings):
            continue
        file = secret_path(settings.data_dir, path)
        value = _read_or_make(file, make) if create else _read(file)
        if value is not None and made.slice:
            secret = isinstance(made.field.default, SecretStr)
            changes.setdefault(made.slice, {})[made.name] = SecretStr(value) if secret else value
    return settings.updated(**changes)


def local_settings(data_dir: Path | None = None) -> Settings:
    """The settings of a command that may talk to `callpipe up`'s stack."""
    return with_local_secrets(Settings(data_dir=data_dir) if data_dir else Settings())
