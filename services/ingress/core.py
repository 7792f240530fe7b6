"""Ingress core: Twilio webhook parameters in, callpipe events and decisions out. No I/O."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping

from pydantic import ValidationError
from twilio.twiml.voice_response import VoiceResponse

# Ids derive from Twilio's own identifiers: a webhook Twilio retries yields the same event
# id, which every consumer already deduplicates.
from shared.events import (
    TWILIO_NAMESPACE,
    CallStarted,
    CallStatusChanged,
    RecordingCompleted,
    RecordingStarted,
    call_correlation_id,
)

# Recording callbacks Twilio is asked for: `absent` and `failed` end the recording stage, so
# no call waits forever for a recording that will never come.
RECORDING_EVENTS = ("in-progress", "completed", "absent", "failed")
RECORDING_FINAL_STATUSES = ("completed", "absent", "failed")
# Twilio's SIDs are the prefix and 32 hex digits; any short alphanumeric tail is accepted so
# that a SID Twilio formats differently one day is not refused.
SID_PATTERNS = {
    "AccountSid": re.compile(r"AC[0-9A-Za-z]{1,62}"),
    "CallSid": re.compile(r"CA[0-9A-Za-z]{1,62}"),
    "RecordingSid": re.compile(r"RE[0-9A-Za-z]{1,62}"),
}
# Twilio's directions (`inbound`, `outbound-api`, `outbound-dial`, `trunking-originating`…):
# lowercase words and hyphens, within the status table's column.
DIRECTION_PATTERN = re.compile(r"[a-z][a-z-]{0,31}")
# Twilio's I-Twilio-Idempotency-Token is not covered by the signature; it is kept only for
# diagnosis (dedupe is by event id), within its column's length.
MAX_IDEMPOTENCY_TOKEN = 200
IDEMPOTENCY_TOKEN_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_TOKEN}}}")
_CALL_STATUSES = frozenset(
    {"queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed",
     "no-answer", "canceled"}
)  # fmt: skip


class WebhookError(ValueError):
    """The webhook lacks what callpipe needs, or is malformed; answered with 400."""


def _sid(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not SID_PATTERNS[name].fullmatch(value):
        raise WebhookError(f"missing or malformed {name}")
    return value


def _number(form: Mapping[str, str], name: str, kind: type[int] | type[float]) -> float | None:
    """An optional non-negative finite number parameter."""
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError as error:
        raise WebhookError(f"{name} is not a number") from error
    if not math.isfinite(value) or value < 0:
        raise WebhookError(f"{name} out of range")
    return value


def _direction(value: str | None) -> str:
    direction = (value or "").strip() or "inbound"
    if not DIRECTION_PATTERN.fullmatch(direction):
        raise WebhookError("malformed Direction")
    return direction


def usable_idempotency_token(header: str | None) -> str | None:
    """The idempotency token to keep with the delivery: None when absent, or when it is not
    a short printable token (an unsigned header must never decide whether a signed webhook
    is stored)."""
    if header is None or not IDEMPOTENCY_TOKEN_PATTERN.fullmatch(header):
        return None
    return header


def _event_id(name: str) -> uuid.UUID:
    return uuid.uuid5(TWILIO_NAMESPACE, name)


def business_for(
    form: Mapping[str, str], owners: Mapping[str, str], default_business_id: str
) -> str | None:
    """The business owning the call's Twilio number: `To` for an inbound call, `From` for
    an outbound one. No number table means one business owns every number; None means the
    number belongs to nobody."""
    if not owners:
        return default_business_id
    outbound = form.get("Direction", "inbound").startswith("outbound")
    ours, theirs = ("From", "To") if outbound else ("To", "From")
    for side in (ours, theirs):
        business = owners.get(form.get(side, "").strip())
        if business:
            return business
    return None


def call_started(form: Mapping[str, str], business_id: str) -> CallStarted:
    call_sid = _sid(form, "CallSid")
    try:
        return CallStarted(
            event_id=_event_id(f"{call_sid}:call.started"),
            call_sid=call_sid,
            business_id=business_id,
            correlation_id=call_correlation_id(call_sid),
            account_sid=_sid(form, "AccountSid"),
            from_number=form.get("From", ""),
            to_number=form.get("To", ""),
            direction=_direction(form.get("Direction")),
            twilio_params=dict(form),
        )
    except ValidationError as error:
        raise WebhookError(str(error)) from error


def call_status_changed(form: Mapping[str, str], business_id: str) -> CallStatusChanged:
    call_sid = _sid(form, "CallSid")
    _sid(form, "AccountSid")
    status = form.get("CallStatus", "").strip()
    if status not in _CALL_STATUSES:
        raise WebhookError("missing or unknown CallStatus")
    _direction(form.get("Direction"))  # the call.started of REST mode takes it
    sequence = _number(form, "SequenceNumber", int)
    try:
        return CallStatusChanged(
            event_id=_event_id(f"{call_sid}:call.status:{status}"),
            call_sid=call_sid,
            business_id=business_id,
            correlation_id=call_correlation_id(call_sid),
            call_status=status,
            sequence_number=None if sequence is None else int(sequence),
            duration_seconds=_number(form, "CallDuration", float),
            twilio_params=dict(form),
        )
    except ValidationError as error:
        raise WebhookError(str(error)) from error


def recording_event(
    form: Mapping[str, str], business_id: str, direction: str | None = None
) -> RecordingStarted | RecordingCompleted:
    """Twilio's recording status callback: `in-progress`, or a final status. Twilio does not
    say the call's direction here: callpipe's own callback URL carries it."""
    call_sid = _sid(form, "CallSid")
    _sid(form, "AccountSid")
    recording_sid = _sid(form, "RecordingSid")
    status = form.get("RecordingStatus", "").strip()
    if status not in RECORDING_EVENTS:
        raise WebhookError("missing or unknown RecordingStatus")
    channels = _number(form, "RecordingChannels", int)
    if channels is not None and channels not in (1, 2):
        raise WebhookError("RecordingChannels must be 1 or 2")
    common = {
        "event_id": _event_id(f"{recording_sid}:{status}"),
        "call_sid": call_sid,
        "business_id": business_id,
        "correlation_id": call_correlation_id(call_sid),
        "recording_sid": recording_sid,
        "channels": int(channels or 1),
        "twilio_params": dict(form),
    }
    try:
        if status == "in-progress":
            return RecordingStarted(**common)
        recording_url = form.get("RecordingUrl", "").strip()
        if status == "completed" and not recording_url.startswith(("https://", "http://")):
            raise WebhookError("missing or malformed RecordingUrl")
        return RecordingCompleted(
            **common,
            recording_status=status,
            recording_url=recording_url,
            duration_seconds=_number(form, "RecordingDuration", float),
            error_code=form.get("ErrorCode", "").strip() or None,
            direction=None if direction is None else _direction(direction),
        )
    except ValidationError as error:
        raise WebhookError(str(error)) from error


def starts_recording_over_rest(event: CallStatusChanged, recording_mode: str) -> bool:
    """In REST mode the business's own voice app answered: callpipe starts the recording as
    soon as the call is live (the REST API refuses to record a call not yet in progress)."""
    return recording_mode == "rest" and event.call_status == "in-progress"


def call_started_from_status(event: CallStatusChanged) -> CallStarted:
    """The call.started of a call callpipe learns about from its status callback only (REST
    mode); the same event id as the voice webhook's, so both paths dedupe."""
    params = event.twilio_params
    return CallStarted(
        event_id=_event_id(f"{event.call_sid}:call.started"),
        call_sid=event.call_sid,
        business_id=event.business_id,
        correlation_id=event.correlation_id,
        account_sid=params.get("AccountSid", ""),
        from_number=params.get("From", ""),
        to_number=params.get("To", ""),
        direction=params.get("Direction", "inbound"),
        twilio_params=dict(params),
    )


def recording_start_params(recording_callback_url: str) -> dict[str, object]:
    """Arguments of Twilio's `calls(sid).recordings.create`: the same recording the TwiML
    path starts."""
    return {
        "recording_channels": "dual",
        "recording_status_callback": recording_callback_url,
        "recording_status_callback_event": list(RECORDING_EVENTS),
    }


def recording_twiml(recording_callback_url: str, forward_to: str) -> str:
    """Starts a dual-channel recording before anything else runs: the call is recorded from
    its first second, with no REST call racing the call's setup."""
    response = VoiceResponse()
    start = response.start()
    start.recording(
        channels="dual",
        recording_status_callback=recording_callback_url,
        recording_status_callback_event=" ".join(RECORDING_EVENTS),
    )
    if forward_to:
        response.dial(forward_to)
    else:
        response.say("Thank you for calling. Please tell us how we can help after the tone.")
        response.pause(length=60)
    return str(response)


def unknown_number_twiml() -> str:
    response = VoiceResponse()
    response.say("This number is not in service.")
    response.hangup()
    return str(response)
