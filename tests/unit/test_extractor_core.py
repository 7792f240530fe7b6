"""Extractor core: the rules backend finds the service and the city, and summarises."""

from __future__ import annotations

import pytest

from services.extractor.core import extract_lead, summarise
from shared.events import Lead


def test_service_found_by_keyword() -> None:
    lead = extract_lead("Hi, my kitchen sink is leaking badly.")
    assert lead.service == "plumbing"
    assert lead.city is None
    assert 0 < lead.confidence < 1


def test_keywords_match_on_word_boundaries_only() -> None:
    lead = extract_lead("I want to talk about the pipeline project and my powerful laptop.")
    assert lead.service is None
    assert lead.confidence == 0


def test_keyword_matching_ignores_case() -> None:
    assert extract_lead("NEED AN ELECTRICIAN").service == "electrical"


def test_multi_word_keywords() -> None:
    assert extract_lead("Help, I got locked out of my flat").service == "locksmith"
    assert extract_lead("The air conditioning stopped").service == "hvac"


def test_the_service_with_most_hits_wins() -> None:
    text = "The outlet sparks. Also a leak, the drain, the sink and the toilet."
    assert extract_lead(text).service == "plumbing"


def test_city_found() -> None:
    lead = extract_lead("We are in new york, near the park.")
    assert lead.city == "New York"
    assert lead.service is None
    assert lead.confidence > 0


def test_first_city_named_wins() -> None:
    assert extract_lead("I moved from Chicago to Seattle last year").city == "Chicago"


def test_no_lead() -> None:
    lead = extract_lead("Hello, is this the right number? Okay, bye.")
    assert lead == Lead(service=None, city=None, confidence=0.0)


def test_empty_text() -> None:
    assert extract_lead("") == Lead(service=None, city=None, confidence=0.0)


def test_confidence_grows_with_evidence() -> None:
    nothing = extract_lead("Hello there")
    city_only = extract_lead("I am calling from Boston")
    service_only = extract_lead("I need a plumber")
    both = extract_lead("I need a plumber in Boston")
    more = extract_lead("I need a plumber in Boston, the pipe is leaking into the drain")
    most = extract_lead(
        "I need a plumber in Boston, the pipe is leaking into the drain. Yes, Boston."
    )

    confidences = [
        nothing.confidence,
        city_only.confidence,
        service_only.confidence,
        both.confidence,
        more.confidence,
        most.confidence,
    ]
    assert confidences == sorted(confidences)
    assert len(set(confidences)) == len(confidences), confidences
    assert all(0.0 <= c <= 1.0 for c in confidences)


def test_confidence_stays_within_bounds_for_lots_of_evidence() -> None:
    text = " ".join(["plumber leak pipe sink drain toilet Boston Denver Miami"] * 20)
    lead = extract_lead(text)
    assert lead.service == "plumbing"
    assert lead.city == "Boston"
    assert 0.9 <= lead.confidence <= 1.0


def test_custom_catalogue_and_cities_are_honoured() -> None:
    catalogue = {"gardening": ("gardener", "lawn", "hedge")}
    cities = ("Springfield", "Tel Aviv")
    text = "I need a gardener for the lawn in Springfield, not a plumber in Boston."

    lead = extract_lead(text, catalogue=catalogue, cities=cities)

    assert lead.service == "gardening"
    assert lead.city == "Springfield"
    assert lead.confidence > 0.5


def test_custom_catalogue_excludes_the_default_services() -> None:
    lead = extract_lead("I need a plumber in Boston", catalogue={"roofing": ("roof",)}, cities=())
    assert lead.service is None
    assert lead.city is None
    assert lead.confidence == 0


def test_summary_mentions_service_and_city() -> None:
    lead = extract_lead("I need a plumber in Denver")
    summary = summarise(["I need a plumber in Denver"], lead)
    assert "plumbing" in summary
    assert "Denver" in summary
    assert "I need a plumber in Denver" in summary


@pytest.mark.parametrize(
    ("lead", "present", "absent"),
    [
        (Lead(service="hvac", city=None, confidence=0.5), ["hvac"], ["None"]),
        (Lead(service=None, city="Haifa", confidence=0.3), ["Haifa"], ["None"]),
    ],
)
def test_summary_with_a_partial_lead(lead: Lead, present: list[str], absent: list[str]) -> None:
    summary = summarise([], lead)
    for text in present:
        assert text in summary
    for text in absent:
        assert text not in summary


def test_summary_without_lead_or_lines_is_not_empty() -> None:
    assert summarise([], Lead()).strip()
