"""The LLM backend through the real `openai` client against the local simulator of the
chat-completions API: the request carries the schema, answers are checked against the
transcript, invalid answers are asked again then fail with the reason, a 429 is retried."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from callpipe.openai_chat_simulator import OpenAISimulator, Reply, serve
from services.extractor import answer
from services.extractor.core import DEFAULT_PROFILE, BusinessProfile
from services.extractor.openai_backend import OpenAIExtractor
from shared.retry import RetryLater, TerminalError
from shared.transcript import Transcript, Utterance

MODEL = "gpt-test-mini"
DANA = "Hi, my name is Dana Cohen. My kitchen sink is leaking and I live in Boston."
TRANSCRIPT = Transcript(
    call_sid="CA1",
    recording_sid="RE1",
    language="en",
    duration_seconds=12.0,
    speakers=["caller", "agent"],
    utterances=[
        Utterance(speaker="agent", start=0.4, end=2.1, text="Thanks for calling, how can I help?",
                  confidence=0.9, words=[]),
        Utterance(speaker="caller", start=2.6, end=7.9,
                  text=DANA,
                  confidence=0.9, words=[]),
        Utterance(speaker="caller", start=8.5, end=12.0,
                  text="It's urgent, please call me back at 617-555-0123.", confidence=0.9,
                  words=[]),
    ],
    model="hand-written",
)  # fmt: skip
PROFILE = BusinessProfile(services=DEFAULT_PROFILE.services, cities=["Boston", "Cambridge"])


def quoted(value: str, utterance: int, quote: str, confidence: float = 0.9) -> dict[str, Any]:
    return {"value": value, "confidence": confidence, "utterance": utterance, "quote": quote}


def good_answer(**changes: Any) -> str:
    body: dict[str, Any] = {
        "summary": "Dana Cohen in Boston has a leaking kitchen sink and wants a call back.",
        "kind": quoted("lead", 1, "My kitchen sink is leaking", 0.95),
        "service": quoted("plumbing", 1, "sink is leaking"),
        "city": quoted("Boston", 1, "Boston"),
        "caller_name": quoted("Dana Cohen", 1, "my name is Dana Cohen"),
        "callback_number": quoted("617-555-0123", 2, "617-555-0123", 0.85),
        "urgency": quoted("urgent", 2, "It's urgent", 0.8),
    }
    body.update(changes)
    return json.dumps(body)


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[OpenAISimulator, openai.AsyncOpenAI]]:
    sim = OpenAISimulator()
    async with serve(sim) as base_url:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=base_url, max_retries=2)
        yield sim, client
        await client.close()


async def test_the_request_carries_the_schema_and_the_answer_becomes_a_lead_with_evidence(
    simulator: tuple[OpenAISimulator, openai.AsyncOpenAI],
) -> None:
    sim, client = simulator
    sim.then(Reply(good_answer()))
    result = await OpenAIExtractor(client, MODEL, answer_attempts=3).extract(TRANSCRIPT, PROFILE)

    (request,) = sim.requests
    assert request.body["model"] == MODEL
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"] == answer.answer_schema()
    assert response_format["json_schema"]["schema"]["additionalProperties"] is False
    system, user = (m["content"] for m in request.body["messages"])
    assert system == answer.SYSTEM_PROMPT
    assert "[1] caller (2.6-7.9): Hi, my name is Dana Cohen." in user
    assert "Cities it serves: Boston, Cambridge" in user

    lead = result.lead
    assert (lead.kind, lead.service, lead.city, lead.in_service_area) == (
        "lead", "plumbing", "Boston", True,
    )  # fmt: skip
    assert (lead.caller_name, lead.callback_number, lead.urgency) == (
        "Dana Cohen", "6175550123", "urgent",
    )  # fmt: skip
    assert lead.evidence["city"].quote == "Boston"
    assert 2.6 <= lead.evidence["city"].start < lead.evidence["city"].end <= 7.9
    assert lead.evidence["callback_number"].speaker == "caller"
    assert result.model == f"{MODEL}-sim-2026-01-01"
    assert result.prompt_version == answer.PROMPT_VERSION
    assert result.extractor == answer.EXTRACTOR_NAME


@pytest.mark.parametrize(
    "bad",
    [
        "Sure! Here is the lead: plumbing in Boston.",
        good_answer(kind=quoted("maybe", 1, "sink")),
        json.dumps({"summary": "no fields"}),
        good_answer(city=quoted("Springfield", 1, "I live in Springfield")),
        good_answer(service=quoted("roofing", 1, "sink is leaking")),
        good_answer(caller_name=quoted("Dana", 7, "Dana")),
    ],
    ids=[
        "not-json",
        "off-schema-value",
        "missing-fields",
        "invented-quote",
        "unknown-service",
        "no-such-utterance",
    ],
)
async def test_an_invalid_answer_is_asked_again_then_fails_with_the_reason(
    simulator: tuple[OpenAISimulator, openai.AsyncOpenAI], bad: str
) -> None:
    sim, client = simulator
    sim.then(Reply(bad), Reply(bad), Reply(bad))
    with pytest.raises(TerminalError, match="LLM answer invalid after 3 tries") as failure:
        await OpenAIExtractor(client, MODEL, answer_attempts=3).extract(TRANSCRIPT, PROFILE)
    assert len(sim.requests) == 3
    assert "Springfield" not in str(failure.value)  # a reason never repeats the call's words


async def test_an_invented_quote_is_named_by_its_field_and_utterance_not_by_its_words(
    simulator: tuple[OpenAISimulator, openai.AsyncOpenAI],
) -> None:
    sim, client = simulator
    invented = good_answer(city=quoted("Springfield", 1, "I live in Springfield"))
    sim.then(Reply(invented))
    with pytest.raises(TerminalError) as failure:
        await OpenAIExtractor(client, MODEL, answer_attempts=1).extract(TRANSCRIPT, PROFILE)
    assert "city: its quote (21 characters) is not in utterance 1" in str(failure.value)
    assert "live in" not in str(failure.value)


async def test_one_invalid_answer_then_a_valid_one_succeeds(
    simulator: tuple[OpenAISimulator, openai.AsyncOpenAI],
) -> None:
    sim, client = simulator
    sim.then(Reply('{"summary": "truncated'), Reply(good_answer()))
    result = await OpenAIExtractor(client, MODEL, answer_attempts=3).extract(TRANSCRIPT, PROFILE)
    assert result.lead.service == "plumbing"
    assert len(sim.requests) == 2


async def test_a_429_backs_off_as_told_and_is_retried(
    simulator: tuple[OpenAISimulator, openai.AsyncOpenAI],
) -> None:
    sim, client = simulator
    sim.then(Reply(status=429, retry_after="1"), Reply(good_answer()))
    result = await OpenAIExtractor(client, MODEL, answer_attempts=3).extract(TRANSCRIPT, PROFILE)
    assert result.lead.city == "Boston"
    first, retry = sim.requests
    assert first.headers.get("x-stainless-retry-count") == "0"
    assert retry.headers.get("x-stainless-retry-count") == "1"
    assert retry.body == first.body


async def test_a_429_that_persists_is_left_to_the_stage_retry_not_a_terminal_failure(
    simulator: tuple[OpenAISimulator, openai.AsyncOpenAI],
) -> None:
    sim, client = simulator
    sim.then(*[Reply(status=429, retry_after="0") for _ in range(3)])
    with pytest.raises(RetryLater, match="LLM request failed for now: Error code: 429"):
        await OpenAIExtractor(client, MODEL, answer_attempts=3).extract(TRANSCRIPT, PROFILE)
    assert len(sim.requests) == 3  # the first try and the client's two retries


async def test_a_chat_api_that_does_not_answer_is_left_to_the_stage_retry() -> None:
    with socket.socket() as probe:  # bound, never listening: every connection is refused
        probe.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=nowhere, max_retries=0)
        with pytest.raises(RetryLater, match="LLM did not answer"):
            await OpenAIExtractor(client, MODEL, answer_attempts=3).extract(TRANSCRIPT, PROFILE)
        await client.close()


async def test_a_refused_request_fails_at_once(
    simulator: tuple[OpenAISimulator, openai.AsyncOpenAI],
) -> None:
    sim, client = simulator
    sim.then(Reply(status=400))
    with pytest.raises(TerminalError, match="LLM request refused"):
        await OpenAIExtractor(client, MODEL, answer_attempts=3).extract(TRANSCRIPT, PROFILE)
    assert len(sim.requests) == 1
