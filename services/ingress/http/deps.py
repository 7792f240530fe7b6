"""The ingress's request dependencies, in one place: what a route declares it needs."""

from __future__ import annotations

import logging
from typing import Annotated, cast
from urllib.parse import parse_qsl

from fastapi import Depends, HTTPException, Request

from services.ingress.http.state import IngressState
from shared.twilio_rest import RecordingStarter

log = logging.getLogger(__name__)

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 1000  # Starlette's limit too


def ingress_state(request: Request) -> IngressState:
    return cast(IngressState, request.app.state.ingress)


State = Annotated[IngressState, Depends(ingress_state)]


def recording_starter(state: State) -> RecordingStarter:
    if state.recording_starter is None:
        raise RuntimeError("the Twilio client exists only while the application runs")
    return state.recording_starter


Starter = Annotated[RecordingStarter, Depends(recording_starter)]


async def signed_form(request: Request, state: State) -> dict[str, str]:
    """The POST parameters, once the X-Twilio-Signature over the public URL checks out.
    The URL is the configured public one, never built from Host or X-Forwarded-*."""
    content_type = request.headers.get("Content-Type", "").partition(";")[0].strip()
    if content_type.lower() != FORM_CONTENT_TYPE:
        raise HTTPException(status_code=400, detail=f"webhooks are {FORM_CONTENT_TYPE}")
    # Each field decoded as Starlette's form parser decodes it (bytes as latin-1, then
    # %-escapes as UTF-8), at a fraction of its cost per webhook (decision 0907).
    try:
        form = dict(
            parse_qsl(
                (await request.body()).decode("latin-1"),
                keep_blank_values=True,
                max_num_fields=MAX_FORM_FIELDS,
            )
        )
    except ValueError as error:
        raise HTTPException(status_code=400, detail="too many form fields") from error
    url = state.public_base + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not state.validator.validate(url, form, signature):
        log.warning("refused a webhook with a bad signature for %s", url)
        raise HTTPException(status_code=403, detail="invalid Twilio signature")
    return form


SignedForm = Annotated[dict[str, str], Depends(signed_form)]
