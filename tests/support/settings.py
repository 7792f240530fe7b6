"""Settings built from values at dotted paths, as tests name them: `{"kafka.partitions": 4}`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.settings import Settings


def grouped(values: Mapping[str, Any]) -> dict[str, Any]:
    """`{"kafka.partitions": 4, "data_dir": d}` → `{"kafka": {"partitions": 4}, "data_dir": d}`."""
    changes: dict[str, Any] = {}
    for path, value in values.items():
        slice_name, _, name = path.rpartition(".")
        if slice_name:
            changes.setdefault(slice_name, {})[name] = value
        else:
            changes[name] = value
    return changes


def settings_from(values: Mapping[str, Any]) -> Settings:
    """Settings validated from `values` (the environment and defaults fill in the rest)."""
    return Settings(**grouped(values))
