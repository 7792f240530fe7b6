"""Generates the published event contract in `docs/events/` from the code.

- One JSON Schema per event type (`<event_type>.schema.json`) and one for the stored
  transcript (`transcript.schema.json`), from pydantic's serialization-mode schemas.
- An AsyncAPI 3.0 document (`asyncapi.json`) describing every topic: the event topics of
  `shared.events.Topic`, and the dead-letter topic of every worker.

Everything is derived from `shared.events`, `shared.transcript` and `shared.kafka.topics`; the
output is deterministic (sorted keys, indent 2, trailing newline) so `check` can tell whether
the checked-in files are stale. Run `callpipe schemas --write` after changing an event model.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.events import EVENT_TOPICS, SCHEMA_VERSION, Event, Topic
from shared.kafka.topics import WORKERS, dead_letter_topic
from shared.sealing import PERSONAL_FIELDS
from shared.transcript import Transcript

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
ASYNCAPI_FILE = "asyncapi.json"
TRANSCRIPT_SCHEMA_FILE = "transcript.schema.json"
SCHEMA_SUFFIX = ".schema.json"

TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
DLQ_SOURCE_PATTERN = r"^.+:[0-9]+:[0-9]+$"


def event_type_of(model: type[Event]) -> str:
    """The `event_type` discriminator value of an event model."""
    value = model.model_fields["event_type"].default
    if not isinstance(value, str):
        raise TypeError(f"{model.__name__}.event_type has no string default")
    return value


def schema_version_of(model: type[Event]) -> int:
    """The schema version an event model's instances carry by default."""
    value = model.model_fields["schema_version"].default
    if not isinstance(value, int):
        raise TypeError(f"{model.__name__}.schema_version has no integer default")
    return value


def event_models() -> list[type[Event]]:
    """Every published event model, ordered by event type."""
    return sorted(EVENT_TOPICS, key=event_type_of)


def schema_file_name(model: type[Event]) -> str:
    return f"{event_type_of(model)}{SCHEMA_SUFFIX}"


def _model_schema(model: type[BaseModel], name: str, version: int) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:callpipe:schema:{name}:v{version}",
        **schema,
        "title": f"{schema.get('title', model.__name__)} v{version} ({name})",
    }


def event_json_schema(model: type[Event]) -> dict[str, Any]:
    """The JSON Schema of an event as it appears on the wire.

    Every field of the `Event` envelope (and `event_type`) but `sealed` is always serialised,
    so it is marked required even where the model gives it a default; `sealed` is there when
    the event's personal fields are (decision 1204).
    """
    version = schema_version_of(model)
    schema = _model_schema(model, event_type_of(model), version)
    always_present = [*(f for f in Event.model_fields if f != "sealed"), "event_type"]
    required = set(schema.get("required", [])) | set(always_present)
    schema["required"] = [f for f in schema["properties"] if f in required]
    return schema


def transcript_json_schema() -> dict[str, Any]:
    """The JSON Schema of the transcript object stored under its call in the object store."""
    return _model_schema(Transcript, "transcript", SCHEMA_VERSION)


def _doc(model: type[BaseModel]) -> str:
    return inspect.cleandoc(model.__doc__ or "")


def _event_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["traceparent"],
        "properties": {
            "traceparent": {
                "type": "string",
                "pattern": TRACEPARENT_PATTERN,
                "description": (
                    "W3C Trace Context traceparent (UTF-8). Its trace id is the event's "
                    "correlation_id when that is a 32-hex-digit trace id."
                ),
            }
        },
    }


def _dlq_headers() -> dict[str, Any]:
    traceparent = _event_headers()["properties"]["traceparent"]
    return {
        "type": "object",
        "required": ["dlq.reason", "dlq.worker", "dlq.tries", "dlq.source"],
        "properties": {
            "traceparent": {
                **traceparent,
                "description": "Copied from the original message (all its headers are kept).",
            },
            "dlq.reason": {"type": "string", "description": "Why the message was given up."},
            "dlq.worker": {
                "type": "string",
                "enum": list(WORKERS),
                "description": "The worker that dead-lettered the message.",
            },
            "dlq.tries": {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "Tries made, as decimal text; 0 when the message was undecodable.",
            },
            "dlq.source": {
                "type": "string",
                "pattern": DLQ_SOURCE_PATTERN,
                "description": "Where the original was read: topic:partition:offset.",
            },
        },
    }


def _kafka_key(description: str) -> dict[str, Any]:
    return {
        "kafka": {
            "bindingVersion": KAFKA_BINDING_VERSION,
            "key": {"type": "string", "description": description},
        }
    }


def _event_message(model: type[Event]) -> dict[str, Any]:
    event_type = event_type_of(model)
    message: dict[str, Any] = {
        "name": event_type,
        "title": f"{model.__name__} v{schema_version_of(model)}",
        "contentType": "application/json",
        "headers": _event_headers(),
        "payload": {
            "schemaFormat": "application/schema+json;version=draft-2020-12",
            "schema": {"$ref": f"./{schema_file_name(model)}"},
        },
        "correlationId": {"location": "$message.payload#/correlation_id"},
        "bindings": _kafka_key("The call SID (UTF-8): one call's events stay in order."),
    }
    description = [doc] if (doc := _doc(model)) else []
    if blanks := PERSONAL_FIELDS.get(model):
        fields = ", ".join(f"`{path}`" for path in blanks)
        description.append(
            f"Personal fields travel sealed: {fields} are blank in the clear and encrypted in "
            "`sealed` with the call's key (AES-256-GCM); they open only while the call exists "
            "(decision 1204; README.md beside this file)."
        )
    if description:
        message["description"] = "\n\n".join(description)
    return message


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "dead-letter",
        "title": "Dead letter",
        "contentType": "application/octet-stream",
        "description": (
            "The original message's value, byte for byte (usually a callpipe event, its "
            "personal fields still sealed, but it may be malformed: that can be why it is "
            "here), with the original key and headers plus the dlq.* headers."
        ),
        "headers": _dlq_headers(),
        "payload": {"description": "The original bytes, unchanged."},
        "bindings": _kafka_key("The original message's key: the call SID, when it had one."),
    }


def _message_id(model: type[Event]) -> str:
    return model.__name__


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 description of every callpipe topic."""
    by_topic: dict[Topic, list[type[Event]]] = {topic: [] for topic in Topic}
    for model in event_models():
        by_topic[EVENT_TOPICS[model]].append(model)

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    for topic, models in by_topic.items():
        if not models:
            continue
        types = ", ".join(event_type_of(m) for m in models)
        channels[topic.value] = {
            "address": topic.value,
            "title": topic.value,
            "description": f"Carries: {types}. Key: the call SID.",
            "messages": {
                _message_id(m): {"$ref": f"#/components/messages/{_message_id(m)}"} for m in models
            },
            "bindings": {"kafka": {"bindingVersion": KAFKA_BINDING_VERSION, "topic": topic.value}},
        }
        operations[f"publish.{topic.value}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic.value}"},
            "summary": f"callpipe publishes {types}.",
            "messages": [
                {"$ref": f"#/channels/{topic.value}/messages/{_message_id(m)}"} for m in models
            ],
        }
        for model in models:
            messages[_message_id(model)] = _event_message(model)

    messages["DeadLetter"] = _dead_letter_message()
    for worker in WORKERS:
        address = dead_letter_topic(worker)
        channels[address] = {
            "address": address,
            "title": address,
            "description": (
                f"Messages the {worker} gave up on: undecodable or unknown, a terminal "
                "error, or retries exhausted. The original bytes with the reason."
            ),
            "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
            "bindings": {"kafka": {"bindingVersion": KAFKA_BINDING_VERSION, "topic": address}},
        }
        operations[f"publish.{address}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{address}"},
            "summary": f"The {worker} dead-letters a message it cannot process.",
            "messages": [{"$ref": f"#/channels/{address}/messages/DeadLetter"}],
        }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "callpipe events",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": (
                "Events of the callpipe call-recording pipeline. JSON values, key = call SID, "
                "a W3C traceparent header on every message, at-least-once delivery "
                "(deduplicate on event_id), personal fields sealed with each call's key and "
                "unreadable once the call is deleted. See README.md beside this file."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render(document: Mapping[str, Any]) -> str:
    """The canonical text of a generated JSON file."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name → content of every generated file."""
    files = {schema_file_name(m): render(event_json_schema(m)) for m in event_models()}
    files[TRANSCRIPT_SCHEMA_FILE] = render(transcript_json_schema())
    files[ASYNCAPI_FILE] = render(asyncapi_document())
    return files


def _stale(out_dir: Path, expected: Mapping[str, str]) -> list[Path]:
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.glob(f"*{SCHEMA_SUFFIX}") if p.name not in expected)


def write_all(out_dir: Path) -> list[Path]:
    """Writes every generated file into `out_dir`, removes stale `*.schema.json` files
    (events that no longer exist) and returns the paths written."""
    files = generate()
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in _stale(out_dir, files):
        path.unlink()
    written = []
    for name, content in sorted(files.items()):
        path = out_dir / name
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def check(out_dir: Path) -> list[str]:
    """Names of files in `out_dir` that differ from what the code generates: changed,
    missing, or stale (a `*.schema.json` the code no longer generates). Empty when current."""
    files = generate()
    differing = [
        name
        for name, content in files.items()
        if not (out_dir / name).is_file() or (out_dir / name).read_text(encoding="utf-8") != content
    ]
    differing += [p.name for p in _stale(out_dir, files)]
    return sorted(differing)
