"""/metrics and the API documentation of the ingress and the player, over real HTTP: with an
internal port set (what docker-compose.yml does), only that port serves them and the public
port answers them as any unknown path; without one, the public port serves them as before."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from callpipe.stack import tansu_binary

pytestmark = pytest.mark.stack

_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
# Bases no other test uses, so that no offset makes them meet another checkout's ports.
BROKER_PORT = 23492 + _OFFSET
PORTS = {
    "ingress": (23400 + _OFFSET, 23401 + _OFFSET),
    "player": (23480 + _OFFSET, 23481 + _OFFSET),
}
INTERNAL_PATHS = ("/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
START_TIMEOUT_SECONDS = 60


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """Tansu in memory: the player creates its topics and consumes at start."""
    url = f"tcp://127.0.0.1:{BROKER_PORT}"
    process = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _listening(BROKER_PORT):
        assert process.poll() is None and time.monotonic() < deadline, "tansu did not start"
        time.sleep(0.05)
    yield f"127.0.0.1:{BROKER_PORT}"
    process.terminate()
    process.wait(timeout=10)


@dataclass(frozen=True)
class Service:
    public: str
    internal: str


def _start(name: str, data_dir: Path, broker: str, internal: bool) -> subprocess.Popen[bytes]:
    public_port, internal_port = PORTS[name]
    env = {
        **os.environ,
        "CALLPIPE_DATA_DIR": str(data_dir),
        "CALLPIPE_KAFKA_BOOTSTRAP": broker,
        f"CALLPIPE_{name.upper()}_PORT": str(public_port),
    }
    if internal:
        env[f"CALLPIPE_{name.upper()}_INTERNAL_PORT"] = str(internal_port)
    process = subprocess.Popen(
        [sys.executable, "-m", "callpipe", "run", name],
        env=env,
        cwd=data_dir,
        stdout=(data_dir / f"{name}.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _answers(f"http://127.0.0.1:{public_port}/healthz"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{name} did not start: {(data_dir / f'{name}.log').read_text()}")
        time.sleep(0.1)
    assert process.poll() is None, f"another server answers on {public_port}"
    return process


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture(scope="module")
def services(
    request: pytest.FixtureRequest, broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[bool, dict[str, Service]]]:
    internal: bool = request.param
    data_dir = tmp_path_factory.mktemp("internal-port")
    processes = [_start(name, data_dir, broker, internal) for name in PORTS]
    try:
        yield (
            internal,
            {
                name: Service(f"http://127.0.0.1:{public}", f"http://127.0.0.1:{internal_port}")
                for name, (public, internal_port) in PORTS.items()
            },
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            # The player stops once its consumers have joined their group, which can take
            # long on a loaded machine: its ports must be free for the next fixture.
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _not_found_like_any_unknown_path(response: httpx.Response, unknown: httpx.Response) -> None:
    assert response.status_code == 404
    assert response.content == unknown.content


@pytest.mark.parametrize("services", [True], ids=["internal-port"], indirect=True)
@pytest.mark.parametrize("name", list(PORTS))
def test_the_public_port_hides_metrics_and_docs_when_an_internal_port_is_set(
    services: tuple[bool, dict[str, Service]], name: str
) -> None:
    _, running = services
    public = httpx.Client(base_url=running[name].public, timeout=10)
    unknown = public.get("/no-such-path")
    for path in INTERNAL_PATHS:
        _not_found_like_any_unknown_path(public.get(path), unknown)
        assert public.head(path).status_code == 404, path
        assert public.post(path).status_code in (404, 405), path
    # The same paths spelled otherwise get the same answer (no redirect showing they exist).
    for path in ("/%6Detrics", "/metrics?format=text", "/openapi.json?x=1", "/docs/", "/redoc//"):
        _not_found_like_any_unknown_path(public.get(path), unknown)
    assert public.get("/healthz").status_code in (200, 503)


@pytest.mark.parametrize(
    "services", [True, False], ids=["internal-port", "no-internal-port"], indirect=True
)
@pytest.mark.parametrize("name", list(PORTS))
def test_the_internal_port_serves_metrics_and_docs(
    services: tuple[bool, dict[str, Service]], name: str
) -> None:
    internal, running = services
    base = running[name].internal if internal else running[name].public
    metrics = httpx.get(f"{base}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "callpipe_http_requests" in metrics.text
    schema = httpx.get(f"{base}/openapi.json", timeout=10)
    assert schema.status_code == 200
    assert schema.json()["info"]["title"] == f"callpipe {name}"
    docs = httpx.get(f"{base}/docs", timeout=10)
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text
    if not internal:
        assert not _answers(f"{running[name].internal}/metrics")
