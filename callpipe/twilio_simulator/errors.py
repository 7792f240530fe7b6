"""Errors as Twilio's REST API answers them."""

from fastapi.responses import JSONResponse


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    """An error as Twilio's REST API answers it (the twilio client reads `code`)."""
    return JSONResponse(
        {"code": code, "message": message, "status": status, "more_info": ""},
        status_code=status,
    )


def not_found() -> JSONResponse:
    return twilio_error(404, 20404, "The requested resource was not found")
