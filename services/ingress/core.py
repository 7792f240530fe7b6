"""Ingress core: which business a webhook is for, how a call's recording is started, and the
TwiML answers. Parsing Twilio's callbacks into events is `shared.twilio_callbacks`. No I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping

from twilio.twiml.voice_response import VoiceResponse

from shared.events import CallStatusChanged
from shared.twilio_callbacks import RECORDING_EVENTS

# Twilio's I-Twilio-Idempotency-Token is not covered by the signature; it is kept only for
# diagnosis (dedupe is by event id), within its column's length.
MAX_IDEMPOTENCY_TOKEN = 200
IDEMPOTENCY_TOKEN_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_TOKEN}}}")


def usable_idempotency_token(header: str | None) -> str | None:
    """The idempotency token to keep with the delivery: None when absent, or when it is not
    a short printable token (an unsigned header must never decide whether a signed webhook
    is stored)."""
    if header is None or not IDEMPOTENCY_TOKEN_PATTERN.fullmatch(header):
        return None
    return header


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


def starts_recording_over_rest(event: CallStatusChanged, recording_mode: str) -> bool:
    """In REST mode the business's own voice app answered: callpipe starts the recording as
    soon as the call is live (the REST API refuses to record a call not yet in progress)."""
    return recording_mode == "rest" and event.call_status == "in-progress"


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
