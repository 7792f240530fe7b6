"""Settings, built once at start-up from the environment (and `.env`), then passed down in slices.

Each concern has its own slice (a `BaseSettings` with its own variable prefix), and each part of
the system is handed only the slices it uses. The `description` of every field is the one
source of its documentation: `.env.example` and the README's configuration table are generated
from it (`callpipe env-example --write`). Names follow the `CALLPIPE_` prefix, except the Twilio
and OpenAI credentials, which use the names those vendors' own tools use.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.events import BUSINESS_ID_PATTERN

PREFIX = "CALLPIPE_"


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=f"{PREFIX}{prefix}", env_file=".env", extra="ignore", populate_by_name=True
    )


def _named(*names: str) -> AliasChoices:
    """A field read from a variable outside its slice's prefix (the first name is documented)."""
    return AliasChoices(*names)


class KafkaSettings(BaseSettings):
    """The Kafka-protocol broker, as every producer, consumer and admin client reaches it."""

    model_config = _config("KAFKA_")

    bootstrap: str = Field("127.0.0.1:9092", description="broker address")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="`SSL`, `SASL_PLAINTEXT` or `SASL_SSL` for a managed Kafka (decision 1105). "
        "Inconsistent settings (SASL without a username or password, credentials or certificate "
        "files without a protocol that uses them, a missing file) refuse to start",
    )
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = Field(
        "SCRAM-SHA-512",
        description="`SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN` (only over `SASL_SSL`: PLAIN "
        "sends the password as it is)",
    )
    sasl_username: str = Field("", description="the SASL login's user")
    sasl_password: SecretStr = Field(SecretStr(""), description="the SASL login's password")
    ssl_cafile: str = Field(
        "",
        description="PEM file of the CA that signed the broker's certificate; empty = the "
        "system's CAs. The broker's host name is always checked",
    )
    ssl_certfile: str = Field(
        "", description="a client certificate (PEM), for a broker that asks for one"
    )
    ssl_keyfile: str = Field("", description="the client certificate's key (PEM)")
    ssl_key_password: SecretStr = Field(
        SecretStr(""), description="the password of the client certificate's key"
    )
    partitions: int = Field(
        1,
        ge=1,
        description="partitions of the topics callpipe creates when they are missing: the most "
        "instances of one worker that can share its work. One suits `callpipe up` (one of each; "
        "on its broker each partition in a produce costs two more object-store writes, decision "
        "0915); the compose deployment creates 12. Set it to the instances you plan before the "
        "first start",
    )
    idempotent_producer: bool | Literal["auto"] = Field(
        "auto",
        description="`auto`: on when the broker grants producer ids (Apache Kafka), off when not "
        "(Tansu; decision 1005); or `true` / `false`",
    )
    fetch_max_wait_ms: int = Field(
        50,
        ge=0,
        description="longest a consumer's fetch waits at the broker for data: a bound on each "
        "topic hop's latency (Tansu answers a waiting fetch late, not when data arrives)",
    )
    commit_interval_ms: int = Field(
        1000,
        ge=0,
        description="a running worker commits its finished offsets at most this often (at once "
        "on a rebalance or stop): longer = fewer broker writes, more redeliveries after a crash "
        "(decision 0911)",
    )
    offset_hole_patience_seconds: float = Field(
        5.0,
        ge=0,
        description="how long a worker waits for a hole in a partition's offsets (a later "
        "record readable first, as the local broker can show) to fill before going on past it "
        "(decision 0914)",
    )

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaSettings:
        problem = kafka_security_problem(self)
        if problem:
            raise ValueError(problem)
        return self


class S3Settings(BaseSettings):
    """The S3 object store holding the recordings and transcripts."""

    model_config = _config("S3_")

    endpoint_url: str = Field("http://127.0.0.1:8333", description="S3 endpoint")
    region: str = Field("us-east-1", description="S3 region")
    bucket: str = Field("recordings", description="bucket for audio and transcripts")
    access_key: str = Field(
        "callpipe",
        description="S3 access key (the local S3 server enforces it; `callpipe up` makes one per "
        "data dir)",
    )
    secret_key: SecretStr = Field(
        SecretStr("callpipe-local-secret"),
        description="S3 secret key (never logged; `callpipe up` makes one per data dir; at least "
        "16 bytes when reachable)",
    )
    public_endpoint_url: str = Field(
        "",
        description="the S3 endpoint as browsers reach it: playback redirects there with "
        "presigned URLs (their signature covers this host); empty = the endpoint URL",
    )

    abort_incomplete_uploads_after_days: int = Field(
        7,
        ge=0,
        description="the downloader, preparing the bucket, puts a lifecycle rule on it that "
        "aborts multipart uploads left incomplete this many days (a crash mid-upload leaves "
        "parts no listing shows); 0 = leave the bucket's lifecycle alone (compose: MinIO "
        "refuses the rule and aborts stale uploads itself)",
    )

    @property
    def browser_endpoint_url(self) -> str:
        return self.public_endpoint_url or self.endpoint_url


class DatabaseSettings(BaseSettings):
    """The SQL database of the status table, the ingress's outbox and the download slots."""

    model_config = _config("DATABASE_")

    url: str = Field(
        "",
        description="e.g. `postgresql+asyncpg://user@host:5432/callpipe`: one database for every "
        "service; empty = SQLite in the data dir (`callpipe.db`, and `ingress.db` for the "
        "ingress, decision 0916)",
    )


class KeysSettings(BaseSettings):
    """The key that wraps each call's data key, which seals events' personal fields (1204)."""

    model_config = _config("KEY_")

    wrapping_key: SecretStr = Field(
        SecretStr("callpipe-local-wrapping-key"),
        description="wraps every call's data key in the database; every service that publishes "
        "or reads events needs the same one; lost, no event's personal fields open again "
        "(never logged; `callpipe up` makes one per data dir; at least 32 bytes when reachable)",
    )


class TwilioSettings(BaseSettings):
    """The Twilio account whose calls are recorded."""

    model_config = _config("TWILIO_")

    account_sid: str = Field(
        "AC00000000000000000000000000000000",
        validation_alias=_named("TWILIO_ACCOUNT_SID", "CALLPIPE_TWILIO_ACCOUNT_SID"),
        description="your Twilio account SID (basic-auth user for media)",
    )
    auth_token: SecretStr = Field(
        SecretStr("local-simulator-auth-token"),
        validation_alias=_named("TWILIO_AUTH_TOKEN", "CALLPIPE_TWILIO_AUTH_TOKEN"),
        description="your auth token: checks webhook signatures, fetches media (`callpipe up` "
        "makes one per data dir; 32 hexadecimal characters when reachable)",
    )
    api_base_url: str = Field(
        "https://api.twilio.com",
        description="Twilio's REST API (`callpipe up` points it at the local simulator unless set)",
    )


class BusinessSettings(BaseSettings):
    """Which business a call belongs to."""

    model_config = _config("")

    default_id: str = Field(
        "demo",
        validation_alias=_named("CALLPIPE_DEFAULT_BUSINESS_ID"),
        description="business the calls belong to when no number below matches",
    )
    numbers: str = Field(
        "",
        validation_alias=_named("CALLPIPE_BUSINESS_NUMBERS"),
        description="which business owns which Twilio number: "
        "`+15005550001=plumber,+15005550002=electrician`; empty: every number is the default "
        "business's",
    )

    @field_validator("default_id")
    @classmethod
    def _business_id_is_a_slug(cls, value: str) -> str:
        return business_id_checked(value)

    @field_validator("numbers")
    @classmethod
    def _number_table_parses(cls, value: str) -> str:
        parse_business_numbers(value)
        return value

    @property
    def by_number(self) -> dict[str, str]:
        return parse_business_numbers(self.numbers)


class IngressSettings(BaseSettings):
    """Twilio's webhooks in, events out."""

    model_config = _config("INGRESS_")

    host: str = Field("127.0.0.1", description="where the ingress listens")
    port: int = Field(8000, description="the ingress's port")
    internal_port: int | None = Field(
        None,
        description="a second port, on the same host, that alone serves `/metrics`, `/docs`, "
        "`/redoc` and `/openapi.json`; the public port then answers them 404 (compose: `8001`). "
        "Empty: the public port serves them (decision 1104)",
    )
    public_base_url: str = Field(
        "http://127.0.0.1:8000",
        validation_alias=_named("CALLPIPE_PUBLIC_BASE_URL"),
        description="the URL Twilio uses to reach the ingress: signatures are computed over it",
    )
    recording_mode: Literal["twiml", "rest"] = Field(
        "twiml",
        validation_alias=_named("CALLPIPE_RECORDING_MODE"),
        description="`twiml`: the voice webhook answers with `<Start><Recording>`; `rest`: the "
        "business's own voice app answers and callpipe starts the recording over the REST API "
        "when the call status callback says `in-progress`",
    )
    forward_to: str = Field(
        "",
        validation_alias=_named("CALLPIPE_FORWARD_TO"),
        description="number the voice webhook dials after starting the recording; empty = a "
        "message",
    )
    outbox_lease_seconds: float = Field(
        70.0,
        gt=0,
        description="webhook events wait in SQL until Kafka has them (decision 0912): an "
        "instance holds the events it publishes this long (above aiokafka's 40 s request "
        "timeout); those of a crashed instance are published by another, or after its restart, "
        "once it ran out",
    )
    outbox_sweep_seconds: float = Field(
        2.0,
        gt=0,
        description="how often the ingress looks for stored events nobody is publishing "
        "(broker back, a crashed instance)",
    )
    outbox_linger_ms: int = Field(
        20,
        ge=0,
        description="how long the relay gathers stored events into one produce request (the "
        "webhook is answered before; fewer, larger requests cost the broker less, decision 0916)",
    )
    max_body_bytes: int = Field(
        64 * 1024,
        ge=1,
        description="a webhook body over this is refused with 413 before it is read, parsed or "
        "its signature checked (from `Content-Length`, or as a chunked body arrives)",
    )


class PlayerSettings(BaseSettings):
    """Status page, API and playback."""

    model_config = _config("PLAYER_")

    host: str = Field("127.0.0.1", description="where the player listens")
    port: int = Field(8080, description="the player's port")
    internal_port: int | None = Field(
        None,
        description="like the ingress's internal port, for the player (compose: `8081`)",
    )
    public_url: str = Field(
        "",
        description="where browsers open the player (behind a proxy: its `https://` URL): the "
        "only origin whose cookie-authenticated writes and sign-ins are taken; `https` makes the "
        "cookie `Secure`. Empty: `http://127.0.0.1:<player port>`",
    )
    api_key: SecretStr = Field(
        SecretStr(""),
        validation_alias=_named("CALLPIPE_API_KEY"),
        description="registered (hashed) for the default business at the player's start; the "
        "key the command line uses (`callpipe up` makes one)",
    )
    session_secret: SecretStr = Field(
        SecretStr(""),
        validation_alias=_named("CALLPIPE_SESSION_SECRET"),
        description="signs the status page's session cookie; empty = a random one per process "
        "(`callpipe up` makes one per data dir). Set it to keep logins across restarts (at least "
        "32 bytes, required when reachable)",
    )
    api_key_cache_seconds: float = Field(
        10.0,
        ge=0,
        validation_alias=_named("CALLPIPE_API_KEY_CACHE_SECONDS"),
        description="how long the player remembers an API key's business instead of asking the "
        "database per request; a revoked key keeps working this long as a Bearer key (0: no "
        "cache); its sessions end at once",
    )
    session_lifetime_seconds: int = Field(
        12 * 3600,
        ge=60,
        validation_alias=_named("CALLPIPE_SESSION_LIFETIME_SECONDS"),
        description="how long a status page sign-in lasts at most; logout or the key's "
        "revocation end it sooner",
    )
    playback_url_seconds: int = Field(
        300,
        ge=1,
        le=7 * 24 * 3600,
        validation_alias=_named("CALLPIPE_PLAYBACK_URL_SECONDS"),
        description="lifetime of a playback redirect's presigned URL; the page asks the player "
        "again when one expired mid-listening",
    )
    consumers: int = Field(
        3,
        ge=1,
        description="members of the player's consumer group in one process, each fetching a "
        "share of the projected topics' partitions (decision 0919)",
    )
    max_body_bytes: int = Field(
        16 * 1024,
        ge=1,
        description="a request body (the login form, JSON) over this is refused with 413 before "
        "it is read",
    )
    twilio_delete_retry_seconds: float = Field(
        300.0,
        gt=0,
        description="how often the player tries again to delete at Twilio the recordings of "
        "deleted calls whose business chose `delete_from_twilio` and whose first try failed "
        "(decision 1207)",
    )

    @property
    def browser_url(self) -> str:
        return self.public_url or f"http://127.0.0.1:{self.port}"


class RetrySettings(BaseSettings):
    """How a failed attempt is tried again: by a stage, and by every reconnect."""

    model_config = _config("RETRY_")

    max_attempts: int = Field(
        8,
        ge=1,
        validation_alias=_named("CALLPIPE_MAX_ATTEMPTS"),
        description="tries per stage before it fails",
    )
    base_seconds: float = Field(0.5, ge=0, description="backoff: base·2ⁿ, capped, plus jitter")
    max_seconds: float = Field(10.0, ge=0, description="the backoff's cap")


class WorkerSettings(BaseSettings):
    """How every stage worker (downloader, transcriber, extractor) takes its messages."""

    model_config = _config("")

    max_in_flight: int = Field(
        16, ge=1, description="messages a worker handles at once (one call's stay in order)"
    )
    stage_started_after_ms: int = Field(
        250,
        ge=0,
        description="a stage announces `stage.started` only once its work on a call has run "
        "this long; `0` announces every start (decision 0920)",
    )
    health_host: str = Field(
        "127.0.0.1",
        validation_alias=_named("CALLPIPE_WORKER_HEALTH_HOST"),
        description="where the workers serve `/healthz` and `/metrics` (`0.0.0.0` where "
        "Prometheus scrapes from elsewhere)",
    )


class ShutdownSettings(BaseSettings):
    """How a process stops on SIGTERM."""

    model_config = _config("SHUTDOWN_")

    grace_seconds: float = Field(
        10.0,
        ge=0,
        description="a worker lets in-flight messages finish this long, then hands the rest "
        "back uncommitted (kept below the supervisor's stop timeout)",
    )
    close_seconds: float = Field(
        3.0,
        ge=0,
        description="after that grace, committing what finished and closing the connections "
        "(broker, S3, database) get this long; what is not done by then is abandoned "
        "(uncommitted work comes again): a process stops within the grace plus this, exit "
        "status 0, whether they answer or not",
    )


class DownloaderSettings(BaseSettings):
    """Twilio's recording into the object store."""

    model_config = _config("DOWNLOAD_")

    timeout_seconds: float = Field(60.0, gt=0, description="media download timeout")
    recording_format: Literal["wav", "mp3"] = Field(
        "wav",
        validation_alias=_named("CALLPIPE_RECORDING_FORMAT"),
        description="`wav` or `mp3`, as fetched from Twilio and stored",
    )
    media_allowed_origins: str = Field(
        "https://api.twilio.com,https://*.twilio.com",
        validation_alias=_named("CALLPIPE_MEDIA_ALLOWED_ORIGINS"),
        description="the only origins (`scheme://host[:port]`, `*.` = subdomains) media is "
        "fetched from, redirects included: a forged event cannot make it fetch anything else; "
        "`callpipe up` adds its simulator",
    )
    max_bytes: int = Field(1024**3, ge=1, description="largest recording accepted (1 GiB)")
    part_bytes: int = Field(
        8 * 1024**2,
        ge=5 * 1024**2,
        description="S3 multipart part size (≥ 5 MiB); what a download holds in memory",
    )
    slots_per_business: int = Field(
        2, ge=1, description="downloads of one business at once, across all downloader instances"
    )
    slot_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="a slot's lease, renewed while downloading; a crashed instance's slot frees "
        "after it",
    )
    slot_idle_seconds: float = Field(
        1.0,
        ge=0,
        description="a slot stays held this long after a download for the instance's next one "
        "of the business (one SQL take for a burst, not one a call); other instances wait this "
        "much longer for it",
    )
    max_in_flight: int = Field(
        64,
        ge=1,
        description="messages the downloader handles at once: calls waiting for a business's "
        "slot hold no audio, so it takes more than the other workers",
    )
    delete_recording_after_archive: bool = Field(
        False,
        validation_alias=_named("CALLPIPE_DELETE_RECORDING_AFTER_ARCHIVE"),
        description="delete the recording at Twilio once stored and verified",
    )
    health_port: int = Field(
        8101,
        validation_alias=_named("CALLPIPE_DOWNLOADER_HEALTH_PORT"),
        description="the downloader's `/healthz` and `/metrics`",
    )


class TranscriberSettings(BaseSettings):
    """Recording → transcript by speaker."""

    model_config = _config("TRANSCRIBER_")

    backend: Literal["local", "openai", "instant"] = Field(
        "local",
        description="`local` (faster-whisper) or `openai` (the audio transcription API or a "
        "compatible server); both need the `speech` extra",
    )
    whisper_model: str = Field(
        "",
        validation_alias=_named("CALLPIPE_WHISPER_MODEL"),
        description="a CTranslate2 model directory or a size name; empty = the bundled tiny.en "
        "(for tests and the demo: production sets a real model and the business's language)",
    )
    whisper_compute_type: str = Field(
        "int8",
        validation_alias=_named("CALLPIPE_WHISPER_COMPUTE_TYPE"),
        description="CTranslate2 compute type",
    )
    whisper_threads: int = Field(
        2,
        ge=1,
        validation_alias=_named("CALLPIPE_WHISPER_THREADS"),
        description="CPU threads for Whisper",
    )
    whisper_language: str | None = Field(
        "en",
        validation_alias=_named("CALLPIPE_WHISPER_LANGUAGE"),
        description="language code for either backend; empty to detect",
    )
    concurrency: int = Field(1, ge=1, description="recordings transcribed at once per process")
    inbound_speakers: str = Field(
        "caller,agent",
        description="labels of a two-channel recording's first and second channel on inbound calls",
    )
    outbound_speakers: str = Field("callee,agent", description="the same on outbound calls")
    audio_redaction_padding_seconds: float = Field(
        0.25,
        ge=0.0,
        le=5.0,
        description="seconds of the recording replaced before and after each redacted span "
        "(word times are approximate)",
    )
    audio_redaction_sound: Literal["tone", "silence"] = Field(
        "tone", description="what replaces a redacted span in the recording: `tone` or `silence`"
    )
    health_port: int = Field(8102, description="the transcriber's `/healthz` and `/metrics`")


class ExtractorSettings(BaseSettings):
    """Transcript → summary and lead."""

    model_config = _config("EXTRACTOR_")

    backend: Literal["rules", "openai", "instant"] = Field(
        "rules",
        description="`rules` (offline) or `openai` (any server speaking OpenAI's "
        "chat-completions API)",
    )
    catalogue: Path | None = Field(
        None,
        description="JSON file of each business's services (with their trigger phrases) and "
        "served cities; empty = built-in defaults",
    )
    language: str = Field(
        "en", description="language of the rules and place names when the transcript names none"
    )
    health_port: int = Field(8103, description="the extractor's `/healthz` and `/metrics`")


class OpenAISettings(BaseSettings):
    """The OpenAI API (or a compatible server), for whichever backends use it."""

    model_config = _config("OPENAI_")

    base_url: str = Field(
        "https://api.openai.com/v1",
        description="the OpenAI API, or any compatible server (both backends)",
    )
    api_key: SecretStr = Field(
        SecretStr(""),
        validation_alias=_named("OPENAI_API_KEY", "CALLPIPE_OPENAI_API_KEY"),
        description="API key for that server",
    )
    timeout_seconds: float = Field(120.0, gt=0, description="timeout of one request")
    max_retries: int = Field(
        2,
        ge=0,
        description="the client's own retries of 429 / 5xx (honouring `Retry-After`) before the "
        "stage's retries",
    )
    transcription_model: str = Field(
        "whisper-1", description="transcription model: one that answers `verbose_json`"
    )
    max_upload_bytes: int = Field(
        25 * 1024 * 1024,
        ge=1,
        description="the API's upload limit; longer channels are split at pauses",
    )
    model: str = Field(
        "gpt-4o-mini",
        description="chat model asked by the extractor; the model that answered is recorded "
        "with each result",
    )
    answer_attempts: int = Field(
        3, ge=1, description="answers asked for before an invalid one fails the stage"
    )


class ReconcileSettings(BaseSettings):
    """The reconciler, which finds calls that went quiet and sets them moving or failed."""

    model_config = _config("RECONCILE_")

    interval_seconds: float = Field(
        30.0,
        gt=0,
        description="how often `callpipe up` (or `callpipe reconcile`) looks for stuck calls",
    )
    recording_after_seconds: float = Field(
        300.0,
        ge=0,
        description="a call quiet this long without its recording callback is looked up at Twilio",
    )
    recording_give_up_after_seconds: float = Field(
        3600.0,
        ge=0,
        description="a call quiet this long for which Twilio lists no recording fails "
        '"recording never arrived"',
    )
    stuck_after_seconds: float = Field(
        900.0, ge=0, description="a stage quiet this long gets its input again"
    )
    stuck_give_up_after_seconds: float = Field(
        3600.0,
        ge=0,
        description='a stage *processing* quiet this long fails "made no progress" (a queued '
        "one never does)",
    )


class ObservabilitySettings(BaseSettings):
    """Logs and traces."""

    model_config = _config("")

    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text`, or `json`: one object a line with `call_sid`, `event_id`, `trace_id`",
    )
    traces_exporter: Literal["none", "console", "otlp"] = Field(
        "none",
        description="OpenTelemetry traces: `none`, `console` (to the log) or `otlp` (OTLP/HTTP)",
    )
    otlp_traces_endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces",
        description="where `otlp` sends spans (a collector, Jaeger, Tempo)",
    )


class LocalStackSettings(BaseSettings):
    """What only `callpipe up`'s local stack and its tools use."""

    model_config = _config("")

    simulator_port: int = Field(8090, description="the local Twilio simulator's port")
    broker_storage: Literal["s3", "memory"] = Field(
        "s3",
        validation_alias=_named("CALLPIPE_LOCAL_BROKER_STORAGE"),
        description="where `callpipe up`'s own broker keeps its log: `s3` (a bucket on the "
        "embedded S3 server: topics and offsets survive a restart) or `memory` (lost at "
        "restart; for measuring what the log's storage costs)",
    )
    analytics_port: int = Field(8110, description="`callpipe analytics`'s HTTP port (`/figures`)")


class RetentionSettings(BaseSettings):
    """The retention sweep, which deletes audio and calls past their business's retention."""

    model_config = _config("RETENTION_")

    interval_seconds: float = Field(
        3600.0,
        gt=0,
        description="how often `callpipe up` (or `callpipe reconcile`) sweeps audio and calls "
        "past their business's retention (`callpipe retention sweep` sweeps once)",
    )
    batch_size: int = Field(
        100, ge=1, description="calls a sweep claims and works through at a time"
    )
    claim_seconds: float = Field(
        600.0,
        gt=0,
        description="a sweep holds the calls it claimed this long; another sweep leaves them "
        "alone meanwhile, and takes those of a sweep that died once it ran out",
    )


class Settings(BaseSettings):
    """Every setting, one slice per concern."""

    model_config = _config("")

    data_dir: Path = Field(
        Path(".callpipe"), description="data, SQLite files and logs of `callpipe up`"
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    keys: KeysSettings = Field(default_factory=KeysSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    business: BusinessSettings = Field(default_factory=BusinessSettings)
    ingress: IngressSettings = Field(default_factory=IngressSettings)
    player: PlayerSettings = Field(default_factory=PlayerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    downloader: DownloaderSettings = Field(default_factory=DownloaderSettings)
    transcriber: TranscriberSettings = Field(default_factory=TranscriberSettings)
    extractor: ExtractorSettings = Field(default_factory=ExtractorSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    local: LocalStackSettings = Field(default_factory=LocalStackSettings)

    def updated(self, **changes: object) -> Settings:
        """A copy with some settings changed: `updated(kafka={"partitions": 4}, data_dir=…)`.
        A slice given as a dict keeps its other fields."""
        update: dict[str, object] = {}
        for name, change in changes.items():
            if isinstance(change, dict):
                change = getattr(self, name).model_copy(update=change)
            update[name] = change
        return self.model_copy(update=update)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'callpipe.db').resolve()}"

    @property
    def ingress_database_url(self) -> str:
        """The ingress's dedupe and outbox tables: in the database given, beside the others;
        on the embedded SQLite, a file of their own, so that a webhook never waits for the
        player's or the downloader's write lock (SQLite has one writer per file, and a waiter
        from another process sleeps in its busy handler; decision 0916)."""
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'ingress.db').resolve()}"


@dataclass(frozen=True)
class Setting:
    """One setting: where it sits (`kafka.bootstrap`, or `data_dir` at the root) and the
    environment variable it is read from."""

    slice: str | None
    name: str
    field: FieldInfo
    model: type[BaseSettings]

    @property
    def path(self) -> str:
        return f"{self.slice}.{self.name}" if self.slice else self.name

    @property
    def variable(self) -> str:
        alias = self.field.validation_alias
        if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            return alias.choices[0]
        return f"{self.model.model_config.get('env_prefix', '')}{self.name}".upper()

    def value(self, settings: Settings) -> Any:
        owner = getattr(settings, self.slice) if self.slice else settings
        return getattr(owner, self.name)

    def is_set(self, settings: Settings) -> bool:
        """Whether the environment or the caller gave it, rather than its default."""
        owner = getattr(settings, self.slice) if self.slice else settings
        return self.name in owner.model_fields_set


def every_setting() -> Iterator[Setting]:
    """Every setting, in the order they are documented."""
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseSettings):
            for inner, inner_field in model.model_fields.items():
                yield Setting(name, inner, inner_field, model)
        else:
            yield Setting(None, name, field, Settings)


def setting(path: str) -> Setting:
    """The setting at `path`, e.g. `twilio.auth_token`."""
    for each in every_setting():
        if each.path == path:
            return each
    raise KeyError(path)


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


def kafka_security_problem(kafka: KafkaSettings) -> str | None:
    """What is wrong with the Kafka security settings taken together, if anything."""
    protocol = kafka.security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    credentials = kafka.sasl_username or kafka.sasl_password.get_secret_value()
    if sasl and not kafka.sasl_username:
        return f"CALLPIPE_KAFKA_SECURITY_PROTOCOL={protocol} needs CALLPIPE_KAFKA_SASL_USERNAME"
    if sasl and not kafka.sasl_password.get_secret_value():
        return f"CALLPIPE_KAFKA_SECURITY_PROTOCOL={protocol} needs CALLPIPE_KAFKA_SASL_PASSWORD"
    if protocol == "SASL_PLAINTEXT" and kafka.sasl_mechanism == "PLAIN":
        return "SASL PLAIN sends the password as it is: use it with SASL_SSL only"
    if credentials and not sasl:
        return (
            "CALLPIPE_KAFKA_SASL_USERNAME/PASSWORD are set but "
            f"CALLPIPE_KAFKA_SECURITY_PROTOCOL={protocol} does not log in: use SASL_SSL"
        )
    files = {
        "CALLPIPE_KAFKA_SSL_CAFILE": kafka.ssl_cafile,
        "CALLPIPE_KAFKA_SSL_CERTFILE": kafka.ssl_certfile,
        "CALLPIPE_KAFKA_SSL_KEYFILE": kafka.ssl_keyfile,
    }
    given = [name for name, path in files.items() if path]
    if given and not tls:
        return f"{', '.join(given)} set but CALLPIPE_KAFKA_SECURITY_PROTOCOL={protocol} is not TLS"
    if kafka.ssl_keyfile and not kafka.ssl_certfile:
        return "CALLPIPE_KAFKA_SSL_KEYFILE needs CALLPIPE_KAFKA_SSL_CERTFILE"
    missing = [
        f"{name}={path}" for name, path in files.items() if path and not Path(path).is_file()
    ]
    if missing:
        return f"no such file: {', '.join(missing)}"
    return None
