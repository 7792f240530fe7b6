"""The extractor's output on the wire: a full lead with its evidence validates against the
published summary.ready schema, survives encoding, and the player's projection reads it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from services.player import core as player
from shared.events import Evidence, Lead, SummaryReady, decode, encode

SCHEMA = Path(__file__).resolve().parents[3] / "docs" / "events" / "summary.ready.schema.json"


def test_a_full_lead_matches_the_published_schema_and_round_trips() -> None:
    event = SummaryReady(
        call_sid="CA1",
        business_id="biz",
        correlation_id="4bf92f3577b34da6a3ce929d0e0e4736",
        outcome="extracted",
        summary="Urgent plumbing request from Dana Cohen in Boston.",
        lead=Lead(
            service="plumbing",
            city="Boston",
            confidence=0.9,
            caller_name="Dana Cohen",
            callback_number="6175550123",
            urgency="urgent",
            kind="lead",
            in_service_area=True,
            evidence={
                "city": Evidence(
                    confidence=0.95, quote="Boston", start=8.65, end=8.95, speaker="caller"
                )
            },
        ),
        extractor="openai-chat-v1",
        model="gpt-4o-mini-2024-07-18",
        prompt_version="lead-prompt-1/0123456789ab",
    )
    jsonschema.validate(json.loads(encode(event)), json.loads(SCHEMA.read_text()))
    assert decode(encode(event)) == event
    state = player.apply(None, event)
    assert (state.lead_service, state.lead_city, state.lead_confidence) == (
        "plumbing",
        "Boston",
        0.9,
    )
    assert player.timeline_detail(event) == "summary extracted"
