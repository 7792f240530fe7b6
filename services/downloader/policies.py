"""Where the downloader learns what a business redacts, which the call's later stages then
carry out (the wiring fills it with the player's data settings)."""

from __future__ import annotations

from typing import Protocol

from shared.redaction.kinds import EntityKind


class RedactionPolicies(Protocol):
    async def redaction_kinds(self, business_id: str) -> frozenset[EntityKind]: ...
