"""The extractor's handler with a real S3 server (SeaweedFS) holding the transcripts: each
`transcript.ready` becomes one `summary.ready` with the lead, the backend, model and prompt
version; silence ends as "nothing to extract"; an LLM that never answers validly fails the
stage with its reason instead of producing a summary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from callpipe.openai_chat_simulator import OpenAISimulator, Reply, serve
from services.extractor import answer, core
from services.extractor.handler import ExtractHandler, RulesExtractor, load_catalogue
from services.extractor.openai_backend import OpenAIExtractor
from shared.events import CallStatusChanged, SummaryReady, TranscriptReady, encode
from shared.redaction.kinds import EntityKind
from shared.retry import TerminalError
from shared.settings import Settings
from shared.storage import ObjectStore, call_prefixes, transcript_key
from shared.tombstones import delete_call_objects
from shared.transcript import Transcript, Utterance
from tests.support.stack import module_s3_server

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with module_s3_server(tmp_path_factory.mktemp("extractor-s3")) as settings:
        yield settings


async def transcript_ready(store: ObjectStore, call_sid: str, *lines: str) -> TranscriptReady:
    transcript = Transcript(
        call_sid=call_sid,
        recording_sid="RE" + call_sid,
        language="en",
        duration_seconds=4.0 * len(lines),
        speakers=["caller"],
        utterances=[
            Utterance(speaker="caller", start=4.0 * i, end=4.0 * i + 3.5, text=text,
                      confidence=0.9, words=[])
            for i, text in enumerate(lines)
        ],
        model="hand-written",
    )  # fmt: skip
    key = transcript_key("roofers-co", call_sid, transcript.recording_sid)
    await store.put(key, transcript.model_dump_json().encode(), "application/json")
    return TranscriptReady(
        call_sid=call_sid,
        business_id="roofers-co",
        correlation_id="c" * 32,
        outcome="transcribed" if lines else "no_speech",
        transcript_key=key,
        language="en",
    )


@pytest.fixture
def catalogue_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalogue.json"
    path.write_text(
        '{"businesses": {"roofers-co": {"services": {"roofing": ["roof", "shingles"]},'
        ' "cities": ["Cambridge"]}}}'
    )
    return path


async def test_rules_backend_turns_a_transcript_into_one_summary(
    store: ObjectStore, catalogue_file: Path
) -> None:
    handler = ExtractHandler(store, RulesExtractor("en"), load_catalogue(catalogue_file))
    event = await transcript_ready(
        store, "CAroof1", "Hi, my roof lost some shingles in the storm.", "I'm in Cambridge."
    )
    (summary,) = await handler(event)
    assert isinstance(summary, SummaryReady)
    assert summary.outcome == "extracted"
    assert (summary.lead.service, summary.lead.city, summary.lead.in_service_area) == (
        "roofing", "Cambridge", True,
    )  # fmt: skip
    assert summary.lead.evidence["city"].start >= 4.0
    assert summary.extractor == "rules-v2"
    assert (summary.model, summary.prompt_version) == (None, None)
    (again,) = await handler(event)  # a redelivery: the same result under the same event id
    assert isinstance(again, SummaryReady)
    assert (again.event_id, again.lead) == (summary.event_id, summary.lead)


async def test_no_speech_and_an_empty_transcript_have_nothing_to_extract(
    store: ObjectStore,
) -> None:
    handler = ExtractHandler(store, RulesExtractor("en"), load_catalogue(None))
    for event in (
        await transcript_ready(store, "CAsilent"),
        await transcript_ready(store, "CAmumble", "...", "?"),
    ):
        (summary,) = await handler(event)
        assert isinstance(summary, SummaryReady)
        assert summary.outcome == "nothing_to_extract"
        assert summary.lead.kind is None and summary.lead.service is None


async def test_llm_backend_records_model_and_prompt_version_or_fails_with_the_reason(
    store: ObjectStore, catalogue_file: Path
) -> None:
    simulator = OpenAISimulator()
    async with serve(simulator) as base_url:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=base_url, max_retries=0)
        handler = ExtractHandler(
            store, OpenAIExtractor(client, "gpt-x", 2), load_catalogue(catalogue_file)
        )
        event = await transcript_ready(store, "CAroof2", "My roof leaks, I'm in Cambridge.")
        good = (
            '{"summary": "Roof leak in Cambridge.", '
            '"kind": {"value": "lead", "confidence": 0.9, "utterance": 0, "quote": "roof leaks"},'
            '"service": {"value": "roofing", "confidence": 0.9, "utterance": 0, "quote": "roof"},'
            '"city": {"value": "Cambridge", "confidence": 0.8, "utterance": 0, '
            '"quote": "Cambridge"}, "caller_name": null, "callback_number": null, "urgency": null}'
        )
        simulator.then(Reply(good))
        (summary,) = await handler(event)
        assert isinstance(summary, SummaryReady)
        assert (summary.lead.service, summary.lead.city) == ("roofing", "Cambridge")
        assert summary.model == "gpt-x-sim-2026-01-01"
        assert summary.prompt_version == answer.PROMPT_VERSION
        assert summary.extractor == answer.EXTRACTOR_NAME

        simulator.then(Reply("not json"), Reply(good.replace("roofing", "plumbing")))
        with pytest.raises(TerminalError, match="not in the catalogue"):
            await handler(event)
        await client.close()


async def test_what_either_backend_answers_is_redacted_as_the_call_says(
    store: ObjectStore, catalogue_file: Path
) -> None:
    """The transcript holds what the transcriber was told to keep (a phone number here);
    this call redacts phone numbers as well, and the backends' answers come out without it."""
    event = await transcript_ready(
        store, "CAroof3", "My roof leaks, I'm in Cambridge.", "Call me back at 054-765-4321."
    )
    event = event.model_copy(update={"redact": [EntityKind.CARD, EntityKind.PHONE]})
    simulator = OpenAISimulator()
    simulator.then(
        Reply(
            '{"summary": "Roof leak in Cambridge; call back on 054-765-4321.", '
            '"kind": {"value": "lead", "confidence": 0.9, "utterance": 0, "quote": "roof leaks"},'
            '"service": {"value": "roofing", "confidence": 0.9, "utterance": 0, "quote": "roof"},'
            '"city": null, "caller_name": null, "callback_number": {"value": "054-765-4321", '
            '"confidence": 0.9, "utterance": 1, "quote": "054-765-4321"}, "urgency": null}'
        )
    )
    async with serve(simulator) as base_url:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=base_url, max_retries=0)
        catalogue = load_catalogue(catalogue_file)
        backends = [RulesExtractor("en"), OpenAIExtractor(client, "gpt-x", 1)]
        for backend in backends:
            (summary,) = await ExtractHandler(store, backend, catalogue)(event)
            assert isinstance(summary, SummaryReady)
            assert summary.lead.callback_number == "[phone]"
            assert summary.lead.evidence["callback_number"].quote == "[phone]"
            assert "call back on [phone]." in summary.summary
            assert "4321" not in encode(summary).decode()
        await client.close()


async def test_an_event_of_another_stage_fails_for_good(store: ObjectStore) -> None:
    handler = ExtractHandler(store, RulesExtractor("en"), load_catalogue(None))
    misrouted = CallStatusChanged(
        call_sid="CAroof9",
        business_id="roofers-co",
        correlation_id="c" * 32,
        call_status="ringing",
    )
    with pytest.raises(TerminalError, match=r"extractor cannot handle call\.status"):
        await handler(misrouted)


class DeletingMidway:
    """The rules backend, with the call deleted while it extracts."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._rules = RulesExtractor("en")

    async def extract(
        self, transcript: Transcript, profile: core.BusinessProfile
    ) -> core.Extraction:
        folders = call_prefixes("roofers-co", transcript.call_sid, [])
        await delete_call_objects(self._store, "roofers-co", transcript.call_sid, folders)
        return await self._rules.extract(transcript, profile)


async def test_no_summary_is_published_for_a_call_deleted_before_or_while_it_is_extracted(
    store: ObjectStore, catalogue_file: Path
) -> None:
    catalogue = load_catalogue(catalogue_file)
    meanwhile = await transcript_ready(store, "CAroof4", "My roof leaks, I'm in Cambridge.")
    assert await ExtractHandler(store, DeletingMidway(store), catalogue)(meanwhile) == []

    before = await transcript_ready(store, "CAroof5", "My roof leaks, I'm in Cambridge.")
    folders = call_prefixes("roofers-co", "CAroof5", [])
    await delete_call_objects(store, "roofers-co", "CAroof5", folders)
    # Its transcript is gone: not read (which would fail the stage), skipped at once.
    assert await ExtractHandler(store, RulesExtractor("en"), catalogue)(before) == []
