"""Settings, built once at start-up from the environment (and `.env`), then passed down.

Every setting is documented in README.md ("Configuration"). Names follow the `CALLPIPE_`
prefix, except the Twilio credentials, which use the names Twilio's own tools use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.events import BUSINESS_ID_PATTERN


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLPIPE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Path(".callpipe")

    # Kafka-protocol broker
    kafka_bootstrap: str = "127.0.0.1:9092"
    # How every client reaches the broker (decision 1105): TLS with SSL and SASL_SSL, a SASL
    # login with SASL_PLAINTEXT and SASL_SSL.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    # PEM files: the CA that signed the broker's certificate (empty: the system's CAs), and a
    # client certificate and its key for a broker that asks for one.
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_ssl_key_password: SecretStr = SecretStr("")
    # Partitions of the topics callpipe creates (when missing): at most this many instances of
    # a worker share its work. One suits a single instance of each, as `callpipe up` runs; on
    # its broker each partition in a produce costs two more object-store writes in a row
    # (decision 0915). The compose deployment creates 12.
    kafka_partitions: int = 1
    # The idempotent producer: Apache Kafka grants it, the local Tansu broker does not. "auto"
    # asks the broker at each producer's start (decision 1005).
    kafka_idempotent_producer: bool | Literal["auto"] = "auto"
    # How long a consumer's fetch may wait at the broker for data: every topic hop can cost
    # up to this much latency (Tansu answers a waiting fetch late, not when data arrives).
    kafka_fetch_max_wait_ms: int = 50
    # A running worker commits its finished offsets at most this often (always at a revoke or
    # a stop): longer = fewer broker writes, more redeliveries after a crash (decision 0911).
    kafka_commit_interval_ms: int = 1000
    # A hole in a partition's offsets (a later record readable before an earlier one: Tansu,
    # decision 0914) is fetched again until it fills, and gone past after this long.
    kafka_offset_hole_patience_seconds: float = 5.0
    # Where `callpipe up`'s own broker (Tansu) keeps its log: "s3", a bucket on the embedded S3
    # server (topics and committed offsets survive a restart), or "memory" (lost at every
    # restart: only for measuring what the log's storage costs, `callpipe bench`).
    local_broker_storage: Literal["s3", "memory"] = "s3"

    # S3 object store
    s3_endpoint_url: str = "http://127.0.0.1:8333"
    s3_region: str = "us-east-1"
    s3_bucket: str = "recordings"
    s3_access_key: str = "callpipe"
    s3_secret_key: SecretStr = SecretStr("callpipe-local-secret")
    # Where browsers reach the object store: playback redirects to presigned URLs on this
    # endpoint (the signature covers its host); empty = s3_endpoint_url.
    s3_public_endpoint_url: str = ""
    # How long a playback redirect's presigned URL stays valid; a seek after that goes back
    # to the player for a new one.
    playback_url_seconds: int = Field(300, ge=1, le=7 * 24 * 3600)

    # SQL status table; empty means SQLite under data_dir.
    database_url: str = ""

    # Twilio
    twilio_account_sid: str = Field(
        "AC00000000000000000000000000000000",
        validation_alias=AliasChoices("TWILIO_ACCOUNT_SID", "CALLPIPE_TWILIO_ACCOUNT_SID"),
    )
    twilio_auth_token: SecretStr = Field(
        SecretStr("local-simulator-auth-token"),
        validation_alias=AliasChoices("TWILIO_AUTH_TOKEN", "CALLPIPE_TWILIO_AUTH_TOKEN"),
    )
    # The URL Twilio uses to reach the ingress: signatures are computed over it.
    public_base_url: str = "http://127.0.0.1:8000"
    default_business_id: str = "demo"
    # Which business owns which Twilio number: "+15005550001=plumber,+15005550002=electrician".
    # Empty: every call belongs to default_business_id.
    business_numbers: str = ""
    # "twiml": the voice webhook answers with <Start><Recording>; "rest": the business's own
    # voice app answers and callpipe starts the recording over Twilio's REST API once the call
    # status callback says the call is in progress.
    recording_mode: Literal["twiml", "rest"] = "twiml"
    twilio_api_base_url: str = "https://api.twilio.com"
    # Webhook events wait in SQL until Kafka has them (decision 0912). An instance holds the
    # events it publishes this long (above aiokafka's 40 s request timeout): those of a crashed
    # instance are published by another, or after a restart, once it ran out.
    ingress_outbox_lease_seconds: float = Field(default=70.0, gt=0)
    # How often the relay looks for stored events nobody publishes (broker back, a crash).
    ingress_outbox_sweep_seconds: float = Field(default=2.0, gt=0)
    # How long the relay's producer gathers events into one produce request. Webhooks are
    # answered before the relay publishes, so this delays only the events; the local broker
    # pays two S3 writes per request whatever it carries (decision 0916).
    ingress_outbox_linger_ms: int = Field(default=20, ge=0)
    # Where the voice webhook's TwiML dials after starting the recording; empty = a message.
    forward_to: str = ""
    # A webhook body over this is refused (413) before it is read, parsed or its signature
    # checked; Twilio's webhooks are a few kilobytes.
    ingress_max_body_bytes: int = Field(default=64 * 1024, ge=1)

    # Player access. `api_key`, when set, is registered (hashed) for the default business at
    # the player's start, and is the key the command line uses; `callpipe up` makes one.
    api_key: SecretStr = SecretStr("")
    # Signs the status page's session cookie; empty = a random one per process.
    session_secret: SecretStr = SecretStr("")
    # How long the player remembers which business an API key belongs to (0: ask the database
    # on every request). A revoked key still works this long as a Bearer key in a running
    # player; its status page sessions end at once.
    api_key_cache_seconds: float = Field(default=10.0, ge=0)
    # A status page login lasts this long at most; logout or the key's revocation end it sooner.
    session_lifetime_seconds: int = Field(default=12 * 3600, ge=60)
    # The URL browsers open the player at: its origin is the only one whose cookie-authenticated
    # writes (and logins) are accepted, and `https` makes the cookie Secure. Empty: the local
    # player, http://127.0.0.1:<player_port>.
    player_public_url: str = ""
    # Members of the player's consumer group in one process, each fetching its share of the
    # projected topics' partitions: the local broker answers a fetch over many partitions
    # slowly, and one member fell behind at ~25 calls/s (decision 0919).
    player_consumers: int = Field(default=3, ge=1)
    # A request body over this (the login form, a JSON body) is refused (413) before it is read.
    player_max_body_bytes: int = Field(default=16 * 1024, ge=1)

    # HTTP ports
    ingress_host: str = "127.0.0.1"
    ingress_port: int = 8000
    player_host: str = "127.0.0.1"
    player_port: int = 8080
    # A second port for /metrics, /docs and /openapi.json (on the same host), which the public
    # port then answers 404: for Prometheus and operators, never published (decision 1104).
    # Empty = the public port serves them.
    ingress_internal_port: int | None = None
    player_internal_port: int | None = None
    simulator_port: int = 8090
    # The stage workers' /healthz and /metrics; 0.0.0.0 where Prometheus scrapes from elsewhere.
    worker_health_host: str = "127.0.0.1"
    downloader_health_port: int = 8101
    transcriber_health_port: int = 8102
    extractor_health_port: int = 8103

    # Stage workers
    max_attempts: int = 8
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 10.0
    max_in_flight: int = 16
    # A stage announces `stage.started` only once its work has run this long (decision 0920):
    # work done sooner shows as completed without it. 0 announces every start at once.
    stage_started_after_ms: int = 250
    # On SIGTERM a worker finishes in-flight messages for this long, then hands back the rest
    # uncommitted (kept below the supervisor's stop timeout).
    shutdown_grace_seconds: float = 10.0
    # After that grace, committing what finished and closing the connections (broker, S3,
    # database) get this long; what is not done by then is abandoned, uncommitted work is
    # redelivered. A stop thus takes at most the grace plus this, whether they answer or not.
    shutdown_close_seconds: float = 3.0
    download_timeout_seconds: float = 60.0
    recording_format: Literal["wav", "mp3"] = "wav"

    # Reconciler: a call whose recording callback has not come this long after its last
    # news is looked up at Twilio, and fails ("recording never arrived") when Twilio has no
    # recording for it after the give-up; a stage without progress this long gets its input
    # again, and a stage processing without progress fails after its give-up.
    reconcile_interval_seconds: float = 30.0
    reconcile_recording_after_seconds: float = 300.0
    reconcile_recording_give_up_after_seconds: float = 3600.0
    reconcile_stuck_after_seconds: float = 900.0
    reconcile_stuck_give_up_after_seconds: float = 3600.0

    # Downloader. Media is fetched only from these origins (scheme://host[:port], `*.` for
    # subdomains), redirects included: a forged event cannot make it fetch anything else.
    media_allowed_origins: str = "https://api.twilio.com,https://*.twilio.com"
    download_max_bytes: int = 1024**3
    download_part_bytes: int = 8 * 1024**2
    download_slots_per_business: int = 2
    download_slot_lease_seconds: float = 60.0
    # A slot stays held this long after a download for the instance's next one of the business
    # (one SQL take for a burst, not one a call); other instances wait this much longer for it.
    download_slot_idle_seconds: float = 1.0
    # Calls waiting for a business's slot hold no audio, so the downloader takes more at once.
    download_max_in_flight: int = 64
    delete_recording_after_archive: bool = False

    # Transcriber: a CTranslate2 model directory or a size name; empty = bundled tiny.en.
    transcriber_backend: Literal["local", "openai", "instant"] = "local"
    whisper_model: str = ""
    whisper_compute_type: str = "int8"
    whisper_threads: int = 2
    whisper_language: str | None = "en"
    transcriber_concurrency: int = 1
    # Labels of a two-channel recording's first and second channel, by call direction.
    transcriber_inbound_speakers: str = "caller,agent"
    transcriber_outbound_speakers: str = "callee,agent"
    # The OpenAI audio transcription API, or any server that speaks it.
    openai_transcription_model: str = "whisper-1"
    openai_max_upload_bytes: int = 25 * 1024 * 1024

    # Extractor: "rules" (offline) or "openai" (any server speaking the chat-completions API).
    extractor_backend: Literal["rules", "openai", "instant"] = "rules"
    # JSON file of service catalogues and served cities per business; empty = the defaults.
    extractor_catalogue: Path | None = None
    extractor_language: str = "en"
    openai_model: str = "gpt-4o-mini"
    openai_answer_attempts: int = 3

    # The OpenAI API (or a compatible server), for whichever backends use it.
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices("OPENAI_API_KEY", "CALLPIPE_OPENAI_API_KEY")
    )
    openai_max_retries: int = 2  # the client's own retries of 429 / 5xx, honouring Retry-After
    openai_timeout_seconds: float = 120.0

    # Observability: logs as text or one JSON object a line; traces to nowhere (`none`), to
    # standard output (`console`) or to an OTLP/HTTP collector (`otlp`) at otlp_traces_endpoint.
    log_format: Literal["text", "json"] = "text"
    traces_exporter: Literal["none", "console", "otlp"] = "none"
    otlp_traces_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    # The example analytics consumer's HTTP port (`callpipe analytics`).
    analytics_port: int = 8110

    @field_validator("default_business_id")
    @classmethod
    def _business_id_is_a_slug(cls, value: str) -> str:
        return business_id_checked(value)

    @field_validator("business_numbers")
    @classmethod
    def _number_table_parses(cls, value: str) -> str:
        parse_business_numbers(value)
        return value

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> Settings:
        problem = kafka_security_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def business_by_number(self) -> dict[str, str]:
        return parse_business_numbers(self.business_numbers)

    @property
    def effective_s3_public_endpoint_url(self) -> str:
        return self.s3_public_endpoint_url or self.s3_endpoint_url

    @property
    def effective_player_public_url(self) -> str:
        return self.player_public_url or f"http://127.0.0.1:{self.player_port}"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'callpipe.db').resolve()}"

    @property
    def ingress_database_url(self) -> str:
        """The ingress's dedupe and outbox tables: in the database given, beside the others;
        on the embedded SQLite, a file of their own, so that a webhook never waits for the
        player's or the downloader's write lock (SQLite has one writer per file, and a waiter
        from another process sleeps in its busy handler; decision 0916)."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'ingress.db').resolve()}"


def parse_business_numbers(table: str) -> dict[str, str]:
    """`+15005550001=plumber, +15005550002=electrician` → {number: business id}."""
    owners: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in table.split(","))):
        number, sep, business = (text.strip() for text in entry.partition("="))
        if not (sep and number and business):
            raise ValueError(f"business_numbers entry {entry!r} is not NUMBER=BUSINESS")
        owners[number] = business_id_checked(business)
    return owners


def business_id_checked(business: str) -> str:
    """A business id as events carry it: it is the first segment of the business's object keys."""
    if not re.fullmatch(BUSINESS_ID_PATTERN, business):
        raise ValueError(f"business id {business!r} is not letters, digits, '-' and '_'")
    return business


def kafka_security_problem(settings: Settings) -> str | None:
    """What is wrong with the Kafka security settings taken together, if anything."""
    protocol = settings.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    credentials = settings.kafka_sasl_username or settings.kafka_sasl_password.get_secret_value()
    if sasl and not settings.kafka_sasl_username:
        return f"CALLPIPE_KAFKA_SECURITY_PROTOCOL={protocol} needs CALLPIPE_KAFKA_SASL_USERNAME"
    if sasl and not settings.kafka_sasl_password.get_secret_value():
        return f"CALLPIPE_KAFKA_SECURITY_PROTOCOL={protocol} needs CALLPIPE_KAFKA_SASL_PASSWORD"
    if protocol == "SASL_PLAINTEXT" and settings.kafka_sasl_mechanism == "PLAIN":
        return "SASL PLAIN sends the password as it is: use it with SASL_SSL only"
    if credentials and not sasl:
        return (
            "CALLPIPE_KAFKA_SASL_USERNAME/PASSWORD are set but "
            f"CALLPIPE_KAFKA_SECURITY_PROTOCOL={protocol} does not log in: use SASL_SSL"
        )
    files = {
        "CALLPIPE_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "CALLPIPE_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "CALLPIPE_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    given = [name for name, path in files.items() if path]
    if given and not tls:
        return f"{', '.join(given)} set but CALLPIPE_KAFKA_SECURITY_PROTOCOL={protocol} is not TLS"
    if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
        return "CALLPIPE_KAFKA_SSL_KEYFILE needs CALLPIPE_KAFKA_SSL_CERTFILE"
    missing = [
        f"{name}={path}" for name, path in files.items() if path and not Path(path).is_file()
    ]
    if missing:
        return f"no such file: {', '.join(missing)}"
    return None
