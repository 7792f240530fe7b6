"""A stage worker whatever its broker does: started before the broker, it waits for it
(`/healthz` says `connecting`) and then works; with the broker and its S3 server gone under
it, SIGTERM still ends it, exit status 0, within the grace plus the close time; the message
it had in flight comes again after the restart, handled once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaTimeoutError
from sqlalchemy import make_url
from twilio.request_validator import RequestValidator

from callpipe.stack import Stack, settings_env
from shared.call_keys import Envelopes
from shared.events import (
    AnyEvent,
    Event,
    Lead,
    RecordingCompleted,
    SummaryReady,
    TranscriptReady,
    encode,
)
from shared.kafka.producer import EventProducer
from shared.kafka.topics import replay
from shared.kafka.worker import StageWorker, StageWorkerSettings
from shared.settings import Settings, ShutdownSettings
from shared.shutdown import Shutdown
from shared.storage import ObjectStore, transcript_key
from shared.transcript import Transcript
from tests.support import events as factories
from tests.support.stack import start_child

# Ports of this file's own broker, S3 server (it also takes +555…+1020 and each +10000),
# stage worker health and unanswering S3 endpoint: clear of the servers other modules keep
# up for the whole session (the downloader's S3 server on 26333 and what it takes).
_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
BROKER_PORT = 27592 + _OFFSET
S3_PORT = 27633 + _OFFSET
HEALTH_PORT = 27601 + _OFFSET
SILENT_S3_PORT = 27701 + _OFFSET
DATABASE_PORT = 27702 + _OFFSET
LATE_S3_PORT = 27703 + _OFFSET
NOBODY_PORT = 27704 + _OFFSET

E = TypeVar("E", bound=Event)

GRACE_SECONDS = 1.0
CLOSE_SECONDS = 2.0
# Beyond the bound: the interpreter's own start-up and exit.
STOP_SLACK_SECONDS = 2.5
WAIT_SECONDS = 60.0


class Servers:
    """The broker and its S3 server as `callpipe up` starts them, each stoppable alone."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.stack = Stack(
            Settings(
                data_dir=data_dir,
                kafka={"bootstrap": f"127.0.0.1:{BROKER_PORT}"},
                s3={"endpoint_url": f"http://127.0.0.1:{S3_PORT}"},
            )
        )
        self.settings = self.stack.settings
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        child = next(child for child in self.stack.children if child.name == name)
        self.processes[name] = start_child(child, self.data_dir, self.data_dir)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    running = Servers(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def broker_away(tmp_path: Path) -> Settings:
    """Settings whose broker (this file's, not started) does not answer."""
    return Settings(data_dir=tmp_path, kafka={"bootstrap": f"127.0.0.1:{BROKER_PORT}"})


@pytest.fixture
def late_database() -> Iterator[LateForwarder]:
    """The PostgreSQL server behind a port that refuses connections until `open()`."""
    with LateForwarder(DATABASE_PORT, ("127.0.0.1", 5432)) as database:
        yield database


def health_port_setting(service: str) -> str:
    """The ingress and the player answer /healthz on their HTTP port; a stage worker on a port
    of its own."""
    if service in ("ingress", "player"):
        return f"CALLPIPE_{service.upper()}_PORT"
    return f"CALLPIPE_{service.upper()}_HEALTH_PORT"


class Worker:
    """`callpipe run <service>` (the extractor unless told), or another long-running callpipe
    `command`, as its own process, its output in a file."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        service: str = "extractor",
        command: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.log_path = log_path
        self.health = f"http://127.0.0.1:{HEALTH_PORT}/healthz"
        environment = {
            **os.environ,
            **settings_env(settings),
            "PYTHONUNBUFFERED": "1",
            "CALLPIPE_EXTRACTOR_BACKEND": "instant",
            health_port_setting(service): str(HEALTH_PORT),
            "CALLPIPE_ANALYTICS_PORT": str(HEALTH_PORT),
            "CALLPIPE_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
            "CALLPIPE_SHUTDOWN_CLOSE_SECONDS": str(CLOSE_SECONDS),
            "CALLPIPE_RETRY_MAX_SECONDS": "1",
            **env,
        }
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "callpipe", *(command or ("run", service))],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *_: object) -> None:
        self.kill()

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_text(self, text: str, times: int = 1) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while self.output().count(text) < times:
            assert self.process.poll() is None, f"it exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"never said {text!r}:\n{self.output()}"
            time.sleep(0.2)

    def status(self) -> tuple[int, Any] | None:
        try:
            response = httpx.get(self.health, timeout=2)
        except httpx.HTTPError:
            return None
        return response.status_code, response.json()

    def wait_for_status(self, wanted: tuple[int, Any]) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the worker exited:\n{self.output()}"
            if self.status() == wanted:
                return
            time.sleep(0.2)
        pytest.fail(f"/healthz never said {wanted}, last {self.status()}:\n{self.output()}")

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; its exit status and how long it took to exit."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"still running 60 s after SIGTERM:\n{self.output()}")
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class SilentServer:
    """A port that takes connections and never answers: an S3 server that hangs."""

    def __init__(self, port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections.append(connection)

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        self._thread.join(timeout=5)


class LateForwarder:
    """A port of the test's own that refuses connections until `open()`, then forwards each
    to `target`: a server that comes up after the process that needs it."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self._target = target
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> LateForwarder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self._target)
            except OSError:
                return
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self._listener is not None:
            # Wakes the accepting thread: a socket closed under a blocked accept() goes on
            # taking connections.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for each in self._sockets:
            each.close()


def wait_for_output(worker: Worker, text: str) -> None:
    """Until a line of the worker's log says that `text` is unreachable."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not any(text in line and "unreachable" in line for line in worker.output().splitlines()):
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.2)


def through(forwarder: LateForwarder, database_url: str) -> str:
    return str(make_url(database_url).set(host="127.0.0.1", port=forwarder.port))


def transcript_ready(settings: Settings, call_sid: str) -> TranscriptReady:
    """A transcript.ready of `call_sid`, its (wordless) transcript stored."""
    key = transcript_key("clean-stop", call_sid, "RE" + call_sid[2:])
    transcript = Transcript(
        call_sid=call_sid,
        recording_sid="RE" + call_sid[2:],
        language="en",
        duration_seconds=1.0,
        speakers=[],
        utterances=[],
        model="test",
    )

    async def store() -> None:
        objects = ObjectStore(settings.s3)
        await objects.start()
        try:
            await objects.put(key, transcript.model_dump_json().encode(), "application/json")
        finally:
            await objects.stop()

    asyncio.run(store())
    return factories.transcript_ready(call_sid, "clean-stop", transcript_key=key)


def publish(settings: Settings, event: TranscriptReady) -> None:
    async def send() -> None:
        producer = EventProducer(settings.kafka, Envelopes.of(settings))
        await producer.start()
        try:
            await producer.publish(event)
        finally:
            await producer.stop()

    asyncio.run(send())


def on_topic(settings: Settings, topic: str, kind: type[E], wanted: Callable[[E], bool]) -> list[E]:
    """Every event of `kind` on `topic`, from the beginning, that is `wanted`."""

    async def read() -> list[E]:
        return [
            event
            async for event in replay(settings.kafka, [topic], Envelopes.of(settings))
            if isinstance(event, kind) and wanted(event)
        ]

    return asyncio.run(read())


def summaries_of(settings: Settings, call_sid: str) -> list[SummaryReady]:
    return on_topic(settings, "summary.ready", SummaryReady, lambda e: e.call_sid == call_sid)


def wait_for_summary(settings: Settings, call_sid: str) -> list[SummaryReady]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = summaries_of(settings, call_sid)
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"no summary.ready for {call_sid} in {WAIT_SECONDS} s")


@pytest.mark.stack
def test_a_worker_started_before_the_broker_waits_for_it_then_works(
    servers: Servers, tmp_path: Path
) -> None:
    servers.start("s3")
    with Worker(servers.settings, tmp_path / "worker.log") as worker:
        worker.wait_for_status((503, {"status": "connecting"}))
        time.sleep(2)  # a few tries at the broker, which must neither end it nor flood its log
        assert worker.process.poll() is None, worker.output()
        assert worker.status() == (503, {"status": "connecting"})

        servers.start("broker")
        worker.wait_for_status((200, {"status": "ready"}))
        event = transcript_ready(servers.settings, "CAstartsbeforebroker")
        publish(servers.settings, event)
        assert [s.outcome for s in wait_for_summary(servers.settings, event.call_sid)]
        code, seconds = worker.terminate()
        print(f"stop with the broker up: {seconds:.2f} s")
    output = worker.output()
    assert code == 0, output
    assert "Traceback" not in output
    assert output.count("unreachable") == 1, output
    assert "reached in" in output


@pytest.mark.stack
def test_with_its_broker_gone_a_worker_stops_in_time_and_its_message_comes_again_once(
    servers: Servers, tmp_path: Path
) -> None:
    servers.start("s3")
    servers.start("broker")
    with (
        SilentServer(SILENT_S3_PORT) as silent,
        Worker(
            servers.settings,
            tmp_path / "worker.log",
            CALLPIPE_S3_ENDPOINT_URL=f"http://127.0.0.1:{SILENT_S3_PORT}",
        ) as worker,
    ):
        worker.wait_for_status((200, {"status": "ready"}))
        event = transcript_ready(servers.settings, "CAinflightatstop")
        publish(servers.settings, event)
        deadline = time.monotonic() + WAIT_SECONDS
        while not silent.connections and time.monotonic() < deadline:
            time.sleep(0.1)
        assert silent.connections, "the worker never asked S3 for the transcript"

        servers.stop("broker")
        servers.stop("s3")
        worker.wait_for_status((503, {"status": "connecting"}))
        code, seconds = worker.terminate()
        print(f"stop with the broker and S3 gone: {seconds:.2f} s")
    output = worker.output()
    assert code == 0, output
    assert seconds < GRACE_SECONDS + CLOSE_SECONDS + STOP_SLACK_SECONDS, output
    stop_lines = [line for line in output.splitlines() if "extractor stopped in" in line]
    assert len(stop_lines) == 1, output
    assert "1 unfinished messages (handed back uncommitted)" in stop_lines[0]
    assert output.count("broker out of reach, waiting for it") == 1, output
    # The client library's failed tries: each said once, not once a try.
    client_lines = [
        line.split(" aiokafka")[1] for line in output.splitlines() if " aiokafka" in line
    ]
    assert len(client_lines) == len(set(client_lines)), output

    servers.start("s3")
    servers.start("broker")
    with Worker(servers.settings, tmp_path / "worker-again.log") as again:
        again.wait_for_status((200, {"status": "ready"}))
        wait_for_summary(servers.settings, event.call_sid)
        # Past a commit interval: a second handling would have published by now.
        time.sleep(2)
        assert len(summaries_of(servers.settings, event.call_sid)) == 1
        code, seconds = again.terminate()
        print(f"stop after the restart: {seconds:.2f} s")
    assert code == 0, again.output()


@pytest.mark.stack
@pytest.mark.postgres
def test_a_downloader_started_before_its_s3_server_and_database_waits_for_both(
    servers: Servers, tmp_path: Path, postgres_database_url: str, late_database: LateForwarder
) -> None:
    servers.start("s3")  # the local broker keeps its log there
    servers.start("broker")
    with (
        LateForwarder(LATE_S3_PORT, ("127.0.0.1", S3_PORT)) as s3,
        Worker(
            servers.settings,
            tmp_path / "downloader.log",
            "downloader",
            CALLPIPE_S3_ENDPOINT_URL=f"http://127.0.0.1:{LATE_S3_PORT}",
            CALLPIPE_DATABASE_URL=through(late_database, postgres_database_url),
        ) as worker,
    ):
        worker.wait_for_status((503, {"status": "connecting"}))
        worker.wait_for_text("unreachable")  # the S3 server
        time.sleep(2)  # a few tries at the S3 server, which must neither end it nor flood its log
        s3.open()
        worker.wait_for_text("unreachable", times=2)  # the database
        time.sleep(2)
        assert worker.status() == (503, {"status": "connecting"}), worker.output()
        late_database.open()
        worker.wait_for_status((200, {"status": "ready"}))
        code, _ = worker.terminate()
    output = worker.output()
    assert code == 0, output
    assert "Traceback" not in output
    unreachable = [line for line in output.splitlines() if "unreachable" in line]
    assert len(unreachable) == 2, output
    assert "S3 server" in unreachable[0] and "database" in unreachable[1], output
    assert output.count("reached in") == 3, output  # the broker, the S3 server, the database


@pytest.mark.stack
@pytest.mark.postgres
def test_the_player_started_before_its_database_and_broker_answers_503_then_projects_a_call(
    servers: Servers, tmp_path: Path, postgres_database_url: str, late_database: LateForwarder
) -> None:
    api_key = "k" * 40
    calls = f"http://127.0.0.1:{HEALTH_PORT}/api/calls"
    headers = {"Authorization": f"Bearer {api_key}"}
    with Worker(
        servers.settings,
        tmp_path / "player.log",
        "player",
        CALLPIPE_DATABASE_URL=through(late_database, postgres_database_url),
        CALLPIPE_API_KEY=api_key,
        CALLPIPE_DEFAULT_BUSINESS_ID="clean-stop",
    ) as worker:
        worker.wait_for_status((503, {"status": "connecting"}))
        waiting = httpx.get(calls, headers=headers, timeout=5)
        assert waiting.status_code == 503, waiting.text
        assert waiting.json() == {"detail": "waiting for the database"}
        assert waiting.headers["Retry-After"].isdigit()

        late_database.open()
        deadline = time.monotonic() + WAIT_SECONDS
        while httpx.get(calls, headers=headers, timeout=5).status_code != 200:
            assert time.monotonic() < deadline, worker.output()
            time.sleep(0.2)
        assert worker.status() == (503, {"status": "connecting"})  # the broker is still away

        servers.start("s3")
        servers.start("broker")
        worker.wait_for_status((200, {"status": "ready"}))
        event = transcript_ready(servers.settings, "CAplayerbeforedatabase")
        # Sealed with a key in the player's own database, which it opens with.
        publish(servers.settings.updated(database={"url": postgres_database_url}), event)
        deadline = time.monotonic() + WAIT_SECONDS
        listed: list[str] = []
        while event.call_sid not in listed:
            assert time.monotonic() < deadline, worker.output()
            time.sleep(0.3)
            answer = httpx.get(calls, headers=headers, timeout=5)
            listed = [call["call_sid"] for call in answer.json().get("calls", [])]
        code, seconds = worker.terminate()
    output = worker.output()
    assert code == 0, output
    assert seconds < GRACE_SECONDS + CLOSE_SECONDS + STOP_SLACK_SECONDS, output
    assert "Traceback" not in output
    unreachable = [line for line in output.splitlines() if "unreachable" in line]
    assert len(unreachable) == 2, output
    assert "database" in unreachable[0] and "broker" in unreachable[1], output


@pytest.mark.stack
@pytest.mark.postgres
def test_the_ingress_started_before_its_database_answers_503_then_stores_and_publishes(
    servers: Servers, tmp_path: Path, postgres_database_url: str, late_database: LateForwarder
) -> None:
    # The calls' keys are in the ingress's database: its events are read with them.
    keyed = servers.settings.updated(database={"url": postgres_database_url})
    servers.start("s3")
    servers.start("broker")
    auth_token = secrets.token_hex(16)
    public = f"http://127.0.0.1:{HEALTH_PORT}"
    url = f"{public}/twilio/recording-status"
    callback = {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": "CAingressbeforedatabase",
        "RecordingSid": "RE" + secrets.token_hex(16),
        "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE1",
        "RecordingStatus": "completed",
        "RecordingDuration": "4",
        "RecordingChannels": "2",
    }
    signed = {"X-Twilio-Signature": RequestValidator(auth_token).compute_signature(url, callback)}
    with Worker(
        servers.settings,
        tmp_path / "ingress.log",
        "ingress",
        CALLPIPE_DATABASE_URL=through(late_database, postgres_database_url),
        TWILIO_AUTH_TOKEN=auth_token,
        CALLPIPE_PUBLIC_BASE_URL=public,
    ) as ingress:
        # Its relay starts once it can read its outbox.
        ingress.wait_for_status(
            (503, {"status": "connecting", "database": "connecting", "broker": "connecting"})
        )
        refused = httpx.post(url, data=callback, headers=signed, timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"

        late_database.open()
        ingress.wait_for_status((200, {"status": "ok", "broker": "connected"}))
        stored = httpx.post(url, data=callback, headers=signed, timeout=10)
        assert stored.status_code == 204, stored.text
        deadline = time.monotonic() + WAIT_SECONDS
        while not recordings_completed(keyed, callback["RecordingSid"]):
            assert time.monotonic() < deadline, ingress.output()
            time.sleep(0.5)
        code, seconds = ingress.terminate()
    output = ingress.output()
    assert code == 0, output
    assert seconds < GRACE_SECONDS + CLOSE_SECONDS + STOP_SLACK_SECONDS, output
    assert "Traceback" not in output
    assert len(recordings_completed(keyed, callback["RecordingSid"])) == 1


def recordings_completed(settings: Settings, recording_sid: str) -> list[RecordingCompleted]:
    return on_topic(
        settings,
        "recording.completed",
        RecordingCompleted,
        lambda e: e.recording_sid == recording_sid,
    )


@pytest.mark.stack
@pytest.mark.postgres
@pytest.mark.parametrize("service", ["downloader", "player"])
def test_a_database_role_that_does_not_exist_fails_the_start_saying_so(
    servers: Servers, tmp_path: Path, service: str, postgres_database_url: str
) -> None:
    servers.start("s3")
    servers.start("broker")
    wrong_role = str(make_url(postgres_database_url).set(username="nobody"))
    with Worker(
        servers.settings,
        tmp_path / f"{service}.log",
        service,
        CALLPIPE_DATABASE_URL=wrong_role,
    ) as worker:
        code = worker.process.wait(timeout=60)
    output = worker.output()
    assert code != 0, output
    assert 'role "nobody" does not exist' in output, output


def test_a_malformed_broker_address_fails_at_once_saying_so(tmp_path: Path) -> None:
    with Worker(
        Settings(data_dir=tmp_path), tmp_path / "worker.log", CALLPIPE_KAFKA_BOOTSTRAP="kafka:x"
    ) as worker:
        code = worker.process.wait(timeout=30)
    output = worker.output()
    assert code != 0
    assert "BrokerMisconfigured" in output and "CALLPIPE_KAFKA_BOOTSTRAP='kafka:x'" in output


def test_a_worker_waiting_for_the_broker_stops_at_once(
    tmp_path: Path, broker_away: Settings
) -> None:
    with Worker(broker_away, tmp_path / "worker.log") as worker:
        worker.wait_for_status((503, {"status": "connecting"}))
        code, seconds = worker.terminate()
        print(f"stop while connecting: {seconds:.2f} s")
    assert code == 0, worker.output()
    assert seconds < CLOSE_SECONDS, worker.output()
    assert "stopped while waiting for the broker" in worker.output()


def test_the_reconciler_waiting_for_the_broker_stops_at_once(
    tmp_path: Path, broker_away: Settings
) -> None:
    with Worker(broker_away, tmp_path / "reconciler.log", command=("reconcile",)) as reconciler:
        reconciler.wait_for_text("unreachable")
        code, seconds = reconciler.terminate()
    output = reconciler.output()
    assert code == 0, output
    assert seconds < CLOSE_SECONDS, output
    assert "reconciler stopped while waiting for the broker" in output


@pytest.mark.stack
def test_the_reconciler_without_its_database_skips_rounds_in_one_line_each(
    servers: Servers, tmp_path: Path
) -> None:
    servers.start("s3")
    servers.start("broker")
    with Worker(
        servers.settings,
        tmp_path / "reconciler.log",
        command=("reconcile",),
        CALLPIPE_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{NOBODY_PORT}/x",
        CALLPIPE_RECONCILE_INTERVAL_SECONDS="0.5",
    ) as reconciler:
        reconciler.wait_for_text("reconciliation round skipped", times=3)
        code, _ = reconciler.terminate()
    output = reconciler.output()
    assert code == 0, output
    assert "Traceback" not in output
    assert "Connect call failed" in output


def test_analytics_waiting_for_the_broker_says_so_and_stops_at_once(
    tmp_path: Path, broker_away: Settings
) -> None:
    with Worker(broker_away, tmp_path / "analytics.log", command=("analytics",)) as analytics:
        analytics.wait_for_status((503, {"status": "connecting"}))
        code, seconds = analytics.terminate()
        print(f"analytics stop while connecting: {seconds:.2f} s")
    assert code == 0, analytics.output()
    assert seconds < CLOSE_SECONDS, analytics.output()
    assert "analytics stopped in" in analytics.output()


async def test_a_stop_step_that_gets_no_answer_is_abandoned_at_the_bound_and_named() -> None:
    shutdown = Shutdown("unit", ShutdownSettings(grace_seconds=0.2, close_seconds=0.3))
    shutdown.begin(last_resort=False)
    began = time.monotonic()
    assert await shutdown.within_bound("closing the producer", asyncio.sleep(0))
    assert not await shutdown.within_bound("committing", asyncio.sleep(3600))
    assert 0.4 < time.monotonic() - began < 1.5
    # The bound is spent: a later step does not get to wait at all.
    assert not await shutdown.within_bound("closing the object store", asyncio.sleep(3600))
    assert time.monotonic() - began < 1.5
    assert shutdown.abandoned == ["committing (no answer)", "closing the object store (no answer)"]


class OpenedAlready:
    """Envelopes for events with nothing sealed: each opens as it is."""

    async def open(self, event: AnyEvent) -> AnyEvent:
        return event


class BrokerAwayOnce:
    """A producer whose first publish finds the broker away; then it is back."""

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.dead_letters: list[str] = []
        self.envelopes = OpenedAlready()
        self._failed = False

    async def publish(self, event: Event) -> None:
        if not self._failed:
            self._failed = True
            raise KafkaTimeoutError("the broker did not answer")
        self.published.append(event)

    async def publish_raw(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        self.dead_letters.append(topic)


async def test_an_output_the_broker_did_not_take_is_not_dead_lettered() -> None:
    event = factories.transcript_ready("CAbrokeraway", "clean-stop", outcome="no_speech")

    async def handle(received: AnyEvent) -> list[Event]:
        return [
            received.caused(
                SummaryReady,
                "summary.ready",
                outcome="nothing_to_extract",
                summary="No speech in the recording.",
                lead=Lead(),
                extractor="unit",
            )
        ]

    producer = BrokerAwayOnce()
    settings = Settings(retry={"base_seconds": 0.01, "max_seconds": 0.01})
    worker = StageWorker(
        "unit",
        ["transcript.ready"],
        handle,
        StageWorkerSettings.of(settings),
        cast(EventProducer, producer),
    )
    record = ConsumerRecord(
        topic="transcript.ready",
        partition=0,
        offset=0,
        timestamp=0,
        timestamp_type=0,
        key=event.call_sid.encode(),
        value=encode(event),
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=[],
    )
    with pytest.raises(KafkaTimeoutError):
        await worker._process(record)
    assert producer.dead_letters == []
    assert producer.published == []
