"""The extractor's retry-or-give-up decisions: what the chat API's failures, invalid answers
and an event of another stage lead to."""

from __future__ import annotations

import pytest

from services.extractor import core
from shared.decisions import GiveUp, Retry


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        (400, GiveUp),  # a malformed request, or a schema the server does not take
        (401, GiveUp),  # the key is rejected
        (403, GiveUp),
        (404, GiveUp),  # no such model
        (408, Retry),
        (409, Retry),
        (413, GiveUp),  # the prompt is over the model's context or the upload limit
        (422, GiveUp),  # a request the server cannot process, however often sent
        (429, Retry),  # rate limited past the client's own retries
        (500, Retry),
        (502, Retry),
        (503, Retry),
        (None, Retry),  # a timeout or a lost connection: no answer at all
    ],
)
def test_a_failure_of_the_chat_api_is_retried_unless_the_request_is_refused(
    status_code: int | None, expected: type[Retry | GiveUp]
) -> None:
    decision = core.llm_failure(status_code, "Error code: n - the API's words")
    assert type(decision) is expected
    assert decision.reason.endswith("the API's words")


def test_the_reasons_say_what_the_api_did() -> None:
    assert core.llm_failure(401, "Error code: 401 - bad key") == GiveUp(
        "LLM request refused: Error code: 401 - bad key"
    )
    assert core.llm_failure(None, "APIConnectionError: Connection error.") == Retry(
        "LLM did not answer: APIConnectionError: Connection error."
    )
    # No lower bound of its own: the client already waited what Retry-After asked.
    assert core.llm_failure(429, "Error code: 429") == Retry(
        "LLM request failed for now: Error code: 429", after_seconds=0.0
    )


@pytest.mark.parametrize(
    ("attempt", "attempts", "expected"),
    [
        (1, 3, core.AskAgain("not JSON")),
        (2, 3, core.AskAgain("not JSON")),
        (3, 3, GiveUp("LLM answer invalid after 3 tries: not JSON")),
        (1, 1, GiveUp("LLM answer invalid after 1 tries: not JSON")),
    ],
)
def test_an_invalid_answer_is_asked_again_until_the_last_attempt_then_given_up(
    attempt: int, attempts: int, expected: core.AskAgain | GiveUp
) -> None:
    assert core.invalid_answer("not JSON", attempt, attempts) == expected


def test_the_reason_of_an_invalid_answer_is_bounded() -> None:
    decision = core.invalid_answer("x" * 5000, 3, 3)
    assert isinstance(decision, GiveUp)
    assert len(decision.reason) == 2000


def test_an_event_of_another_stage_is_given_up() -> None:
    assert core.unhandled_event("recording.downloaded") == GiveUp(
        "extractor cannot handle recording.downloaded"
    )
