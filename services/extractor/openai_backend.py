"""The LLM backend: OpenAI's chat-completions API (or any server speaking it) with the
answer constrained to a JSON schema, checked, and asked again when it is not valid."""

from __future__ import annotations

import logging

import openai
from openai.types.shared_params import ResponseFormatJSONSchema

from services.extractor import answer
from services.extractor.core import BusinessProfile, Extraction
from shared.retry import TerminalError
from shared.transcript import Transcript

log = logging.getLogger(__name__)

RESPONSE_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "call_lead", "strict": True, "schema": answer.answer_schema()},
}


class OpenAIExtractor:
    """Rate limits (429) and server errors are retried by the client, honouring
    `Retry-After`; past that they propagate as transient errors for the stage's own backoff.
    An invalid answer is asked again up to `answer_attempts` times, then the call fails with
    the reason: nothing unchecked reaches the status table."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, answer_attempts: int) -> None:
        self._client = client
        self._model = model
        self._answer_attempts = answer_attempts

    async def extract(self, transcript: Transcript, profile: BusinessProfile) -> Extraction:
        system, user = answer.prompt(transcript, profile)
        reason = ""
        for attempt in range(1, self._answer_attempts + 1):
            try:
                completion = await self._client.chat.completions.create(
                    model=self._model,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": user},
                    ],
                    response_format=RESPONSE_FORMAT,
                    temperature=0,
                )
            except (openai.BadRequestError, openai.AuthenticationError,
                    openai.PermissionDeniedError, openai.NotFoundError) as error:  # fmt: skip
                raise TerminalError(f"LLM request refused: {error}") from error
            choice = completion.choices[0] if completion.choices else None
            content = choice.message.content if choice else None
            if choice and choice.message.refusal:
                reason = f"the model refused: {choice.message.refusal}"
            else:
                try:
                    summary, lead = answer.checked_lead(content, transcript, profile)
                except answer.InvalidAnswer as error:
                    reason = str(error)
                else:
                    return Extraction(
                        summary,
                        lead,
                        answer.EXTRACTOR_NAME,
                        model=completion.model or self._model,
                        prompt_version=answer.PROMPT_VERSION,
                    )
            log.warning(
                "invalid LLM answer (try %d of %d): %s", attempt, self._answer_attempts, reason
            )
        raise TerminalError(
            f"LLM answer invalid after {self._answer_attempts} tries: {reason}"[:2000]
        )
