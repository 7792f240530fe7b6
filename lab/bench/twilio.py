"""What Twilio does in the benchmark: signed recording status callbacks to the ingress, and
recordings registered with the local Twilio simulator (media ready at once)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp
from twilio.request_validator import RequestValidator

from callpipe.twilio_simulator.samples import sample_path
from shared.settings import Settings

REGISTER_CONCURRENCY = 16


@dataclass(frozen=True)
class Recording:
    call_sid: str
    recording_sid: str
    url: str
    business_id: str


class SignedWebhooks:
    """Posts recording status callbacks signed like Twilio's, over one keep-alive client."""

    def __init__(self, settings: Settings, http: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._http = http
        self._validator = RequestValidator(settings.twilio.auth_token.get_secret_value())
        self._base = f"{settings.ingress.public_base_url.rstrip('/')}/twilio/recording-status"

    async def recording_status(self, recording: Recording, status: str) -> None:
        # The business rides in the callback URL, as in the URL callpipe's TwiML gives Twilio.
        query = urlencode({"business": recording.business_id, "direction": "inbound"})
        url = f"{self._base}?{query}"
        form = {
            "AccountSid": self._settings.twilio.account_sid,
            "CallSid": recording.call_sid,
            "RecordingSid": recording.recording_sid,
            "RecordingStatus": status,
            "RecordingUrl": recording.url,
            "RecordingChannels": "2",
        }
        signature = self._validator.compute_signature(url, form)
        async with self._http.post(
            url, data=form, headers={"X-Twilio-Signature": signature}
        ) as answer:
            if answer.status != 204:
                raise RuntimeError(f"ingress answered {answer.status}: {await answer.text()}")


def unregistered_recording(business_id: str) -> Recording:
    """A recording the simulator does not know: for callbacks that fetch nothing."""
    return Recording(
        "CA" + secrets.token_hex(16),
        "RE" + secrets.token_hex(16),
        "https://api.twilio.com/unused",
        business_id,
    )


def businesses(settings: Settings, count: int) -> list[str]:
    return [f"{settings.business.default_id}-{number}" for number in range(1, count + 1)]


async def register_recordings(
    settings: Settings,
    http: aiohttp.ClientSession,
    audio: str,
    count: int,
    business_ids: list[str],
) -> list[Recording]:
    """`count` recordings of `audio` served by the simulator, ready at once, of the
    businesses in turn."""
    simulator = f"http://127.0.0.1:{settings.local.simulator_port}/simulator/recordings"
    path = str(sample_path(audio))
    limit = asyncio.Semaphore(REGISTER_CONCURRENCY)

    async def one(index: int) -> Recording:
        async with (
            limit,
            http.post(simulator, json={"audio": path, "media_delay_seconds": 0}) as answer,
        ):
            answer.raise_for_status()
            made = await answer.json()
        call_sid = "CA" + secrets.token_hex(16)
        business_id = business_ids[index % len(business_ids)]
        return Recording(call_sid, made["recording_sid"], made["recording_url"], business_id)

    return list(await asyncio.gather(*(one(index) for index in range(count))))
