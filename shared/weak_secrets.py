"""Which secrets a service may start with, decided from the settings alone (no I/O).

A deployment that anyone but this machine can reach — the public URL is https or names another
host, or a service listens beyond loopback — must not run on a secret that is empty, short,
or published: the examples of `.env.example` (`change-me-…`), the local stack's defaults,
well-known passwords. Each service checks the secrets it uses before it connects to anything
(decision 1103); a purely local stack is left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared.settings import Settings, setting

GENERATE = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
EXAMPLE_PREFIX = "change-me"
# Defaults of the settings and of the tools around them, and passwords every scanner tries.
KNOWN_VALUES = frozenset(
    {
        "local-simulator-auth-token",
        "callpipe-local-secret",
        "callpipe-local-wrapping-key",
        "callpipe",
        "postgres",
        "password",
        "secret",
        "changeme",
        "minioadmin",
        "admin",
        "root",
    }
)
TWILIO_AUTH_TOKEN = re.compile(r"[0-9a-fA-F]{32}")


class Secret(StrEnum):
    SESSION = "player.session_secret"
    TWILIO_AUTH_TOKEN = "twilio.auth_token"
    S3_SECRET_KEY = "s3.secret_key"
    DATABASE_PASSWORD = "database_password"
    KEY_WRAPPING = "keys.wrapping_key"


# Every service publishes or reads events: each seals or opens them with the calls' keys, in
# the status database.
SECRETS_OF_SERVICE: dict[str, tuple[Secret, ...]] = {
    "ingress": (Secret.TWILIO_AUTH_TOKEN, Secret.DATABASE_PASSWORD, Secret.KEY_WRAPPING),
    "player": (
        Secret.SESSION,
        Secret.S3_SECRET_KEY,
        Secret.TWILIO_AUTH_TOKEN,
        Secret.DATABASE_PASSWORD,
        Secret.KEY_WRAPPING,
    ),
    "downloader": (
        Secret.TWILIO_AUTH_TOKEN,
        Secret.S3_SECRET_KEY,
        Secret.DATABASE_PASSWORD,
        Secret.KEY_WRAPPING,
    ),
    "transcriber": (Secret.S3_SECRET_KEY, Secret.DATABASE_PASSWORD, Secret.KEY_WRAPPING),
    "extractor": (Secret.S3_SECRET_KEY, Secret.DATABASE_PASSWORD, Secret.KEY_WRAPPING),
    # Beside the reconciliation, the retention sweep: objects and rows deleted, and
    # recordings at Twilio for the businesses that chose so.
    "reconciler": (
        Secret.TWILIO_AUTH_TOKEN,
        Secret.S3_SECRET_KEY,
        Secret.DATABASE_PASSWORD,
        Secret.KEY_WRAPPING,
    ),
    "retention": (
        Secret.TWILIO_AUTH_TOKEN,
        Secret.S3_SECRET_KEY,
        Secret.DATABASE_PASSWORD,
        Secret.KEY_WRAPPING,
    ),
}


@dataclass(frozen=True)
class Rule:
    variable: str
    min_bytes: int
    remedy: str


RULES = {
    Secret.SESSION: Rule(
        "CALLPIPE_SESSION_SECRET", 32, f"set one shared by every player, made with: {GENERATE}"
    ),
    Secret.TWILIO_AUTH_TOKEN: Rule(
        "TWILIO_AUTH_TOKEN",
        32,
        "set the account's Auth Token from the Twilio Console (32 hexadecimal characters)",
    ),
    Secret.S3_SECRET_KEY: Rule(
        "CALLPIPE_S3_SECRET_KEY",
        16,
        f"give the S3 user a new one, made with: {GENERATE}",
    ),
    Secret.KEY_WRAPPING: Rule(
        "CALLPIPE_KEY_WRAPPING_KEY",
        32,
        f"set one shared by every service, kept as safely as the database, made with: {GENERATE}",
    ),
    Secret.DATABASE_PASSWORD: Rule(
        "the password in CALLPIPE_DATABASE_URL",
        16,
        f"give the database user a new one, made with: {GENERATE}",
    ),
}


@dataclass(frozen=True)
class WeakSecret:
    variable: str
    reason: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.variable} {self.reason}: {self.remedy}"


class WeakSecrets(Exception):
    def __init__(self, problems: list[WeakSecret]) -> None:
        self.problems = problems
        super().__init__(
            "refusing to start outside this machine with a weak secret:\n"
            + "\n".join(f"  {problem}" for problem in problems)
        )


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_exposed(settings: Settings) -> bool:
    """Reachable from elsewhere: Twilio is given a public URL, or a service listens on more
    than loopback."""
    public = urlsplit(settings.ingress.public_base_url)
    if public.scheme == "https" or not is_loopback(public.hostname or ""):
        return True
    hosts = (settings.ingress.host, settings.player.host, settings.worker.health_host)
    return not all(map(is_loopback, hosts))


def weak_secrets(settings: Settings, uses: Iterable[Secret]) -> list[WeakSecret]:
    """The problems of the secrets `uses` names; none when the deployment is purely local."""
    if not is_exposed(settings):
        return []
    problems = []
    for secret in uses:
        rule = RULES[secret]
        reason = _weakness(secret, settings, rule)
        if reason is not None:
            problems.append(WeakSecret(rule.variable, reason, rule.remedy))
    return problems


def _weakness(secret: Secret, settings: Settings, rule: Rule) -> str | None:
    if secret is Secret.DATABASE_PASSWORD:
        if not settings.database.url:
            return None  # the embedded SQLite file has no password
        try:
            url = make_url(settings.database.url)
        except ArgumentError:
            return "is in a URL that does not parse"
        if url.get_backend_name() == "sqlite":
            return None
        value = url.password or ""
    else:
        value = setting(secret.value).value(settings).get_secret_value()
    if not value:
        return "is empty"
    if value.lower().startswith(EXAMPLE_PREFIX):
        return "is an example value (change-me-…)"
    if value.lower() in KNOWN_VALUES:
        return "is a well-known default"
    if secret is Secret.TWILIO_AUTH_TOKEN and not TWILIO_AUTH_TOKEN.fullmatch(value):
        return "is not a Twilio auth token"
    size = len(value.encode())
    if size < rule.min_bytes:
        return f"is {size} bytes long, shorter than {rule.min_bytes}"
    return None


def refuse_weak_secrets(settings: Settings, uses: Iterable[Secret]) -> None:
    problems = weak_secrets(settings, uses)
    if problems:
        raise WeakSecrets(problems)
