"""Reaching the broker: the options every Kafka client is made with, and waiting for the broker
while it is away without waiting on a configuration that cannot work."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import errors as kafka_errors
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.helpers import create_ssl_context

from shared.retry import Misconfigured, describe, wait_until_reached
from shared.settings import KafkaSettings, RetrySettings


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """How every producer, consumer and admin client callpipe makes reaches the broker: the
    address, TLS (verifying the broker's certificate, with a client certificate when given)
    and the SASL login, as aiokafka's keyword arguments (decision 1105)."""
    protocol = kafka.security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_cafile or None,
            certfile=kafka.ssl_certfile or None,
            keyfile=kafka.ssl_keyfile or None,
            password=kafka.ssl_key_password.get_secret_value() or None,
        )
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


class BrokerMisconfigured(Misconfigured):
    """The broker answers, but no retry can help: a malformed address, a rejected login, a
    certificate that does not verify."""


# What reaching the broker fails with when the configuration, not the broker, is wrong.
CONFIGURATION_ERRORS = (
    ValueError,
    ssl.SSLCertVerificationError,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.IllegalSaslStateError,
)
# One try at reaching the broker, before its clients start (they log every refused
# connection as an error, and a failed login only as a connection failure).
BROKER_PROBE_TIMEOUT_MS = 5000


async def probe_broker(kafka: KafkaSettings) -> None:
    """Connects (and logs in) to a bootstrap server; raises if none answers, and
    BrokerMisconfigured if the configuration is what is wrong."""
    options = client_options(kafka)
    try:
        hosts = collect_hosts(kafka.bootstrap)
    except CONFIGURATION_ERRORS as error:
        raise BrokerMisconfigured(
            f"CALLPIPE_KAFKA_BOOTSTRAP={kafka.bootstrap!r}: {describe(error)}"
        ) from error
    if not hosts:
        raise BrokerMisconfigured("CALLPIPE_KAFKA_BOOTSTRAP is empty")
    last_error: Exception | None = None
    for host, port, _ in hosts:
        try:
            connection = await create_conn(
                host,
                port,
                request_timeout_ms=BROKER_PROBE_TIMEOUT_MS,
                ssl_context=options.get("ssl_context"),
                security_protocol=options["security_protocol"],
                sasl_mechanism=options.get("sasl_mechanism"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
            )
        except CONFIGURATION_ERRORS as error:
            raise BrokerMisconfigured(f"{host}:{port}: {describe(error)}") from error
        except (OSError, TimeoutError, kafka_errors.KafkaError) as error:
            last_error = error
            continue
        connection.close()
        return
    raise kafka_errors.KafkaConnectionError(
        f"no answer from {kafka.bootstrap}: {describe(last_error) if last_error else '?'}"
    )


async def connect_patiently(
    kafka: KafkaSettings,
    retry: RetrySettings,
    connect: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
) -> bool:
    """Reaches the broker (a probe, then `connect`), waiting for it with the stages' capped,
    jittered backoff as long as it is unreachable. True once connected, False if `stop` came
    first. A configuration error is raised at once (BrokerMisconfigured)."""

    async def connect_once() -> None:
        await probe_broker(kafka)
        await connect()

    return await wait_until_reached(
        f"broker {kafka.bootstrap}",
        connect_once,
        lambda _error: True,
        stop,
        retry.base_seconds,
        retry.max_seconds,
    )
