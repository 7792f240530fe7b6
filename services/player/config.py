"""The settings the player runs with: the slices it reads, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import (
    BusinessSettings,
    KafkaSettings,
    PlayerSettings,
    RetrySettings,
    Settings,
    ShutdownSettings,
)


@dataclass(frozen=True)
class PlayerConfig:
    player: PlayerSettings
    business: BusinessSettings
    kafka: KafkaSettings
    retry: RetrySettings
    shutdown: ShutdownSettings
    database_url: str

    @classmethod
    def of(cls, settings: Settings) -> PlayerConfig:
        return cls(
            settings.player,
            settings.business,
            settings.kafka,
            settings.retry,
            settings.shutdown,
            settings.database_url,
        )
