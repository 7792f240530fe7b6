"""LOCAL TWILIO SIMULATOR: for tests and the demo only, never used in production.

It plays the parts of Twilio that callpipe talks to, over real HTTP:
- places a call, inbound or outbound, in one of two recording modes: `twiml` POSTs the signed
  voice webhook to the ingress and reads its TwiML, which must start a recording
  (`<Start><Recording>`) before anything else; `rest` (the business's own app answered) POSTs
  the call status callback `in-progress` and waits for the ingress to start the recording
  over the REST API (`POST …/Calls/{CallSid}/Recordings.json`, which answers error 21220 to
  a second start on a call already recording);
- posts the call status callbacks (`in-progress`, `completed`, or `busy` / `no-answer` for a
  call never answered) and the recording status callbacks the recording subscribed to
  (`in-progress`, then `completed`, `absent` or `failed`), each with an
  `I-Twilio-Idempotency-Token`, retrying like Twilio when the ingress answers 5xx or not at
  all, and delivering each webhook several times on request (Twilio's retries);
- serves the recording media under Twilio's URL shape with basic auth, answering 404 for the
  first moments after `completed`, as Twilio does, and deletes a recording on DELETE;
- for tests of the downloader: registers recordings directly, answers 429 with Retry-After
  or another error status for a recording's first tries, streams media at a set rate, and
  reports every media request it got (with when each download started and ended), and the
  call of every REST request to start a recording;
- keeps a log of every REST API request (what it asked for, for which call, the status
  answered), so a run can count what callpipe asked of Twilio per call.
Signatures are made with twilio's own RequestValidator and the shared auth token.
"""

import httpx
from fastapi import FastAPI

from callpipe.twilio_simulator.routers import calls, control, recordings
from callpipe.twilio_simulator.simulator import TwilioSimulator
from shared.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="LOCAL TWILIO SIMULATOR (tests and demo only)")
    app.state.simulator = TwilioSimulator(settings, httpx.AsyncClient(timeout=15))
    for router in (control.router, calls.router, recordings.router):
        app.include_router(router)
    return app
