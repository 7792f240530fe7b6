"""Ingress core: Twilio webhook parameters in, callpipe events out. No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from twilio.twiml.voice_response import VoiceResponse

# Ids derive from Twilio's own identifiers: a webhook Twilio retries yields the same event
# id, which every consumer already deduplicates.
from shared.events import (
    TWILIO_NAMESPACE,
    CallStarted,
    RecordingCompleted,
    call_correlation_id,
)


class WebhookError(ValueError):
    """The webhook lacks what callpipe needs; answered with 400."""


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise WebhookError(f"missing {name}")
    return value


def call_started(form: Mapping[str, str], business_id: str) -> CallStarted:
    call_sid = _required(form, "CallSid")
    return CallStarted(
        event_id=uuid.uuid5(TWILIO_NAMESPACE, f"{call_sid}:call.started"),
        call_sid=call_sid,
        business_id=business_id,
        correlation_id=call_correlation_id(call_sid),
        account_sid=_required(form, "AccountSid"),
        from_number=form.get("From", ""),
        to_number=form.get("To", ""),
        direction=form.get("Direction", "inbound"),
    )


def recording_completed(form: Mapping[str, str], business_id: str) -> RecordingCompleted:
    call_sid = _required(form, "CallSid")
    recording_sid = _required(form, "RecordingSid")
    status = _required(form, "RecordingStatus")
    if status not in ("completed", "absent", "failed"):
        raise WebhookError(f"unexpected RecordingStatus {status!r}")
    recording_url = form.get("RecordingUrl", "")
    if status == "completed" and not recording_url:
        raise WebhookError("missing RecordingUrl")
    duration = form.get("RecordingDuration")
    return RecordingCompleted(
        event_id=uuid.uuid5(TWILIO_NAMESPACE, f"{recording_sid}:{status}"),
        call_sid=call_sid,
        business_id=business_id,
        correlation_id=call_correlation_id(call_sid),
        recording_sid=recording_sid,
        recording_status=status,
        recording_url=recording_url,
        duration_seconds=float(duration) if duration else None,
        channels=int(form.get("RecordingChannels", "1") or 1),
        error_code=form.get("ErrorCode") or None,
    )


def recording_twiml(recording_callback_url: str, forward_to: str) -> str:
    """Starts a dual-channel recording before anything else runs: the call is recorded from
    its first second, with no REST call racing the call's setup."""
    response = VoiceResponse()
    start = response.start()
    start.recording(
        channels="dual",
        recording_status_callback=recording_callback_url,
        recording_status_callback_event="completed absent",
    )
    if forward_to:
        response.dial(forward_to)
    else:
        response.say("Thank you for calling. Please tell us how we can help after the tone.")
        response.pause(length=60)
    return str(response)
