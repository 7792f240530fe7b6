"""No personal data in the log lines of an HTTP service run as `callpipe run` runs it (uvicorn
with callpipe's logging): no caller's number, no query string's values."""

from __future__ import annotations

import httpx
import pytest

from callpipe.bootstrap import ingress_app
from shared import logs
from shared.settings import Settings
from tests.support.ingress import ACCOUNT_SID, INGRESS_PORT, serving, signed_headers

INGRESS = f"http://127.0.0.1:{INGRESS_PORT}"
CALLER = "+15551234567"
SECRET_SEARCH = "leaking-secret-words"


# Each test configures logging as a service would.
pytestmark = pytest.mark.usefixtures("restored_logging")


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_log_lines_carry_no_phone_number_and_no_query_values(
    settings: Settings, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    logs.configure("ingress", log_format)  # type: ignore[arg-type]
    settings = settings.updated(business={"numbers": "+15005550002=electrician"})
    voice = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + "4" * 32,
        "From": CALLER,
        "To": "+15559876543",
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    async with serving(ingress_app(settings), INGRESS_PORT), httpx.AsyncClient() as client:
        url = f"{INGRESS}/twilio/voice"
        answer = await client.post(url, data=voice, headers=signed_headers(url, voice))
        assert answer.status_code == 200
        searched = await client.get(
            f"{INGRESS}/api/calls", params={"phone": CALLER, "q": SECRET_SEARCH}
        )
        assert searched.status_code == 404
    output = capsys.readouterr().err
    assert "a number no business owns" in output  # the lines were written
    assert "/api/calls?phone=" in output
    for personal in (CALLER, CALLER.removeprefix("+"), "5551234567", "9876543", SECRET_SEARCH):
        assert personal not in output
