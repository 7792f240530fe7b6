"""Settings, built once at start-up from the environment (and `.env`), then passed down.

Every setting is documented in README.md ("Configuration"). Names follow the `CALLPIPE_`
prefix, except the Twilio credentials, which use the names Twilio's own tools use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLPIPE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Path(".callpipe")

    # Kafka-protocol broker
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_partitions: int = 4
    # Apache Kafka supports the idempotent producer; the local Tansu broker does not.
    kafka_idempotent_producer: bool = False

    # S3 object store
    s3_endpoint_url: str = "http://127.0.0.1:8333"
    s3_region: str = "us-east-1"
    s3_bucket: str = "recordings"
    s3_access_key: str = "callpipe"
    s3_secret_key: SecretStr = SecretStr("callpipe-local-secret")

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
    # A webhook is answered 503 (Twilio retries) if Kafka has not acknowledged its event by then.
    ingress_publish_timeout_seconds: float = 8.0
    # Where the voice webhook's TwiML dials after starting the recording; empty = a message.
    forward_to: str = ""

    # Player access. `api_key`, when set, is registered (hashed) for the default business at
    # the player's start, and is the key the command line uses; `callpipe up` makes one.
    api_key: SecretStr = SecretStr("")
    # Signs the status page's session cookie; empty = a random one per process.
    session_secret: SecretStr = SecretStr("")

    # HTTP ports
    ingress_host: str = "127.0.0.1"
    ingress_port: int = 8000
    player_host: str = "127.0.0.1"
    player_port: int = 8080
    simulator_port: int = 8090
    downloader_health_port: int = 8101
    transcriber_health_port: int = 8102
    extractor_health_port: int = 8103

    # Stage workers
    max_attempts: int = 8
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 10.0
    max_in_flight: int = 16
    download_timeout_seconds: float = 60.0
    recording_format: Literal["wav", "mp3"] = "wav"

    # Downloader. Media is fetched only from these origins (scheme://host[:port], `*.` for
    # subdomains), redirects included: a forged event cannot make it fetch anything else.
    media_allowed_origins: str = "https://api.twilio.com,https://*.twilio.com"
    download_max_bytes: int = 1024**3
    download_part_bytes: int = 8 * 1024**2
    download_slots_per_business: int = 2
    download_slot_lease_seconds: float = 60.0
    # Calls waiting for a business's slot hold no audio, so the downloader takes more at once.
    download_max_in_flight: int = 64
    delete_recording_after_archive: bool = False

    # Transcriber: a CTranslate2 model directory or a size name; empty = bundled tiny.en.
    transcriber_backend: Literal["local", "openai"] = "local"
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
    extractor_backend: Literal["rules", "openai"] = "rules"
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

    @field_validator("business_numbers")
    @classmethod
    def _number_table_parses(cls, value: str) -> str:
        parse_business_numbers(value)
        return value

    @property
    def business_by_number(self) -> dict[str, str]:
        return parse_business_numbers(self.business_numbers)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'callpipe.db').resolve()}"


def parse_business_numbers(table: str) -> dict[str, str]:
    """`+15005550001=plumber, +15005550002=electrician` → {number: business id}."""
    owners: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in table.split(","))):
        number, sep, business = (text.strip() for text in entry.partition("="))
        if not (sep and number and business):
            raise ValueError(f"business_numbers entry {entry!r} is not NUMBER=BUSINESS")
        owners[number] = business
    return owners
