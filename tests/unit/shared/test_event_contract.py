"""The published event contract: docs/events/ matches the code, events survive the wire,
samples validate against the checked-in JSON Schemas, and bad input is rejected."""

from __future__ import annotations

import json
import re
import typing
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest

from callpipe import schemas
from shared.events import (
    EVENT_TOPICS,
    AnyEvent,
    CallDeleted,
    CallStarted,
    CallStatusChanged,
    Event,
    Lead,
    RecordingCompleted,
    RecordingDownloaded,
    RecordingStarted,
    RedactionSummary,
    Stage,
    StageFailed,
    StageStarted,
    SummaryReady,
    Topic,
    TranscriptReady,
    decode,
    encode,
)
from shared.kafka.topics import WORKERS, dead_letter_topic
from shared.redaction.kinds import EntityKind
from shared.transcript import (
    AudioRedaction,
    AudioSpan,
    RedactedSpan,
    Redaction,
    Transcript,
    Utterance,
    Word,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "events"

ENVELOPE = {
    "event_id": uuid.UUID("6f1c1c3e-1b5e-4c43-9f43-3f5d3a0f2a11"),
    "occurred_at": datetime(2025, 11, 24, 17, 5, 9, 123456, tzinfo=UTC),
    "call_sid": "CA0123456789abcdef0123456789abcdef",
    "business_id": "biz-42",
    "attempt": 2,
    "correlation_id": "4bf92f3577b34da6a3ce929d0e0e4736",
}

SAMPLES: list[Event] = [
    CallStarted(
        **ENVELOPE,
        account_sid="AC0123456789abcdef0123456789abcdef",
        from_number="+15551230000",
        to_number="+15559870000",
        direction="inbound",
    ),
    CallStatusChanged(
        **ENVELOPE,
        call_status="in-progress",
        sequence_number=1,
        duration_seconds=None,
        twilio_params={"CallSid": "CA0123", "CallStatus": "in-progress"},
    ),
    RecordingStarted(
        **ENVELOPE,
        recording_sid="RE0123456789abcdef0123456789abcdef",
        channels=2,
        twilio_params={"RecordingStatus": "in-progress"},
    ),
    RecordingCompleted(
        **ENVELOPE,
        recording_sid="RE0123456789abcdef0123456789abcdef",
        recording_status="completed",
        recording_url="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
        duration_seconds=42.5,
        channels=2,
        error_code=None,
    ),
    RecordingDownloaded(
        **ENVELOPE,
        recording_sid="RE0123456789abcdef0123456789abcdef",
        object_key="biz-42/CA0123/RE0123.wav",
        content_type="audio/wav",
        size_bytes=1_234_567,
        sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        channels=2,
    ),
    TranscriptReady(
        **ENVELOPE,
        outcome="transcribed",
        transcript_key="biz-42/CA0123/RE0123.transcript.json",
        language="en",
        duration_seconds=42.5,
        speakers=["caller", "agent"],
        preview="Hi, my sink is leaking, my card is [card]",
        redact=[EntityKind.CARD, EntityKind.NUMBER, EntityKind.PHONE],
        redaction=RedactionSummary(
            kinds=[EntityKind.CARD, EntityKind.NUMBER, EntityKind.PHONE],
            counts={EntityKind.CARD: 1},
        ),
        audio_redaction=AudioRedaction(
            object_key="biz-42/2025-11-24/CA0123/RE0123.wav",
            sound="tone",
            padding_seconds=0.25,
            spans=[AudioSpan(channel=0, start=11.75, end=17.5)],
        ),
    ),
    SummaryReady(
        **ENVELOPE,
        outcome="extracted",
        summary="Caller in Boston needs a plumber for a leaking sink.",
        lead=Lead(service="plumbing", city="Boston", confidence=0.9),
        extractor="rules/1",
    ),
    StageStarted(**ENVELOPE, stage=Stage.TRANSCRIPT),
    StageFailed(
        **ENVELOPE,
        stage=Stage.RECORDING,
        error="HTTP 404 from media URL",
        terminal=True,
        tries=5,
    ),
    CallDeleted(**ENVELOPE),
]
SAMPLE_IDS = [type(e).__name__ for e in SAMPLES]


def _union_members() -> set[type[Event]]:
    union = typing.get_args(AnyEvent)[0]
    return set(typing.get_args(union))


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DOCS / name).read_text(encoding="utf-8"))
    return loaded


def _validator(schema_file: str) -> jsonschema.protocols.Validator:
    schema = _load(schema_file)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return validator


# (a) the checked-in files are what the code generates


def test_checked_in_docs_match_the_code() -> None:
    stale = schemas.check(DOCS)
    assert stale == [], (
        f"docs/events/ is out of date ({', '.join(stale)}): "
        "run `callpipe schemas --write` and commit the result"
    )


def test_check_reports_changed_missing_and_stale_files(tmp_path: Path) -> None:
    written = schemas.write_all(tmp_path)
    assert {p.name for p in written} == set(schemas.generate())
    assert schemas.check(tmp_path) == []

    (tmp_path / "call.started.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / schemas.ASYNCAPI_FILE).unlink()
    (tmp_path / "gone.event.schema.json").write_text("{}\n", encoding="utf-8")
    assert schemas.check(tmp_path) == sorted(
        ["call.started.schema.json", schemas.ASYNCAPI_FILE, "gone.event.schema.json"]
    )

    schemas.write_all(tmp_path)
    assert schemas.check(tmp_path) == []
    assert not (tmp_path / "gone.event.schema.json").exists()


def test_generation_is_deterministic() -> None:
    first = schemas.generate()
    assert first == schemas.generate()
    for name, text in first.items():
        assert text.endswith("}\n"), name
        canonical = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
        assert text == canonical + "\n", name


def test_every_event_model_is_published() -> None:
    assert _union_members() == set(EVENT_TOPICS), "AnyEvent and EVENT_TOPICS disagree"
    generated = schemas.generate()
    for model in EVENT_TOPICS:
        schema = json.loads(generated[schemas.schema_file_name(model)])
        assert schema["$id"].endswith(f":v{schemas.schema_version_of(model)}")
        assert f"v{schemas.schema_version_of(model)}" in schema["title"]
        assert set(schema["properties"]) == set(model.model_fields)
        assert set(Event.model_fields) - {"sealed"} | {"event_type"} <= set(schema["required"])
        assert "sealed" not in schema["required"]
    assert schemas.TRANSCRIPT_SCHEMA_FILE in generated


def test_asyncapi_describes_every_topic_key_and_header() -> None:
    doc = _load(schemas.ASYNCAPI_FILE)
    assert doc["asyncapi"] == "3.0.0"
    expected = {t.value for t in Topic} | {dead_letter_topic(w) for w in WORKERS}
    assert {"downloader.dlq", "transcriber.dlq", "extractor.dlq", "player.dlq"} <= expected
    assert {c["address"] for c in doc["channels"].values()} == expected

    messages = doc["components"]["messages"]
    for model, topic in EVENT_TOPICS.items():
        channel = doc["channels"][topic.value]
        assert model.__name__ in channel["messages"]
        message = messages[model.__name__]
        assert message["headers"]["required"] == ["traceparent"]
        assert "call SID" in message["bindings"]["kafka"]["key"]["description"]
        ref = message["payload"]["schema"]["$ref"]
        assert (DOCS / ref).resolve() == (DOCS / schemas.schema_file_name(model)).resolve()
        assert (DOCS / ref).is_file()
    assert set(doc["channels"]["stage.status"]["messages"]) == {"StageStarted", "StageFailed"}

    for worker in WORKERS:
        channel = doc["channels"][dead_letter_topic(worker)]
        ref = channel["messages"]["DeadLetter"]["$ref"]
        headers = messages[ref.rsplit("/", 1)[1]]["headers"]
        assert set(headers["required"]) == {"dlq.reason", "dlq.worker", "dlq.tries", "dlq.source"}

    for operation in doc["operations"].values():
        channel_name = operation["channel"]["$ref"].rsplit("/", 1)[1]
        channel = doc["channels"][channel_name]
        for message_ref in operation["messages"]:
            prefix = f"#/channels/{channel_name}/messages/"
            assert message_ref["$ref"].startswith(prefix)
            assert message_ref["$ref"][len(prefix) :] in channel["messages"]


def test_traceparent_header_pattern_matches_what_producers_send() -> None:
    from shared.kafka.producer import traceparent

    doc = _load(schemas.ASYNCAPI_FILE)
    pattern = doc["components"]["messages"]["CallStarted"]["headers"]["properties"]["traceparent"][
        "pattern"
    ]
    for correlation_id in ("4bf92f3577b34da6a3ce929d0e0e4736", "not-a-trace-id"):
        value = traceparent(correlation_id).decode()
        assert re.fullmatch(pattern, value), value
    assert traceparent("4bf92f3577b34da6a3ce929d0e0e4736").decode().split("-")[1] == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )


# (b) every event round-trips through encode/decode


def test_samples_cover_every_event_type() -> None:
    assert {type(e) for e in SAMPLES} == set(EVENT_TOPICS)


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_event_round_trips(event: Event) -> None:
    raw = encode(event)
    assert isinstance(raw, bytes)
    decoded = decode(raw)
    assert type(decoded) is type(event)
    assert decoded == event
    assert encode(decoded) == raw
    assert decoded.occurred_at.utcoffset() is not None


@pytest.mark.parametrize("model", schemas.event_models())
def test_defaults_round_trip(model: type[Event]) -> None:
    sample = next(e for e in SAMPLES if type(e) is model)
    required = {name for name, f in model.model_fields.items() if f.is_required()}
    minimal = model.model_validate(sample.model_dump(include=required))
    decoded = decode(encode(minimal))
    assert decoded == minimal
    assert decoded.event_id == minimal.event_id
    assert decoded.schema_version == schemas.schema_version_of(model)


# (c) samples validate against the checked-in JSON Schemas


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_sample_validates_against_checked_in_schema(event: Event) -> None:
    validator = _validator(schemas.schema_file_name(type(event)))
    instance = json.loads(encode(event))
    validator.validate(instance)

    with_extra = {**instance, "unexpected": 1}
    assert not validator.is_valid(with_extra)
    without_call_sid = {k: v for k, v in instance.items() if k != "call_sid"}
    assert not validator.is_valid(without_call_sid)
    wrong_type = {**instance, "event_type": "no.such.event"}
    assert not validator.is_valid(wrong_type)
    bad_id = {**instance, "event_id": "not-a-uuid"}
    assert not validator.is_valid(bad_id)


def test_sample_of_another_type_is_rejected_by_a_schema() -> None:
    validator = _validator(schemas.schema_file_name(CallStarted))
    assert not validator.is_valid(json.loads(encode(SAMPLES[-1])))


def test_stored_transcript_validates_against_checked_in_schema() -> None:
    transcript = Transcript(
        call_sid="CA0123",
        recording_sid="RE0123",
        language="en",
        duration_seconds=3.0,
        speakers=["caller", "agent"],
        utterances=[
            Utterance(
                speaker="caller",
                start=0.0,
                end=1.2,
                text="hello",
                confidence=0.93,
                words=[Word(start=0.0, end=1.2, text="hello", probability=0.93)],
            )
        ],
        model="tiny.en",
        redaction=Redaction(
            kinds=[EntityKind.CARD, EntityKind.NUMBER],
            counts={EntityKind.CARD: 1},
            spans=[
                RedactedSpan(kind=EntityKind.CARD, start=2.0, end=2.9, speaker="caller", channel=0)
            ],
            audio=AudioRedaction(
                object_key="biz-42/2025-11-24/CA0123/RE0123.wav",
                sound="silence",
                padding_seconds=0.25,
                spans=[AudioSpan(channel=0, start=1.75, end=3.0)],
            ),
        ),
    )
    validator = _validator(schemas.TRANSCRIPT_SCHEMA_FILE)
    instance = json.loads(transcript.model_dump_json())
    validator.validate(instance)
    assert not validator.is_valid({k: v for k, v in instance.items() if k != "utterances"})


# (d) decode rejects what is not a callpipe event


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"{", b"\xff\xfe\x00", b"[]", b"null", b'"call.started"'],
    ids=["empty", "text", "truncated", "binary", "array", "null", "string"],
)
def test_decode_rejects_malformed_bytes(raw: bytes) -> None:
    with pytest.raises(pydantic.ValidationError):
        decode(raw)


def test_decode_rejects_unknown_event_type() -> None:
    payload = json.loads(encode(SAMPLES[0]))
    payload["event_type"] = "call.teleported"
    with pytest.raises(pydantic.ValidationError) as excinfo:
        decode(json.dumps(payload).encode())
    assert excinfo.value.errors()[0]["type"] == "union_tag_invalid"


def test_decode_rejects_missing_event_type() -> None:
    payload = json.loads(encode(SAMPLES[0]))
    del payload["event_type"]
    with pytest.raises(pydantic.ValidationError) as excinfo:
        decode(json.dumps(payload).encode())
    assert excinfo.value.errors()[0]["type"] == "union_tag_not_found"


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_decode_rejects_missing_required_field(event: Event) -> None:
    payload = json.loads(encode(event))
    for name, field in type(event).model_fields.items():
        if not field.is_required():
            continue
        broken = {k: v for k, v in payload.items() if k != name}
        with pytest.raises(pydantic.ValidationError) as excinfo:
            decode(json.dumps(broken).encode())
        assert any(
            e["type"] == "missing" and e["loc"][-1] == name for e in excinfo.value.errors()
        ), name


def test_decode_rejects_invalid_values_and_extra_fields() -> None:
    payload = json.loads(encode(SAMPLES[0]))
    for broken in (
        {**payload, "call_sid": ""},
        {**payload, "attempt": 0},
        {**payload, "event_id": "not-a-uuid"},
        {**payload, "occurred_at": "yesterday"},
        {**payload, "surprise": True},
    ):
        with pytest.raises(pydantic.ValidationError):
            decode(json.dumps(broken).encode())
