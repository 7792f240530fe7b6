""".env.example, generated from the Settings model so that it documents every setting.

Each setting appears with its environment variable, its default and the comment written above
it in shared/settings.py. The variables that docker-compose.yml itself needs (passwords of the
infrastructure, image, replication) come first; those without a usable default are left
uncommented with a placeholder, so a copied file shows at once what must be filled in.
"""

from __future__ import annotations

import ast
import inspect
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from shared import settings as settings_module
from shared.settings import Settings

ENV_EXAMPLE = Path(".env.example")

HEADER = """\
# callpipe's environment: copy to .env and fill in the values marked REQUIRED;
# `callpipe secrets` prints fresh values for every secret callpipe can make (a ready block).
# Generated from shared/settings.py by `callpipe env-example --write`; a test checks it is in
# sync. docker-compose.yml reads this file and gives each container only the settings its
# code reads (a secret only to the containers that use it); it also sets the addresses of
# Kafka, MinIO and PostgreSQL and the listening hosts: a value set here overrides them.
"""


GENERATE = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
MAKE_ONE = f"make one with `callpipe secrets` or {GENERATE}"


@dataclass(frozen=True)
class ComposeVariable:
    name: str
    meaning: str
    example: str
    required: bool
    secret: bool = False


COMPOSE_VARIABLES = (
    ComposeVariable(
        "POSTGRES_PASSWORD",
        "PostgreSQL password of the `callpipe` user (URL-safe characters: it goes into "
        "CALLPIPE_DATABASE_URL)",
        "",
        required=True,
        secret=True,
    ),
    ComposeVariable(
        "MINIO_ROOT_USER",
        "MinIO's administrator (used only by the bucket job)",
        "minio-admin",
        required=True,
    ),
    ComposeVariable(
        "MINIO_ROOT_PASSWORD",
        "MinIO's administrator password",
        "",
        required=True,
        secret=True,
    ),
    ComposeVariable(
        "CALLPIPE_IMAGE",
        "the image of every callpipe container but the transcriber (deploy/Dockerfile, "
        "target `service`); built when absent",
        "callpipe:local",
        required=False,
    ),
    ComposeVariable(
        "CALLPIPE_TRANSCRIBER_IMAGE",
        "the transcriber's image, with the speech stack (deploy/Dockerfile, target "
        "`transcriber`); built when absent",
        "callpipe-transcriber:local",
        required=False,
    ),
    ComposeVariable(
        "KAFKA_CLUSTER_ID",
        "the KRaft cluster id the broker formats its storage with, once (22 characters, "
        "base64url of 16 bytes; `kafka-storage.sh random-uuid` makes one)",
        "cIB3VqVnRYaGzHbAqRvdyw",
        required=False,
    ),
    ComposeVariable(
        "KAFKA_REPLICATION_FACTOR",
        "replicas of each topic the topic job creates: 1 for the single broker here, 3 on a "
        "cluster",
        "1",
        required=False,
    ),
    ComposeVariable(
        "CALLPIPE_INGRESS_PUBLISHED_PORT",
        "the port on the host's loopback (127.0.0.1) of the ingress (Twilio's webhooks, for "
        "your TLS proxy)",
        "8000",
        required=False,
    ),
    ComposeVariable(
        "CALLPIPE_PLAYER_PUBLISHED_PORT",
        "the port on the host's loopback of the player (status page, API and playback)",
        "8080",
        required=False,
    ),
    ComposeVariable(
        "MINIO_PUBLISHED_PORT",
        "the port on the host's loopback of MinIO's S3 API, where browsers fetch recordings "
        "with presigned URLs through your proxy (CALLPIPE_S3_PUBLIC_ENDPOINT_URL must name it "
        "as browsers reach it)",
        "9000",
        required=False,
    ),
)

# Settings without a usable production default: compose refuses to start without them.
REQUIRED_SETTINGS = {
    "s3_access_key": "callpipe",
    "twilio_account_sid": "ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "public_base_url": "https://calls.example.com",
    "player_public_url": "https://app.example.com",
}
TWILIO_AUTH_TOKEN_HINT = (
    "your Twilio account's Auth Token (Twilio Console, Account info; 32 hexadecimal characters)"
)
# The required secrets `callpipe secrets` makes; the Twilio auth token comes from Twilio.
MADE_SETTINGS = ("s3_secret_key", "session_secret")
# Secrets compose requires: empty in the example, so a copied file never runs on a published
# value (decision 1103).
SECRET_HINTS = {
    "s3_secret_key": f"REQUIRED secret, given to callpipe's S3 user: {MAKE_ONE}",
    "twilio_auth_token": f"REQUIRED secret: {TWILIO_AUTH_TOKEN_HINT}",
    "session_secret": f"REQUIRED secret, shared by every player: {MAKE_ONE}",
}


def env_name(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"CALLPIPE_{name.upper()}"


def _comments() -> dict[str, list[str]]:
    """Per field, the comment lines above it and the comment at the end of its line."""
    lines, _ = inspect.getsourcelines(settings_module)
    tree = ast.parse("".join(lines))
    body = next(
        node.body
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == Settings.__name__
    )
    comments: dict[str, list[str]] = {}
    for statement in body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        above: list[str] = []
        index = statement.lineno - 2
        while index >= 0 and lines[index].strip().startswith("#"):
            above.insert(0, lines[index].strip().lstrip("#").strip())
            index -= 1
        last = lines[(statement.end_lineno or statement.lineno) - 1]
        _, hash_sign, trailing = last.partition("  # ")
        if hash_sign:
            above.append(trailing.strip())
        comments[statement.target.id] = above
    return comments


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def render() -> str:
    out = [HEADER, "# --- docker-compose.yml's own variables ---"]
    for variable in COMPOSE_VARIABLES:
        if variable.secret:
            out += [f"# {variable.meaning}", f"# REQUIRED secret: {MAKE_ONE}"]
        else:
            out.append(f"# {variable.meaning}{' (REQUIRED)' if variable.required else ''}")
        out.append(f"{'' if variable.required else '# '}{variable.name}={variable.example}")
    out += ["", "# --- callpipe's settings (shared/settings.py), with their defaults ---"]
    comments = _comments()
    for name, field in Settings.model_fields.items():
        out += [f"# {line}" for line in comments.get(name, [])]
        env_variable = env_name(name, field)
        if name in SECRET_HINTS:
            out += [f"# {SECRET_HINTS[name]}", f"{env_variable}="]
        elif name in REQUIRED_SETTINGS:
            out.append(f"# REQUIRED by docker-compose.yml (local default: {_default(field)!r})")
            out.append(f"{env_variable}={REQUIRED_SETTINGS[name]}")
        else:
            out.append(f"# {env_variable}={_default(field)}")
    return "\n".join(out) + "\n"


def fresh_secrets() -> str:
    """A block for .env: a new value for every secret callpipe can make (the Twilio auth token
    is Twilio's to give)."""
    made = [variable.name for variable in COMPOSE_VARIABLES if variable.secret]
    made += [env_name(name, Settings.model_fields[name]) for name in MADE_SETTINGS]
    lines = [f"{name}={secrets.token_urlsafe(32)}" for name in made]
    lines.append(f"# TWILIO_AUTH_TOKEN= {TWILIO_AUTH_TOKEN_HINT}")
    return "\n".join(lines) + "\n"


def is_current(path: Path = ENV_EXAMPLE) -> bool:
    return path.exists() and path.read_text() == render()
