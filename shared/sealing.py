"""Personal fields of events sealed with the call's data key, and opened again (decision 1204).

Pure: events and keys in, events out; no I/O. `seal` takes an event's personal fields (the
table `PERSONAL_FIELDS`) out, leaves each at its blank value, and puts them, encrypted with
AES-256-GCM under the call's data key, into the event's `sealed` field. The associated data
binds the ciphertext to the event's id, type, business and call: a sealed payload moved to
another event does not open. `open_sealed` puts them back. Whoever lacks the call's key (it
was destroyed when the call was deleted) reads only what is in the clear.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import ValidationError

from shared.events import (
    CallStarted,
    CallStatusChanged,
    Event,
    EventT,
    RecordingCompleted,
    RecordingStarted,
    Sealed,
    StageFailed,
    SummaryReady,
    TranscriptReady,
)

SEAL_VERSION = 1
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
ANY_KEY = "*"

# Per event type: the path of each personal field and the blank value it travels as in the
# clear. `*` stands for every key of a dictionary (each evidence of the lead).
PERSONAL_FIELDS: dict[type[Event], dict[str, Any]] = {
    CallStarted: {"from_number": "", "to_number": "", "twilio_params": {}},
    CallStatusChanged: {"twilio_params": {}},
    RecordingStarted: {"twilio_params": {}},
    RecordingCompleted: {"twilio_params": {}},
    TranscriptReady: {"preview": ""},
    SummaryReady: {
        "summary": "",
        "lead.caller_name": None,
        "lead.callback_number": None,
        "lead.evidence.*.quote": "",
    },
    # A stage's reason can quote the call: the extractor's names an LLM's quote it could not
    # find in the transcript, or the model's refusal.
    StageFailed: {"error": ""},
}


class Unopenable(Exception):
    """The sealed fields do not open with this key: another key, or bytes changed on the way."""


def has_personal_fields(event: Event) -> bool:
    """Whether events of this type travel sealed."""
    return type(event) in PERSONAL_FIELDS


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)


def key_encryption_key(wrapping_key: str) -> bytes:
    """The AES-256 key that wraps every call's data key, derived from the wrapping key setting
    (any string of enough entropy) with HKDF-SHA256."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"callpipe call keys v1"
    ).derive(wrapping_key.encode())


def _key_of_call(business_id: str, call_sid: str) -> bytes:
    return f"callpipe.call-key.v{SEAL_VERSION}|{business_id}|{call_sid}".encode()


def wrap_key(kek: bytes, data_key: bytes, business_id: str, call_sid: str) -> bytes:
    """A call's data key as stored: nonce and AES-GCM ciphertext under the key-encryption
    key, bound to its business and call (a wrapped key copied to another row does not open)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, data_key, _key_of_call(business_id, call_sid))


def unwrap_key(kek: bytes, wrapped: bytes, business_id: str, call_sid: str) -> bytes:
    """The call's data key; raises Unopenable under another key-encryption key."""
    try:
        return AESGCM(kek).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _key_of_call(business_id, call_sid)
        )
    except InvalidTag as error:
        raise Unopenable(
            f"the key of call {call_sid} does not unwrap: another CALLPIPE_KEY_WRAPPING_KEY?"
        ) from error


def associated_data(event: Event) -> bytes:
    """What a sealed payload is bound to."""
    event_type = getattr(event, "event_type", "")
    return (
        f"callpipe.sealed.v{SEAL_VERSION}|{event.event_id}|{event_type}|"
        f"{event.business_id}|{event.call_sid}"
    ).encode()


def _concrete_paths(document: dict[str, Any], pattern: str) -> list[list[str]]:
    """The paths in `document` that `pattern` names (`*` expanded over a dictionary's keys)."""
    paths: list[list[str]] = [[]]
    for part in pattern.split("."):
        expanded: list[list[str]] = []
        for path in paths:
            node = _at(document, path)
            if not isinstance(node, dict):
                continue
            keys = sorted(node) if part == ANY_KEY else [part] if part in node else []
            expanded += [[*path, key] for key in keys]
        paths = expanded
    return paths


def _at(document: dict[str, Any], path: list[str]) -> Any:
    node: Any = document
    for part in path:
        node = node[part]
    return node


def _put(document: dict[str, Any], path: list[str], value: Any) -> None:
    _at(document, path[:-1])[path[-1]] = value


def _matches(path: list[str], pattern: str) -> bool:
    parts = pattern.split(".")
    return len(parts) == len(path) and all(
        p in (ANY_KEY, q) for p, q in zip(parts, path, strict=True)
    )


def seal(event: EventT, data_key: bytes, nonce: bytes | None = None) -> EventT:
    """The event with its personal fields blank and sealed under `data_key`; an event of a
    type without personal fields as it is."""
    blanks = PERSONAL_FIELDS.get(type(event))
    if blanks is None:
        return event
    document = event.model_dump(mode="json", exclude={"sealed"})
    personal: dict[str, Any] = {}
    for pattern, blank in blanks.items():
        for path in _concrete_paths(document, pattern):
            personal[".".join(path)] = _at(document, path)
            _put(document, path, blank)
    nonce = nonce or os.urandom(NONCE_BYTES)
    plaintext = json.dumps(personal, separators=(",", ":"), ensure_ascii=False).encode()
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, associated_data(event))
    document["sealed"] = Sealed(
        v=SEAL_VERSION,
        nonce=base64.b64encode(nonce).decode(),
        ciphertext=base64.b64encode(ciphertext).decode(),
    ).model_dump()
    return type(event).model_validate(document)


def strip(event: EventT) -> EventT:
    """The event with its personal fields blank and nothing sealed: what is published of a
    call whose key was destroyed."""
    blanks = PERSONAL_FIELDS.get(type(event))
    if blanks is None:
        return event
    document = event.model_dump(mode="json", exclude={"sealed"})
    for pattern, blank in blanks.items():
        for path in _concrete_paths(document, pattern):
            _put(document, path, blank)
    return type(event).model_validate(document)


def open_sealed(event: EventT, data_key: bytes) -> EventT:
    """The event with its sealed personal fields back in place and `sealed` empty; raises
    Unopenable when they do not open with `data_key` or are not this type's."""
    sealed = event.sealed
    if sealed is None:
        return event
    blanks = PERSONAL_FIELDS.get(type(event))
    if sealed.v != SEAL_VERSION or blanks is None:
        raise Unopenable(f"no sealed fields of version {sealed.v} on {type(event).__name__}")
    try:
        plaintext = AESGCM(data_key).decrypt(
            base64.b64decode(sealed.nonce),
            base64.b64decode(sealed.ciphertext),
            associated_data(event),
        )
    except (InvalidTag, ValueError) as error:
        raise Unopenable("the sealed fields do not open with the call's key") from error
    document = event.model_dump(mode="json", exclude={"sealed"})
    for dotted, value in json.loads(plaintext).items():
        path = dotted.split(".")
        if not any(_matches(path, pattern) for pattern in blanks):
            raise Unopenable(f"{dotted} is not a personal field of {type(event).__name__}")
        try:
            _put(document, path, value)
        except (KeyError, TypeError) as error:
            raise Unopenable(f"{dotted} has no place in the event") from error
    try:
        return type(event).model_validate(document)
    except ValidationError as error:
        raise Unopenable(f"the opened event is not valid: {error.error_count()} errors") from error
