"""Twilio REST adapter of the ingress: starts a call's recording on the live call.

The real twilio client; only its base URL is configurable, so tests and the demo can point
it at the local Twilio simulator.
"""

from __future__ import annotations

import logging

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from services.ingress import core

log = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"


class _BaseUrlHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    def __init__(self, api_base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._api_base_url = api_base_url.rstrip("/")

    async def request(self, method: str, url: str, *args: object, **kwargs: object) -> Response:
        if url.startswith(TWILIO_API):
            url = self._api_base_url + url.removeprefix(TWILIO_API)
        return await super().request(method, url, *args, **kwargs)


class RecordingStarter:
    """Created inside the event loop (the HTTP session binds to it)."""

    def __init__(self, account_sid: str, auth_token: str, api_base_url: str) -> None:
        self._http = _BaseUrlHttpClient(api_base_url, timeout=5)
        self._client = Client(account_sid, auth_token, http_client=self._http)

    async def start(self, call_sid: str, recording_callback_url: str) -> str | None:
        """Starts a dual-channel recording; the recording SID, or None when the call was
        already being recorded (Twilio error 21220, e.g. a retried status callback)."""
        try:
            recording = await self._client.calls(call_sid).recordings.create_async(
                **core.recording_start_params(recording_callback_url)
            )
        except TwilioRestException as error:
            if error.code == core.ALREADY_RECORDING:
                log.info("call is already being recorded (Twilio error %s)", error.code)
                return None
            raise
        log.info("started recording %s over the REST API", recording.sid)
        return str(recording.sid)

    async def close(self) -> None:
        await self._http.close()
