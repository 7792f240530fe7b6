"""Twilio's REST API through the real twilio client, whose base URL alone is configurable: tests
and the demo point it at the local Twilio simulator."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

log = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"
# Twilio's "the call is already being recorded": a second start is not a failure.
ALREADY_RECORDING = 21220
NOT_FOUND = 404


class BaseUrlHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The twilio client's HTTP client, sending what is meant for api.twilio.com to
    `api_base_url`. Created inside the event loop (its HTTP session binds to it)."""

    def __init__(self, api_base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._api_base_url = api_base_url.rstrip("/")

    async def request(self, method: str, url: str, *args: object, **kwargs: object) -> Response:
        if url.startswith(TWILIO_API):
            url = self._api_base_url + url.removeprefix(TWILIO_API)
        return await super().request(method, url, *args, **kwargs)


class RecordingStarter:
    """Starts a call's recording on the live call. Created inside the event loop."""

    def __init__(self, account_sid: str, auth_token: str, api_base_url: str) -> None:
        self._http = BaseUrlHttpClient(api_base_url, timeout=5)
        self._client = Client(account_sid, auth_token, http_client=self._http)

    async def start(self, call_sid: str, params: Mapping[str, object]) -> str | None:
        """Starts the recording `params` describe (the arguments of Twilio's
        `calls(sid).recordings.create`); the recording SID, or None when the call was already
        being recorded (e.g. a retried status callback)."""
        try:
            recording = await self._client.calls(call_sid).recordings.create_async(**params)
        except TwilioRestException as error:
            if error.code == ALREADY_RECORDING:
                log.info("call is already being recorded (Twilio error %s)", error.code)
                return None
            raise
        log.info("started recording %s over the REST API", recording.sid)
        return str(recording.sid)

    async def close(self) -> None:
        await self._http.close()


class RecordingDeleter:
    """Deletes a call's recordings at Twilio (`DELETE …/Recordings/{RecordingSid}.json`).
    Created inside the event loop."""

    def __init__(self, account_sid: str, auth_token: str, api_base_url: str) -> None:
        self._http = BaseUrlHttpClient(api_base_url, timeout=10)
        self._client = Client(account_sid, auth_token, http_client=self._http)

    async def delete_of_call(self, call_sid: str) -> int:
        """Deletes every recording Twilio lists for the call; how many it deleted. One
        Twilio no longer has (404) is deleted already; any other refusal raises
        TwilioRestException, and a network failure its own error."""
        deleted = 0
        for recording in await self._client.recordings.list_async(call_sid=call_sid):
            try:
                await self._client.recordings(recording.sid).delete_async()
            except TwilioRestException as error:
                if error.status != NOT_FOUND:
                    raise
                continue
            deleted += 1
        log.info("deleted %d recording(s) of %s at Twilio", deleted, call_sid)
        return deleted

    async def close(self) -> None:
        await self._http.close()
