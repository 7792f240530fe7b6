"""The LLM backend's pure side: the prompt, the JSON schema the answer must follow, and the
check that turns an answer into a lead or rejects it. No I/O.

The model sees the transcript as numbered utterances and must quote, for each field, the
words it relied on and the utterance they are in; a quote that is not in that utterance, a
service outside the business's catalogue, or anything off the schema rejects the answer.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.extractor.core import BusinessProfile, Span
from shared.events import Evidence, Lead, LeadKind, Urgency
from shared.transcript import Transcript

SYSTEM_PROMPT = """\
You read the transcript of a phone call to a service business and extract the sales lead.
The transcript is a list of utterances, each as [index] speaker (start-end seconds): text.
Answer in JSON following the given schema:
- summary: one or two sentences, in the language of the call, on what the caller wants.
- kind: "lead" for a real request for a service, "spam" for robocalls and sales pitches,
  "wrong_number", or "not_a_lead" for anything else.
- service: one of the business's services listed below, or null.
- city, caller_name, callback_number (digits as said), urgency ("urgent" or "normal"):
  null when not said.
- Every field that is not null comes with its confidence (0 to 1), the index of the
  utterance it came from, and a quote: the exact words of that utterance, copied verbatim.
Never guess: a field the call does not state is null."""
PROMPT_VERSION = "lead-prompt-1/" + hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()[:12]
EXTRACTOR_NAME = "openai-chat-v1"


class InvalidAnswer(Exception):
    """The model's answer does not follow the schema or does not match the transcript."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Quoted(_Strict):
    value: str
    confidence: float = Field(ge=0.0, le=1.0)
    utterance: int = Field(ge=0)
    quote: str = Field(min_length=1)


class QuotedKind(_Strict):
    value: LeadKind
    confidence: float = Field(ge=0.0, le=1.0)
    utterance: int | None = Field(ge=0)
    quote: str | None


class QuotedUrgency(_Strict):
    value: Urgency
    confidence: float = Field(ge=0.0, le=1.0)
    utterance: int = Field(ge=0)
    quote: str = Field(min_length=1)


class Answer(_Strict):
    summary: str = Field(min_length=1, max_length=1000)
    kind: QuotedKind
    service: Quoted | None
    city: Quoted | None
    caller_name: Quoted | None
    callback_number: Quoted | None
    urgency: QuotedUrgency | None


def answer_schema() -> dict[str, Any]:
    """The JSON schema sent as the response format (strict: every key required, no extras)."""
    return Answer.model_json_schema()


def render_transcript(transcript: Transcript) -> str:
    return "\n".join(
        f"[{index}] {u.speaker} ({u.start:.1f}-{u.end:.1f}): {u.text}"
        for index, u in enumerate(transcript.utterances)
    )


def prompt(transcript: Transcript, profile: BusinessProfile) -> tuple[str, str]:
    """The system and the user message."""
    services = ", ".join(profile.services) or "(none listed)"
    cities = ", ".join(profile.cities) or "(anywhere)"
    return SYSTEM_PROMPT, (
        f"The business's services: {services}\nCities it serves: {cities}\n"
        f"Language of the call: {transcript.language or 'unknown'}\n\n"
        f"Transcript:\n{render_transcript(transcript)}"
    )


def _squash(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def _evidence(transcript: Transcript, field: str, quoted: Quoted | QuotedUrgency) -> Evidence:
    if quoted.utterance >= len(transcript.utterances):
        raise InvalidAnswer(f"{field}: utterance {quoted.utterance} does not exist")
    utterance = transcript.utterances[quoted.utterance]
    start = utterance.text.casefold().find(quoted.quote.casefold())
    if start < 0 and _squash(quoted.quote) not in _squash(utterance.text):
        # The reason reaches logs, `stage.failed` and dead-letter headers: never the words.
        raise InvalidAnswer(
            f"{field}: its quote ({len(quoted.quote)} characters) is not in utterance "
            f"{quoted.utterance}"
        )
    if start < 0:  # the same words with other punctuation: the whole utterance is the source
        span = Span(utterance, 0, len(utterance.text))
    else:
        span = Span(utterance, start, start + len(quoted.quote))
    return span.evidence(quoted.confidence)


def parse(content: str | None, transcript: Transcript, profile: BusinessProfile) -> Answer:
    if not content:
        raise InvalidAnswer("empty answer")
    try:
        answer = Answer.model_validate_json(content)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in error.errors()[:5]
        )
        raise InvalidAnswer(f"answer does not follow the schema: {problems}") from error
    if answer.service and answer.service.value not in profile.services:
        raise InvalidAnswer(f"service {answer.service.value!r} is not in the catalogue")
    return answer


def to_lead(answer: Answer, transcript: Transcript, profile: BusinessProfile) -> Lead:
    evidence: dict[str, Evidence] = {}
    values: dict[str, str | None] = {}
    for field in ("service", "city", "caller_name", "callback_number"):
        quoted: Quoted | None = getattr(answer, field)
        values[field] = quoted.value if quoted else None
        if quoted:
            evidence[field] = _evidence(transcript, field, quoted)
    if answer.urgency:
        evidence["urgency"] = _evidence(transcript, "urgency", answer.urgency)
    kind = answer.kind
    if kind.quote and kind.utterance is not None:
        kind_quote = Quoted(
            value=kind.value, confidence=kind.confidence, utterance=kind.utterance, quote=kind.quote
        )
        evidence["kind"] = _evidence(transcript, "kind", kind_quote)
    number = values["callback_number"]
    city = values["city"]
    served = {c.casefold() for c in profile.cities}
    return Lead(
        service=values["service"],
        city=city,
        confidence=kind.confidence,
        caller_name=values["caller_name"],
        callback_number=re.sub(r"[^\d+]", "", number) if number else None,
        urgency=answer.urgency.value if answer.urgency else None,
        kind=kind.value,
        in_service_area=(city.casefold() in served) if city and served else None,
        evidence=evidence,
    )


def checked_lead(
    content: str | None, transcript: Transcript, profile: BusinessProfile
) -> tuple[str, Lead]:
    """The summary and the lead of a raw answer, or InvalidAnswer with the reason."""
    answer = parse(content, transcript, profile)
    return answer.summary, to_lead(answer, transcript, profile)
