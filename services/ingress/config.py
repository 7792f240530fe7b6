"""The settings the ingress runs with: the slices it reads, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import (
    BusinessSettings,
    IngressSettings,
    KafkaSettings,
    RetrySettings,
    Settings,
    ShutdownSettings,
    TwilioSettings,
)


@dataclass(frozen=True)
class IngressConfig:
    ingress: IngressSettings
    twilio: TwilioSettings
    business: BusinessSettings
    kafka: KafkaSettings
    retry: RetrySettings
    shutdown: ShutdownSettings
    # The ingress's own dedupe and outbox tables (a file of their own on SQLite).
    database_url: str

    @classmethod
    def of(cls, settings: Settings) -> IngressConfig:
        return cls(
            settings.ingress,
            settings.twilio,
            settings.business,
            settings.kafka,
            settings.retry,
            settings.shutdown,
            settings.ingress_database_url,
        )
