"""The offline extractor on committed transcripts with known answers: the lead fields it finds,
the evidence (quoted words and time) behind them, and its accuracy on the whole set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.extractor import core
from services.extractor.gazetteer import gazetteer
from shared.events import Lead
from shared.transcript import Transcript, Utterance, Word

CASES = json.loads(
    (Path(__file__).resolve().parents[2] / "data" / "extractor" / "calls.json").read_text()
)["cases"]
FIELDS = ("kind", "service", "city", "caller_name", "callback_number", "urgency")
# Measured on the committed set (26 calls): every field right on 25 of them; the miss is a
# service named by no keyword of the catalogue ("garbage disposal"). A drop below fails.
MIN_FIELD_ACCURACY = {field: 0.96 for field in FIELDS}
MIN_CALLS_ALL_RIGHT = 25 / 26


def transcript_of(case: dict[str, Any]) -> Transcript:
    utterances = [
        Utterance(speaker=s, start=start, end=end, text=text, confidence=0.9, words=[])
        for s, start, end, text in case["utterances"]
    ]
    return Transcript(
        call_sid="CA" + case["id"],
        recording_sid="RE" + case["id"],
        language=case["language"],
        duration_seconds=utterances[-1].end,
        speakers=sorted({u.speaker for u in utterances}),
        utterances=utterances,
        model="hand-written",
    )


def one_line(text: str) -> Transcript:
    return transcript_of({"id": "x", "language": "en", "utterances": [["caller", 0, 5, text]]})


def extract(case: dict[str, Any]) -> core.Extraction:
    return core.rules_extraction(
        transcript_of(case), core.DEFAULT_PROFILE, gazetteer(case["language"])
    )


def test_accuracy_on_the_committed_set() -> None:
    right = dict.fromkeys(FIELDS, 0)
    all_right = 0
    misses = []
    for case in CASES:
        lead = extract(case).lead
        wrong = [f for f in FIELDS if getattr(lead, f) != case["expected"][f]]
        for field in FIELDS:
            right[field] += field not in wrong
        all_right += not wrong
        misses += [f"{case['id']}.{f}: {getattr(lead, f)!r}" for f in wrong]
    accuracy = {field: right[field] / len(CASES) for field in FIELDS}
    print(f"\noffline extractor on {len(CASES)} calls: all fields right on {all_right}")
    for field, value in accuracy.items():
        print(f"  {field:16} {value:.0%}")
    print("  misses: " + (", ".join(misses) or "none"))
    for field in FIELDS:
        assert accuracy[field] >= MIN_FIELD_ACCURACY[field], misses
    assert all_right / len(CASES) >= MIN_CALLS_ALL_RIGHT, misses


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_service_and_city_come_with_their_evidence(case: dict[str, Any]) -> None:
    lead = extract(case).lead
    transcript = transcript_of(case)
    for field in ("service", "city"):
        value = getattr(lead, field)
        if value is None:
            assert field not in lead.evidence
            continue
        evidence = lead.evidence[field]
        source = [u for u in transcript.utterances if u.start <= evidence.start < u.end]
        assert len(source) == 1, evidence
        assert evidence.quote in source[0].text
        assert source[0].start <= evidence.start < evidence.end <= source[0].end
        assert evidence.speaker == source[0].speaker
        assert 0 < evidence.confidence <= 1
        if field == "city":
            quoted = gazetteer(case["language"]).lookup(evidence.quote)
            assert quoted is not None and quoted.name == value
        else:
            phrases = core.DEFAULT_PROFILE.services[value]
            assert any(p.casefold() in evidence.quote.casefold() for p in phrases)


def test_evidence_times_come_from_the_words_when_the_transcriber_gave_them() -> None:
    said = [
        (" I", 3.0, 3.1), (" live", 3.1, 3.4), (" in", 3.4, 3.5), (" Boston", 3.6, 4.1),
        (" and", 4.2, 4.3), (" my", 4.3, 4.4), (" sink", 4.5, 4.9), (" leaks.", 4.9, 5.3),
    ]  # fmt: skip
    words = [Word(start=s, end=e, text=t, probability=0.9) for t, s, e in said]
    utterance = Utterance(
        speaker="caller",
        start=3.0,
        end=5.3,
        text="".join(w.text for w in words).strip(),
        confidence=0.9,
        words=words,
    )
    transcript = Transcript(
        call_sid="CA1", recording_sid="RE1", language="en", duration_seconds=6.0,
        speakers=["caller"], utterances=[utterance], model="m",
    )  # fmt: skip
    lead = core.extract(transcript, core.DEFAULT_PROFILE, gazetteer("en"))
    assert (lead.evidence["city"].start, lead.evidence["city"].end) == (3.6, 4.1)
    assert (lead.evidence["service"].start, lead.evidence["service"].end) == (4.5, 4.9)
    assert lead.evidence["service"].quote == "sink"


def test_the_gazetteer_has_hebrew_names_from_geonames() -> None:
    hebrew = gazetteer("he")
    assert {hebrew.lookup(n).name for n in ("חיפה", "תל אביב", "ירושלים")} == {  # type: ignore[union-attr]
        "Haifa",
        "Tel Aviv",
        "Jerusalem",
    }
    assert gazetteer("en").lookup("Springfield") is not None
    assert gazetteer("en").lookup("Notaplaceville") is None


def test_a_business_with_its_own_catalogue_and_cities() -> None:
    catalogue = core.CatalogueFile.model_validate(
        {
            "businesses": {
                "roofers-co": {
                    "services": {"roofing": ["roof", "shingles", "gutter"]},
                    "cities": ["Boston", "Cambridge"],
                }
            }
        }
    )
    profile = catalogue.profile("roofers-co")
    assert catalogue.profile("anyone-else") == core.DEFAULT_PROFILE
    inside = transcript_of(
        {"id": "r1", "language": "en", "utterances": [
            ["caller", 0.0, 4.0, "Some shingles blew off my roof in Cambridge last night."]]}
    )  # fmt: skip
    lead = core.extract(inside, profile, gazetteer("en"))
    assert (lead.kind, lead.service, lead.city, lead.in_service_area) == (
        "lead",
        "roofing",
        "Cambridge",
        True,
    )
    outside = transcript_of(
        {"id": "r2", "language": "en", "utterances": [
            ["caller", 0.0, 4.0, "My sink leaks and the gutter is clogged, I live in Denver."]]}
    )  # fmt: skip
    lead = core.extract(outside, profile, gazetteer("en"))
    assert (lead.service, lead.city, lead.in_service_area) == ("roofing", "Denver", False)
    assert "outside the service area" in core.summarise(lead)


def test_a_served_city_is_preferred_and_counts_even_when_not_capitalised() -> None:
    profile = core.BusinessProfile(services={"plumbing": ["leak"]}, cities=["Boston"])
    transcript = one_line("i'm calling from Denver about a leak at my mother's, over in boston")
    served = core.extract(transcript, profile, gazetteer("en"))
    assert (served.city, served.in_service_area) == ("Boston", True)
    anywhere = core.extract(transcript, core.DEFAULT_PROFILE, gazetteer("en"))
    assert (anywhere.city, anywhere.in_service_area) == ("Denver", None)


def test_a_place_in_a_common_word_is_not_a_city() -> None:
    transcript = one_line(
        "Mobile phone reception is bad. Reading the meter, one of the pipes leaks."
    )
    assert core.extract(transcript, core.DEFAULT_PROFILE, gazetteer("en")).city is None


def test_no_words_is_nothing_to_extract() -> None:
    silent = transcript_of({"id": "s", "language": "en", "utterances": [["caller", 0, 1, "..."]]})
    assert not core.has_words(silent)


@pytest.mark.parametrize(
    ("text", "service"),
    [
        ("I want to talk about the pipeline project and my powerful laptop.", None),
        ("NEED AN ELECTRICIAN", "electrical"),
        ("Help, I got locked out of my flat", "locksmith"),
        ("The air conditioning stopped", "hvac"),
        ("The outlet sparks. Also a leak, the drain, the sink and the toilet.", "plumbing"),
    ],
    ids=["word-boundaries", "any-case", "multi-word", "multi-word-2", "most-mentions-win"],
)
def test_service_phrases(text: str, service: str | None) -> None:
    assert core.extract(one_line(text), core.DEFAULT_PROFILE, gazetteer("en")).service == service


def test_a_custom_catalogue_replaces_the_default_services() -> None:
    roofing = core.BusinessProfile(services={"roofing": ["roof"]})
    lead = core.extract(one_line("I need a plumber in Boston"), roofing, gazetteer("en"))
    assert (lead.service, lead.kind) == (None, "not_a_lead")


def test_confidence_grows_with_the_evidence_and_stays_within_bounds() -> None:
    texts = [
        "I need a plumber",
        "I need a plumber in Boston",
        "I need a plumber in Boston, the pipe is leaking into the drain",
        " ".join(["plumber leak pipe sink drain toilet in Boston"] * 20),
    ]
    confidences = [
        core.extract(one_line(t), core.DEFAULT_PROFILE, gazetteer("en")).confidence for t in texts
    ]
    assert confidences == sorted(confidences) and len(set(confidences)) == len(confidences)
    assert all(0 < c <= 1 for c in confidences)


@pytest.mark.parametrize(
    "lead",
    [
        Lead(),
        Lead(kind="not_a_lead"),
        Lead(kind="wrong_number"),
        Lead(kind="lead", service="hvac"),
    ],
)
def test_a_summary_is_never_empty_and_never_says_none(lead: Lead) -> None:
    summary = core.summarise(lead)
    assert summary.strip() and "None" not in summary


def test_the_summary_is_in_the_language_of_the_call() -> None:
    hebrew = next(c for c in CASES if c["id"] == "he-plumber-tel-aviv")
    assert extract(hebrew).summary == "דחוף: בקשה לאינסטלציה מדנה בתל אביב; לחזור למספר 0525557788."
    english = next(c for c in CASES if c["id"] == "plumber-boston")
    assert extract(english).summary == (
        "Plumbing request from Dana Cohen in Boston; call back on 6175550123."
    )


WHISPER = Path(__file__).resolve().parents[2] / "data" / "extractor" / "whisper"
# Measured on real Whisper tiny.en output of espeak-ng calls: 15 of the 18 known field values.
# The three misses are speech-recognition errors the rules cannot undo: "John" heard as
# "Nang", the callback number as "3 hundred, well 5 hundred", "free cruise" as "free crew".
MIN_WHISPER_FIELDS_RIGHT = 15


def test_on_real_whisper_output_evidence_falls_on_the_words() -> None:
    expected = json.loads((WHISPER / "expected.json").read_text())
    right = total = 0
    for call_id, answer in expected.items():
        transcript = Transcript.model_validate_json((WHISPER / f"{call_id}.json").read_text())
        lead = core.extract(transcript, core.DEFAULT_PROFILE, gazetteer("en"))
        for field, value in answer.items():
            total += 1
            right += getattr(lead, field) == value
        for evidence in lead.evidence.values():
            (utterance,) = [
                u
                for u in transcript.utterances
                if u.speaker == evidence.speaker and u.start <= evidence.start < u.end
            ]
            assert evidence.quote in utterance.text
            assert evidence.start in {round(w.start, 2) for w in utterance.words}
            assert evidence.end in {round(w.end, 2) for w in utterance.words}
    print(f"\noffline extractor on Whisper transcripts: {right} of {total} field values right")
    assert right >= MIN_WHISPER_FIELDS_RIGHT


def test_a_hebrew_place_name_needs_a_location_cue() -> None:
    def city(text: str) -> str | None:
        said = transcript_of({"id": "h", "language": "he", "utterances": [["caller", 0, 4, text]]})
        return core.extract(said, core.DEFAULT_PROFILE, gazetteer("he")).city

    assert city("הבן שלי קיבל ציון טוב") is None  # "ציון" (a grade) is also a name of Jerusalem
    assert city("אני גר ליד חיפה") == "Haifa"
    assert city("אני מחיפה") == "Haifa"
