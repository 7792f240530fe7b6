""".env.example and the README's configuration table, generated from the settings' descriptions.

Each setting appears with its environment variable, its default and the description it has in
shared/settings.py. The variables that docker-compose.yml itself needs (passwords of the
infrastructure, image, replication) come first; those without a usable default are left
uncommented with a placeholder, so a copied file shows at once what must be filled in.
"""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from shared.settings import Setting, every_setting, setting

ENV_EXAMPLE = Path(".env.example")
README = Path("README.md")

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
    "s3.access_key": "callpipe",
    "twilio.account_sid": "ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "ingress.public_base_url": "https://calls.example.com",
    "player.public_url": "https://app.example.com",
}
TWILIO_AUTH_TOKEN_HINT = (
    "your Twilio account's Auth Token (Twilio Console, Account info; 32 hexadecimal characters)"
)
# The required secrets `callpipe secrets` makes; the Twilio auth token comes from Twilio.
MADE_SETTINGS = ("s3.secret_key", "player.session_secret", "keys.wrapping_key")
# Secrets compose requires: empty in the example, so a copied file never runs on a published
# value (decision 1103).
SECRET_HINTS = {
    "s3.secret_key": f"REQUIRED secret, given to callpipe's S3 user: {MAKE_ONE}",
    "twilio.auth_token": f"REQUIRED secret: {TWILIO_AUTH_TOKEN_HINT}",
    "player.session_secret": f"REQUIRED secret, shared by every player: {MAKE_ONE}",
    "keys.wrapping_key": f"REQUIRED secret, shared by every service: {MAKE_ONE}",
}
TABLE_BEGIN = "<!-- settings table: generated by `callpipe env-example --write` -->"
TABLE_END = "<!-- end of settings table -->"


def _default(each: Setting) -> str:
    value = each.field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _sections() -> Iterator[tuple[str, list[Setting]]]:
    """The settings by slice, each slice titled by its docstring; the root's come first."""
    titles: dict[str | None, str] = {None: "where callpipe keeps its files"}
    groups: dict[str | None, list[Setting]] = {}
    for each in every_setting():
        doc = (each.model.__doc__ or "").strip().rstrip(".")
        titles.setdefault(each.slice, f"`{each.slice}`: {doc[:1].lower()}{doc[1:]}")
        groups.setdefault(each.slice, []).append(each)
    for slice_name, members in groups.items():
        yield titles[slice_name], members


def render() -> str:
    out = [HEADER, "# --- docker-compose.yml's own variables ---"]
    for variable in COMPOSE_VARIABLES:
        if variable.secret:
            out += [f"# {variable.meaning}", f"# REQUIRED secret: {MAKE_ONE}"]
        else:
            out.append(f"# {variable.meaning}{' (REQUIRED)' if variable.required else ''}")
        out.append(f"{'' if variable.required else '# '}{variable.name}={variable.example}")
    for title, members in _sections():
        out += ["", f"# --- {title} ---"]
        for each in members:
            out += [f"# {line}" for line in textwrap.wrap(each.field.description or "", 95)]
            if each.path in SECRET_HINTS:
                out += [f"# {SECRET_HINTS[each.path]}", f"{each.variable}="]
            elif each.path in REQUIRED_SETTINGS:
                out.append(f"# REQUIRED by docker-compose.yml (local default: {_default(each)!r})")
                out.append(f"{each.variable}={REQUIRED_SETTINGS[each.path]}")
            else:
                out.append(f"# {each.variable}={_default(each)}")
    return "\n".join(out) + "\n"


def render_table() -> str:
    """The README's configuration table: one row per setting, a title row per slice."""
    rows = [TABLE_BEGIN, "", "| variable | default | meaning |", "|---|---|---|"]
    for title, members in _sections():
        rows.append(f"| **{title}** | | |")
        for each in members:
            default = _default(each)
            shown = f"`{default}`" if default else "empty"
            if isinstance(each.field.default, SecretStr) and default:
                shown = "a local default"
            meaning = (each.field.description or "").replace("|", "\\|")
            rows.append(f"| `{each.variable}` | {shown} | {meaning} |")
    return "\n".join([*rows, "", TABLE_END])


def with_table(readme: str) -> str:
    """`readme` with its configuration table regenerated."""
    start, end = readme.index(TABLE_BEGIN), readme.index(TABLE_END) + len(TABLE_END)
    return readme[:start] + render_table() + readme[end:]


def fresh_secrets() -> str:
    """A block for .env: a new value for every secret callpipe can make (the Twilio auth token
    is Twilio's to give)."""
    made = [variable.name for variable in COMPOSE_VARIABLES if variable.secret]
    made += [setting(path).variable for path in MADE_SETTINGS]
    lines = [f"{name}={secrets.token_urlsafe(32)}" for name in made]
    lines.append(f"# TWILIO_AUTH_TOKEN= {TWILIO_AUTH_TOKEN_HINT}")
    return "\n".join(lines) + "\n"


def is_current(path: Path = ENV_EXAMPLE, readme: Path = README) -> bool:
    return (
        path.exists()
        and path.read_text() == render()
        and readme.exists()
        and readme.read_text() == with_table(readme.read_text())
    )
