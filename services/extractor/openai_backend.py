"""The LLM backend: OpenAI's chat-completions API (or any server speaking it) with the
answer constrained to a JSON schema, checked, and asked again when it is not valid."""

from __future__ import annotations

import logging

import openai
from openai.types.shared_params import ResponseFormatJSONSchema

from services.extractor import answer, core
from services.extractor.core import BusinessProfile, Extraction
from shared.decisions import GiveUp
from shared.retry import carry_out, describe
from shared.transcript import Transcript

log = logging.getLogger(__name__)

RESPONSE_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "call_lead", "strict": True, "schema": answer.answer_schema()},
}


class OpenAIExtractor:
    """Rate limits (429) and server errors are retried by the client, honouring
    `Retry-After`; past that the core decides (`core.llm_failure`) whether the stage tries
    again. An invalid answer is asked again up to `answer_attempts` times, then the call
    fails with the reason (`core.invalid_answer`)."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, answer_attempts: int) -> None:
        self._client = client
        self._model = model
        self._answer_attempts = answer_attempts

    async def extract(self, transcript: Transcript, profile: BusinessProfile) -> Extraction:
        system, user = answer.prompt(transcript, profile)
        attempt = 0
        while True:
            attempt += 1
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
            except openai.APIStatusError as error:
                carry_out(core.llm_failure(error.status_code, error.message))
            except openai.APIConnectionError as error:  # a timeout is one too
                carry_out(core.llm_failure(None, describe(error)))
            choice = completion.choices[0] if completion.choices else None
            content = choice.message.content if choice else None
            if choice and choice.message.refusal:
                reason = "the model refused to answer"  # its words may repeat the call's
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
            match core.invalid_answer(reason, attempt, self._answer_attempts):
                case core.AskAgain(reason):
                    log.warning(
                        "invalid LLM answer (try %d of %d), asking again: %s",
                        attempt,
                        self._answer_attempts,
                        reason,
                    )
                case GiveUp() as give_up:
                    carry_out(give_up)
