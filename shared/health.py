"""What a process says of itself on `/healthz`."""

from enum import StrEnum


class Health(StrEnum):
    CONNECTING = "connecting"  # a dependency (broker, database, S3) not reached yet, or lost
    STARTING = "starting"  # its dependencies reached, loading what it needs (a model)
    READY = "ready"
