"""The extractor's outputs redacted as the call's policy says: the summary, the lead's
free-text fields and every quote, whatever the rules (or a model) put in them."""

from __future__ import annotations

import re

from services.extractor import core
from services.extractor.gazetteer import gazetteer
from shared.events import Lead
from shared.redaction.kinds import EntityKind
from shared.transcript import Transcript, Utterance

PHONES = frozenset({EntityKind.PHONE})


def transcript(language: str, *turns: tuple[str, str]) -> Transcript:
    utterances = [
        Utterance(
            speaker=speaker, start=i * 5.0, end=i * 5.0 + 4, text=text, confidence=0.9, words=[]
        )
        for i, (speaker, text) in enumerate(turns)
    ]
    return Transcript(
        call_sid="CA1",
        recording_sid="RE1",
        language=language,
        duration_seconds=len(turns) * 5.0,
        speakers=["caller", "agent"],
        utterances=utterances,
        model="hand-written",
    )


def rules(call: Transcript) -> core.Extraction:
    return core.rules_extraction(call, core.DEFAULT_PROFILE, gazetteer(call.language or "en"))


def texts_of(extraction: core.Extraction) -> list[str]:
    lead = extraction.lead
    return [
        extraction.summary,
        *(text for text in (lead.city, lead.caller_name, lead.callback_number) if text),
        *(evidence.quote for evidence in lead.evidence.values()),
    ]


ENGLISH = transcript(
    "en",
    ("caller", "Hi, my name is Dana Cohen, my sink is leaking in Boston."),
    ("agent", "What number can we call you back on?"),
    ("caller", "Please call me back at 054-765-4321, or card 4580 1234 5678 9015."),
)


def test_the_summary_and_the_quotes_of_the_rules_are_redacted() -> None:
    found = rules(ENGLISH)
    assert "0547654321" in found.summary  # what the rules write, before the policy

    clean = core.redacted(found, PHONES)

    assert clean.summary == "Plumbing request from Dana Cohen in Boston; call back on [phone]."
    assert clean.lead.callback_number == "[phone]"
    assert clean.lead.evidence["callback_number"].quote == "[phone]"
    assert (clean.lead.caller_name, clean.lead.city) == ("Dana Cohen", "Boston")
    assert clean.lead.evidence["city"] == found.lead.evidence["city"]
    for text in texts_of(clean):
        assert not re.search(r"\d{3}", text)
    Lead.model_validate_json(clean.lead.model_dump_json())


def test_a_kind_the_business_keeps_stays_and_the_rest_is_the_same() -> None:
    found = rules(ENGLISH)
    kept = core.redacted(found, frozenset())
    assert kept.lead.callback_number == "0547654321"
    assert kept == found


def test_a_number_taken_for_a_name_is_redacted_where_it_appears() -> None:
    found = rules(transcript("he", ("caller", "שלום, קוראים לי 0547654321 ויש לי נזילה בתל אביב")))
    assert found.lead.caller_name == "0547654321"

    clean = core.redacted(found, PHONES)

    assert clean.lead.caller_name == "[phone]"
    assert clean.lead.evidence["caller_name"].quote == "קוראים לי [phone]"
    assert clean.lead.city == "Tel Aviv"
    for text in texts_of(clean):
        assert "0547654321" not in text


def test_a_card_is_redacted_whatever_the_business_chose() -> None:
    found = core.Extraction(
        summary="Caller paid with 4580 1234 5678 9015.",
        lead=Lead(kind="lead"),
        extractor="llm",
    )
    assert core.redacted(found, frozenset()).summary == "Caller paid with [card]."
