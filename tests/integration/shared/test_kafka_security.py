"""Kafka as a trust boundary: every client reaches the broker with the configured TLS and SASL
options, and inconsistent options refuse to start.

TLS is proven against the real local broker (Tansu) behind a TLS-terminating proxy that also
asks for a client certificate: the broker's own TLS listener does not serve TLS in 0.6."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from callpipe.stack import tansu_binary
from shared.call_keys import Envelopes
from shared.kafka.connection import client_options
from shared.kafka.producer import EventProducer
from shared.kafka.topics import ensure_topics, replay
from shared.settings import Settings
from tests.support import events as factories

_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
BROKER_PORT = 23092 + _OFFSET
TLS_PORT = 23093 + _OFFSET
CALL_SID = "CA" + "7" * 32


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"security_protocol": "SASL_SSL"}, "CALLPIPE_KAFKA_SASL_USERNAME"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "svc"},
            "CALLPIPE_KAFKA_SASL_PASSWORD",
        ),
        ({"sasl_username": "svc", "sasl_password": "pw"}, "does not log in"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "svc",
                "sasl_password": "pw",
            },
            "SASL_SSL only",
        ),
        ({"ssl_cafile": "/etc/hostname"}, "is not TLS"),
        (
            {"security_protocol": "SSL", "ssl_keyfile": "/etc/hostname"},
            "needs CALLPIPE_KAFKA_SSL_CERTFILE",
        ),
        (
            {"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"},
            "no such file",
        ),
    ],
)
def test_inconsistent_kafka_security_settings_refuse_to_start(
    settings: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Settings(kafka=settings)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
async def test_the_sasl_login_and_tls_reach_the_aiokafka_client(mechanism: str) -> None:
    """No broker installable here completes a SASL login with aiokafka, so this checks what
    the client is built with."""
    settings = Settings(
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": mechanism,
            "sasl_username": "callpipe",
            "sasl_password": "s3cret",
        }
    )
    producer = AIOKafkaProducer(**client_options(settings.kafka))
    client = producer.client
    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == mechanism
    assert (client._sasl_plain_username, client._sasl_plain_password) == ("callpipe", "s3cret")
    assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert client._ssl_context.check_hostname


def test_plaintext_is_the_default_and_carries_no_tls_or_login() -> None:
    assert client_options(Settings().kafka) == {
        "bootstrap_servers": Settings().kafka.bootstrap,
        "security_protocol": "PLAINTEXT",
    }


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    folder = tmp_path_factory.mktemp("kafka-tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("callpipe-client")
    files = {
        "ca": folder / "ca.pem",
        "server": folder / "server.pem",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    for blob in client.cert_chain_pems:
        blob.write_to_path(str(files["client_cert"]), append=True)
    client.private_key_pem.write_to_path(str(files["client_key"]))
    yield files


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tansu listening on BROKER_PORT and telling clients to come back through TLS_PORT."""
    log = (tmp_path_factory.mktemp("tansu") / "tansu.log").open("ab")
    process = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{BROKER_PORT}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{TLS_PORT}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.asynccontextmanager
async def tls_proxy(certificates: dict[str, Path]) -> AsyncIterator[None]:
    """Terminates TLS on TLS_PORT, asking for a client certificate signed by the test CA,
    and forwards the bytes to the broker."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certificates["ca"])
    context.load_cert_chain(certificates["server"])
    context.verify_mode = ssl.CERT_REQUIRED

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", BROKER_PORT)
        await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer))

    server = await asyncio.start_server(serve, "127.0.0.1", TLS_PORT, ssl=context)
    try:
        yield
    finally:
        server.close()


async def _broker_listening() -> None:
    async with asyncio.timeout(60):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", BROKER_PORT)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            writer.close()
            return


def _tls_settings(certificates: dict[str, Path], **changes: str) -> Settings:
    options = {
        "bootstrap": f"127.0.0.1:{TLS_PORT}",
        "security_protocol": "SSL",
        "ssl_cafile": str(certificates["ca"]),
        "ssl_certfile": str(certificates["client_cert"]),
        "ssl_keyfile": str(certificates["client_key"]),
        **changes,
    }
    return Settings(kafka=options)


@pytest.mark.stack
async def test_events_go_to_the_broker_and_back_over_tls_with_a_client_certificate(
    broker: None, certificates: dict[str, Path]
) -> None:
    await _broker_listening()
    settings = _tls_settings(certificates)
    event = factories.call_started(CALL_SID, "tls")
    async with tls_proxy(certificates):
        await ensure_topics(settings.kafka)
        producer = EventProducer(settings.kafka, Envelopes.of(settings))
        await producer.start()
        try:
            await producer.publish(event)
        finally:
            await producer.stop()
        seen = [e async for e in replay(settings.kafka, ["call.started"], Envelopes.of(settings))]
    assert event in seen


@pytest.mark.stack
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"ssl_cafile": ""}, id="broker-certificate-not-trusted"),
        pytest.param({"ssl_certfile": "", "ssl_keyfile": ""}, id="no-client-cert"),
        pytest.param(
            {
                "security_protocol": "PLAINTEXT",
                "ssl_cafile": "",
                "ssl_certfile": "",
                "ssl_keyfile": "",
            },
            id="plaintext",
        ),
    ],
)
async def test_a_client_without_the_trust_or_the_certificate_is_not_connected(
    broker: None, certificates: dict[str, Path], changes: dict[str, str]
) -> None:
    await _broker_listening()
    settings = _tls_settings(certificates, **changes)
    producer = AIOKafkaProducer(**client_options(settings.kafka), request_timeout_ms=5000)
    async with tls_proxy(certificates):
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            await producer.start()
        await producer.stop()
