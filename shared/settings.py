"""Settings, built once at start-up from the environment (and `.env`), then passed down.

Every setting is documented in README.md ("Configuration"). Names follow the `CALLPIPE_`
prefix, except the Twilio credentials, which use the names Twilio's own tools use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
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
    # Where the voice webhook's TwiML dials after starting the recording; empty = a message.
    forward_to: str = ""

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
    openai_api_key: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices("OPENAI_API_KEY", "CALLPIPE_OPENAI_API_KEY")
    )
    openai_base_url: str = "https://api.openai.com/v1"
    openai_transcription_model: str = "whisper-1"
    openai_max_upload_bytes: int = 25 * 1024 * 1024
    openai_timeout_seconds: float = 120.0
    openai_max_retries: int = 2

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'callpipe.db').resolve()}"
