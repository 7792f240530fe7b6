"""What the simulator's routes declare they need: the simulator, and the REST API's caller."""

from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from callpipe.twilio_simulator.simulator import TwilioSimulator


def twilio_simulator(request: Request) -> TwilioSimulator:
    return cast(TwilioSimulator, request.app.state.simulator)


Simulator = Annotated[TwilioSimulator, Depends(twilio_simulator)]

basic = HTTPBasic(realm="Twilio API")


def account(
    credentials: Annotated[HTTPBasicCredentials, Depends(basic)], simulator: Simulator
) -> str:
    """The account SID the REST API's caller authenticated as."""
    if not simulator.authenticates(credentials.username, credentials.password):
        raise HTTPException(status_code=401, detail="Authenticate")
    return credentials.username


Caller = Annotated[str, Depends(account)]
