"""Where the downloader learns what a business redacts, which the call's later stages then
carry out: the port, and the answer every business gets while none can choose."""

from __future__ import annotations

from typing import Protocol

from shared.redaction.kinds import ALWAYS_REDACTED, EntityKind


class RedactionPolicies(Protocol):
    async def redaction_kinds(self, business_id: str) -> frozenset[EntityKind]: ...


class AlwaysRedacted:
    """Every business redacts what is always redacted: cards and long numbers."""

    async def redaction_kinds(self, business_id: str) -> frozenset[EntityKind]:
        return ALWAYS_REDACTED
