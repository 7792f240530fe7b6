"""Production's compose configuration run as processes: as close to `docker compose up` as a
machine without a Docker engine gets.

Docker Compose itself (`docker compose config`) reads docker-compose.yml with the test overlay
(deploy/compose.test.yml: the Twilio simulator) and an env file filled in as an operator
would. Every callpipe container then runs as a process: the image's ENTRYPOINT (deploy/
Dockerfile: `callpipe`, from the venv that stands in for /opt/venv) with the service's
`command`, and exactly the service's `environment` over the image's ENV. Compose's own order
is kept: the servers, then the one-off jobs (the topic job's own script, with a stand-in for
the kafka image's kafka-topics.sh; the migrations job), each to a successful end, then the
services, with `depends_on` conditions honoured and each service's own healthcheck command
run as the engine would. Two replicas of each worker (`--scale`), one of everything else.

What stands in for what:
- the compose network's names are rewritten, in environment values and commands, to where
  the stand-ins listen: kafka:9092 -> a Tansu broker, minio:9000 -> a SeaweedFS S3 server
  (on MinIO's published port, since browsers fetch presigned URLs there), postgres:5432 ->
  the local PostgreSQL with a database of the test's own (made as the postgres image makes
  POSTGRES_DB, owned by POSTGRES_USER), ingress:8000 and the like -> the service's port on
  this host. Nothing else in the environment is changed.
- a container's own network namespace: each container port becomes a host port of its own
  (a published port stays the published one). Where the image listens on a port the compose
  file does not set (ingress 8000, player 8080, a worker's health port), the process is told
  that host port through the setting the image's default comes from; a loopback address in
  a value or a healthcheck (127.0.0.1:8101) is rewritten to the container's own host port.
  The simulator's script names its port (`port=8090`): that is rewritten too.
- the minio-setup job runs MinIO's `mc` against MinIO's admin API, which SeaweedFS does not
  have: its outcome (the bucket, the callpipe user's keys) is the S3 server's start-up, and
  the job passes once those keys can reach the bucket.
- `restart: unless-stopped`: a container whose process dies (SIGKILL from outside, as the
  kernel's OOM killer does) is restarted by the engine, with its backoff (0.1 s, doubling);
  this test's supervisor does the same. The other replica takes the partitions over too.

What cannot be imitated, and where the line is: the images themselves (their Python, the
packages installed in them; the venv of this checkout stands in), the Kafka and MinIO
servers (Tansu and SeaweedFS speak their protocols), networks and name resolution (rewritten
addresses instead), volumes (each container has a fresh directory; nothing outlives the test),
users and read-only layers, resource limits, and the engine's healthcheck timing (the
healthcheck commands run, but polled here rather than on their interval). The overlay puts
the downloader in the simulator's network namespace; there two replicas would contend for
one health port, so each replica here keeps a port of its own, as production's compose
(without the overlay) gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import graphlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from callpipe.stack import Stack
from shared.settings import Settings, setting
from shared.storage import ObjectStore
from tests.support.call_scenarios import (
    _assert_completed_once as assert_completed_once,
)
from tests.support.call_scenarios import _until_processing as until_processing
from tests.support.call_scenarios import (
    a_call_completes,
    a_downloader_killed_mid_call_loses_nothing,
)
from tests.support.compose import (
    HOST_PORT_SHIFT,
    ROOT,
    ComposeCalls,
    env_lines,
    filled_env,
    image,
    reachable_env,
    resolved_services,
)
from tests.support.postgres import PG_ADMIN_DSN, new_database_name, pg_admin
from tests.support.stack import start_child

pytestmark = [pytest.mark.stack, pytest.mark.postgres]

# A container port that compose does not publish gets a host port of its own (HOST_PORT_SHIFT
# above it), REPLICA_PORT_STEP apart per replica.
REPLICA_PORT_STEP = 100
WORKERS = ("downloader", "transcriber", "extractor")
WORKER_REPLICAS = 2
# The servers of the compose file, each with the port its image listens on; local ones stand in.
SERVERS = {"kafka": 9092, "minio": 9000, "postgres": 5432}
# What the callpipe image's code listens on when compose sets no port: the setting's default.
LISTENING_SETTING = {
    "ingress": "ingress.port",
    "player": "player.port",
    "twilio-simulator": "local.simulator_port",
    "downloader": "downloader.health_port",
    "transcriber": "transcriber.health_port",
    "extractor": "extractor.health_port",
}
# Where the images keep things, and what stands for each here.
VENV = Path(sys.prefix)
KAFKA_TOOLS = "/opt/kafka/bin"
LOOPBACK = ("127.0.0.1", "localhost")
ADDRESS = re.compile(r"(?P<host>[A-Za-z0-9][\w.-]*):(?P<port>\d{2,5})(?P<path>/[\w-]+)?")
START_TIMEOUT_SECONDS = 150.0
CALL_TIMEOUT_SECONDS = 120.0
CRASH_LOOP_EXITS = 3
# Docker's restart backoff: 100 ms, doubling after each restart, reset after 10 s of running.
RESTART_DELAY_SECONDS = 0.1
RESTART_RESET_SECONDS = 10.0


def _seconds(duration: str | None, default: float) -> float:
    """A compose duration ("1m30s", "500ms") in seconds."""
    if not duration:
        return default
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts, duration
    return sum(float(number) * units[unit] for number, unit in parts)


@dataclass
class Replica:
    """One container of a service: its process, its directory, its ports on this host."""

    service: str
    index: int
    argv: list[str]
    env: dict[str, str]
    directory: Path
    ports: dict[int, int]
    restart: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_DELAY_SECONDS
    stopping: bool = False
    exits: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def log(self) -> Path:
        return self.directory / "output.log"

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    def output(self, last: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-last:]


class ComposeProcesses:
    """The resolved compose services brought up as processes, in compose's order."""

    def __init__(
        self, services: dict[str, Any], work_dir: Path, database: str, api_key: str
    ) -> None:
        self.services = services
        self.api_key = api_key
        self.work_dir = work_dir
        self.database = database
        self.replicas: dict[str, list[Replica]] = {}
        self.exit_codes: dict[str, int] = {}
        self.order = list(
            graphlib.TopologicalSorter(
                {name: set(service.get("depends_on") or {}) for name, service in services.items()}
            ).static_order()
        )
        self._servers: list[subprocess.Popen[bytes]] = []
        self._supervising = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self.s3_port = self.published("minio", SERVERS["minio"])
        self.kafka_port = SERVERS["kafka"] + HOST_PORT_SHIFT
        postgres = services["postgres"]["environment"]
        self.postgres_user = postgres["POSTGRES_USER"]
        self.postgres_password = postgres["POSTGRES_PASSWORD"]
        self.postgres_database = postgres["POSTGRES_DB"]

    # Addresses -----------------------------------------------------------------------------

    def published(self, name: str, target: int) -> int:
        for port in self.services[name].get("ports", []):
            if port["target"] == target and port.get("published"):
                return int(port["published"])
        return target + HOST_PORT_SHIFT

    def _server_address(self, host: str, port: int) -> str | None:
        """Where compose's name `host`, port `port`, is on this host; None if not a name."""
        if host == "postgres" and port == SERVERS["postgres"]:
            return "127.0.0.1:5432"
        if host == "kafka" and port == SERVERS["kafka"]:
            return f"127.0.0.1:{self.kafka_port}"
        if host == "minio" and port == SERVERS["minio"]:
            return f"127.0.0.1:{self.s3_port}"
        # Compose's DNS answers a service's name whether or not it has started yet.
        if host in self.services and port in self.ports(host, 1):
            return f"127.0.0.1:{self.ports(host, 1)[port]}"
        return None

    def _loopback_ports(self, name: str, ports: dict[int, int]) -> dict[int, int]:
        """The container's loopback: its own ports, and those of the container whose network
        namespace it shares (`network_mode: service:…`)."""
        mode = self.services[name].get("network_mode") or ""
        if mode.startswith("service:"):
            return {**self.ports(mode.removeprefix("service:"), 1), **ports}
        return ports

    def rewrite(self, text: str, name: str, ports: dict[int, int]) -> str:
        """`text` with each host:port of compose's network moved to where it is here."""
        loopback = self._loopback_ports(name, ports)

        def moved(match: re.Match[str]) -> str:
            host, port, path = match["host"], int(match["port"]), match["path"] or ""
            if host in LOOPBACK:
                address = f"{host}:{loopback[port]}" if port in loopback else None
            else:
                address = self._server_address(host, port)
            if address is None:
                return match[0]
            if host == "postgres" and path == f"/{self.postgres_database}":
                path = f"/{self.database}"
            return address + path

        return ADDRESS.sub(moved, text)

    # Containers ----------------------------------------------------------------------------

    def _image_target(self, name: str) -> str | None:
        """The Dockerfile stage a service runs, or None for an image of someone else's."""
        service = self.services[name]
        builds = {
            other["image"]: other["build"].get("target", "transcriber")
            for other in self.services.values()
            if "build" in other
        }
        if "build" in service:
            return str(service["build"].get("target", "transcriber"))
        return builds.get(service["image"])

    def ports(self, name: str, index: int) -> dict[int, int]:
        """Replica `index` of `name`: each container port it listens on, and its host port."""
        ports = {
            int(port["target"]): self.published(name, int(port["target"]))
            for port in self.services[name].get("ports", [])
        }
        listening = LISTENING_SETTING.get(name)
        if listening is not None:
            container_port = int(setting(listening).field.default)
            shift = HOST_PORT_SHIFT + REPLICA_PORT_STEP * (index - 1)
            ports.setdefault(container_port, container_port + shift)
        return ports

    def _replica(self, name: str, index: int) -> Replica:
        service = self.services[name]
        directory = self.work_dir / "containers" / f"{name}-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        ports = self.ports(name, index)
        listening = LISTENING_SETTING.get(name)
        target = self._image_target(name)
        env = {"PATH": os.environ["PATH"], "HOME": str(directory), "HOSTNAME": f"{name}-{index}"}
        entrypoint: list[str] = []
        if target is not None:
            built = image(target)
            entrypoint = built.entrypoint
            for key, value in built.env.items():
                env[key] = (
                    value.replace("/opt/venv", str(VENV))
                    .replace("/var/lib/callpipe", str(directory))
                    .replace("$PATH", os.environ["PATH"])
                )
            # The code the image carries: this checkout's, where the tests run it from.
            if "PYTHONPATH" in os.environ:
                env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        for key, value in (service.get("environment") or {}).items():
            if value is not None:
                env[key] = self.rewrite(str(value).replace("$$", "$"), name, ports)
        if listening is not None:
            port = setting(listening)
            assert port.variable not in env, (
                f"compose sets {port.variable}: map it as a container port"
            )
            env[port.variable] = str(ports[int(port.field.default)])
        argv = [*(service.get("entrypoint") or entrypoint), *(service.get("command") or [])]
        argv = [self._command_argument(arg, name, ports) for arg in argv]
        executable = shutil.which(argv[0], path=env["PATH"])
        assert executable is not None, f"{name}: {argv[0]} not on the image's PATH {env['PATH']}"
        return Replica(
            name,
            index,
            [executable, *argv[1:]],
            env,
            directory,
            ports,
            service.get("restart", "no"),
        )

    def _command_argument(self, argument: str, name: str, ports: dict[int, int]) -> str:
        argument = self.rewrite(argument.replace("$$", "$"), name, ports)
        argument = argument.replace(f"{KAFKA_TOOLS}/", f"{self.work_dir / 'kafka-bin'}/")

        def listening(match: re.Match[str]) -> str:
            port = int(match[1])
            return f"port={ports[port]}" if port in ports else match[0]

        return re.sub(r"\bport=(\d+)\b", listening, argument)

    def _count(self, name: str) -> int:
        if name in WORKERS:
            return WORKER_REPLICAS
        service = self.services[name]
        return int(service.get("scale") or (service.get("deploy") or {}).get("replicas") or 1)

    # Compose's `up` ------------------------------------------------------------------------

    def up(self) -> None:
        self._write_kafka_tools()
        jobs = {
            dependency
            for service in self.services.values()
            for dependency, spec in (service.get("depends_on") or {}).items()
            if spec["condition"] == "service_completed_successfully"
        }
        for name in self.order:
            for dependency, spec in (self.services[name].get("depends_on") or {}).items():
                if spec["condition"] == "service_healthy":
                    self.wait_healthy(dependency)
                elif spec["condition"] == "service_completed_successfully":
                    assert self.exit_codes.get(dependency) == 0, (name, dependency)
            if name in SERVERS:
                self._start_server(name)
            elif name == "minio-setup":
                self.exit_codes[name] = self._bucket_and_user_ready()
            else:
                self.replicas[name] = [self._replica(name, i + 1) for i in range(self._count(name))]
                for replica in self.replicas[name]:
                    replica.start()
                if name in jobs:
                    self._wait_completed(name)
        self._supervisor.start()
        for name in self.replicas:
            if name not in jobs:
                self.wait_healthy(name)

    def _write_kafka_tools(self) -> None:
        tools = self.work_dir / "kafka-bin"
        tools.mkdir(parents=True, exist_ok=True)
        script = tools / "kafka-topics.sh"
        script.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
            "from tests.support.compose import kafka_topics\nsys.exit(kafka_topics(sys.argv[1:]))\n"
        )
        script.chmod(0o755)

    def _start_server(self, name: str) -> None:
        if name == "postgres":
            asyncio.run(self._create_database())
            return
        setup = self.services["minio-setup"]["environment"]
        stack = Stack(
            Settings(
                data_dir=self.work_dir / "servers",
                kafka={"bootstrap": f"127.0.0.1:{self.kafka_port}"},
                s3={
                    "endpoint_url": f"http://127.0.0.1:{self.s3_port}",
                    "bucket": setup["BUCKET"],
                    "access_key": setup["ACCESS_KEY"],
                    "secret_key": setup["SECRET_KEY"],
                },
                local={"broker_storage": "memory"},
                player={"api_key": "unused"},
            )
        )
        child = {"minio": stack.children[0], "kafka": stack.children[1]}[name]
        self._servers.append(start_child(child, stack.data_dir, self.work_dir))

    async def _create_database(self) -> None:
        """What the postgres image does at its first start: POSTGRES_USER with
        POSTGRES_PASSWORD, owning a database (the test's own instead of POSTGRES_DB)."""
        user, password = self.postgres_user, self.postgres_password.replace("'", "''")
        with contextlib.suppress(asyncpg.DuplicateObjectError):
            await pg_admin(f'CREATE ROLE "{user}" LOGIN')
        await pg_admin(f"ALTER ROLE \"{user}\" PASSWORD '{password}'")
        await pg_admin(f'CREATE DATABASE "{self.database}" OWNER "{user}"')

    def _bucket_and_user_ready(self) -> int:
        setup = self.services["minio-setup"]["environment"]
        settings = Settings(
            s3={
                "endpoint_url": f"http://127.0.0.1:{self.s3_port}",
                "bucket": setup["BUCKET"],
                "access_key": setup["ACCESS_KEY"],
                "secret_key": setup["SECRET_KEY"],
            }
        )

        async def check() -> bool:
            store = ObjectStore(settings.s3)
            await store.start()
            try:
                return await store.head_bucket()
            finally:
                await store.stop()

        return 0 if asyncio.run(check()) else 1

    def _wait_completed(self, name: str) -> None:
        for replica in self.replicas[name]:
            assert replica.process is not None
            try:
                code = replica.process.wait(timeout=START_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                pytest.fail(f"job {name} still running:\n{replica.output()}")
            assert code == 0, f"job {name} exited with {code}:\n{replica.output()}"
            self.exit_codes[name] = code

    def _healthy(self, replica: Replica) -> bool:
        """The service's healthcheck command, run in the container as the engine runs it."""
        healthcheck = self.services[replica.service].get("healthcheck") or {}
        test = healthcheck.get("test")
        if not test or test[0] == "NONE":
            return replica.process is not None and replica.process.poll() is None
        argv = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
        argv = [self._command_argument(arg, replica.service, replica.ports) for arg in argv]
        executable = shutil.which(argv[0], path=replica.env["PATH"]) or argv[0]
        try:
            result = subprocess.run(
                [executable, *argv[1:]],
                env=replica.env,
                cwd=replica.directory,
                capture_output=True,
                timeout=_seconds(healthcheck.get("timeout"), 30.0),
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def wait_healthy(self, name: str) -> None:
        if name in SERVERS:
            return  # each stand-in server is started healthy
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        waiting = list(self.replicas[name])
        while waiting and time.monotonic() < deadline:
            for replica in list(waiting):
                if len(replica.exits) >= CRASH_LOOP_EXITS or (
                    replica.restart == "no"
                    and replica.process is not None
                    and replica.process.poll() is not None
                ):
                    pytest.fail(
                        f"{replica.name} exited ({replica.exits or replica.process}):\n"
                        f"{replica.output()}"
                    )
                if self._healthy(replica):
                    waiting.remove(replica)
            time.sleep(0.5)
        if waiting:
            pytest.fail(
                f"not healthy in {START_TIMEOUT_SECONDS:.0f} s: {[r.name for r in waiting]}\n"
                + "\n".join(f"--- {r.name}\n{r.output()}" for r in waiting)
            )

    def _supervise(self) -> None:
        """The engine's restart policy: a dead container is started again, with backoff."""
        while not self._supervising.wait(0.1):
            for replicas in list(self.replicas.values()):
                for replica in replicas:
                    self._restart_if_dead(replica)

    def _restart_if_dead(self, replica: Replica) -> None:
        process = replica.process
        if replica.stopping or process is None or process.poll() is None:
            return
        if replica.restart not in ("always", "unless-stopped") and not (
            replica.restart.startswith("on-failure") and process.returncode != 0
        ):
            return
        ran = time.monotonic() - replica.started_at
        replica.exits.append(process.returncode)
        if ran >= RESTART_RESET_SECONDS:
            replica.backoff = RESTART_DELAY_SECONDS
        time.sleep(replica.backoff)
        replica.backoff *= 2
        replica.restarts += 1
        replica.start()

    def kill(self, replica: Replica) -> None:
        """SIGKILL from outside the engine (not `docker kill`, which the policy respects)."""
        assert replica.process is not None
        os.killpg(replica.process.pid, signal.SIGKILL)

    def down(self) -> None:
        """`docker compose down`: dependents first, SIGTERM, SIGKILL after the grace period."""
        self._supervising.set()
        if self._supervisor.is_alive():
            self._supervisor.join()
        for name in reversed(self.order):
            grace = _seconds(self.services[name].get("stop_grace_period"), 10.0)
            for replica in self.replicas.get(name, []):
                replica.stopping = True
                process = replica.process
                if process is None or process.poll() is not None:
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        for server in reversed(self._servers):
            server.terminate()
            server.wait(timeout=30)
        asyncio.run(self._drop_database())

    async def _drop_database(self) -> None:
        await pg_admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        # The role stays while another database (a concurrent run's) is still owned by it.
        with contextlib.suppress(asyncpg.DependentObjectsStillExistError):
            await pg_admin(f'DROP ROLE IF EXISTS "{self.postgres_user}"')


class ComposeProcessStack(ComposeCalls):
    """The CallStack adapter: the simulator's and the player's published ports, and the
    engine's restart policy as the supervisor that brings a killed worker back."""

    def __init__(self, running: ComposeProcesses) -> None:
        [simulator] = running.replicas["twilio-simulator"]
        [simulator_port] = simulator.ports.values()
        player_port = running.published("player", 8080)
        super().__init__(simulator_port, player_port, running.api_key, CALL_TIMEOUT_SECONDS)
        self.running = running
        self.killed: list[Replica] = []

    def kill_worker(self, name: str) -> None:
        """SIGKILLs the replica of `name` that is handling a message (the first if none is)."""
        replicas = self.running.replicas[name]
        busy = [replica for replica in replicas if _in_flight(replica, name) > 0]
        victim = (busy or replicas)[0]
        self.running.kill(victim)
        self.killed.append(victim)


def _in_flight(replica: Replica, worker: str) -> float:
    port = replica.ports[int(setting(LISTENING_SETTING[worker]).field.default)]
    try:
        page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    found = re.search(rf'^callpipe_in_flight\{{worker="{worker}"\}} (\S+)$', page, re.MULTILINE)
    return float(found[1]) if found else 0.0


def _operator_env(directory: Path, api_key: str) -> Path:
    """The example env file as an operator fills it in, with the published ports moved clear
    of other stacks and the public addresses the test reaches things on."""
    return filled_env(directory, env_lines(reachable_env(api_key)))


@pytest.fixture(scope="module")
def compose_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeProcesses]:
    work_dir = tmp_path_factory.mktemp("compose-processes")
    api_key = f"cp_{secrets.token_urlsafe(24)}"
    services = resolved_services(_operator_env(work_dir, api_key), overlay=True)
    running = ComposeProcesses(services, work_dir, new_database_name(), api_key)
    try:
        running.up()
        yield running
    finally:
        running.down()


@pytest.fixture(scope="module")
def compose_stack(compose_processes: ComposeProcesses) -> ComposeProcessStack:
    return ComposeProcessStack(compose_processes)


def _until_restarted(running: ComposeProcesses, replica: Replica) -> None:
    """The killed replica back, started again by the restart policy, and healthy."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if replica.restarts >= 1 and running._healthy(replica):
            return
        time.sleep(0.5)
    pytest.fail(f"{replica.name} not restarted and healthy:\n{replica.output()}")


def _assert_restarted_after_sigkill(running: ComposeProcesses, replica: Replica) -> None:
    _until_restarted(running, replica)
    assert replica.exits == [-signal.SIGKILL], replica.exits


async def _partitions(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(await admin.list_topics())
        return {topic["topic"]: len(topic["partitions"]) for topic in described}
    finally:
        await admin.close()


async def _schema_revision(database: str) -> str | None:
    connection = await asyncpg.connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}")
    try:
        revision: str | None = await connection.fetchval("SELECT version_num FROM alembic_version")
        return revision
    finally:
        await connection.close()


def test_the_jobs_made_the_topics_and_the_schema_before_the_services_started(
    compose_processes: ComposeProcesses,
) -> None:
    running = compose_processes
    topic_job = running.services["kafka-topics"]["environment"]
    partitions = asyncio.run(_partitions(f"127.0.0.1:{running.kafka_port}"))
    assert {topic: partitions.get(topic) for topic in topic_job["TOPICS"].split()} == dict.fromkeys(
        topic_job["TOPICS"].split(), int(topic_job["PARTITIONS"])
    )
    assert asyncio.run(_schema_revision(running.database))
    assert running.exit_codes == {"kafka-topics": 0, "minio-setup": 0, "migrate": 0}
    started = {name: min(r.started_at for r in running.replicas[name]) for name in WORKERS}
    jobs_done = max(r.started_at for r in running.replicas["migrate"])
    assert all(at > jobs_done for at in started.values())
    assert {name: len(running.replicas[name]) for name in WORKERS} == dict.fromkeys(
        WORKERS, WORKER_REPLICAS
    )


def test_a_call_completes(compose_stack: ComposeProcessStack) -> None:
    a_call_completes(compose_stack)


def test_a_downloader_killed_mid_call_loses_nothing(compose_stack: ComposeProcessStack) -> None:
    a_downloader_killed_mid_call_loses_nothing(compose_stack)
    [killed] = compose_stack.killed[-1:]
    assert killed.service == "downloader"
    _assert_restarted_after_sigkill(compose_stack.running, killed)


def test_a_transcriber_and_an_extractor_killed_mid_run_lose_nothing(
    compose_stack: ComposeProcessStack,
) -> None:
    """A transcriber replica is killed mid-transcription and an extractor replica before the
    calls reach it: every call completes, each stage's output once, and both come back."""
    calls = [
        compose_stack.place_call(audio)
        for audio in ("plumber_boston", "electrician_denver", "plumber_boston")
    ]
    until_processing(compose_stack, calls[0], "transcript")
    compose_stack.kill_worker("transcriber")
    # The extractor's work takes milliseconds: it is killed with the calls still ahead of it.
    compose_stack.kill_worker("extractor")
    finished = [compose_stack.wait_for_call(call_sid) for call_sid in calls]
    for call in finished:
        assert_completed_once(call)
    assert [call["lead_city"] for call in finished] == ["Boston", "Denver", "Boston"]
    assert [killed.service for killed in compose_stack.killed[-2:]] == ["transcriber", "extractor"]
    for killed in compose_stack.killed[-2:]:
        _assert_restarted_after_sigkill(compose_stack.running, killed)
