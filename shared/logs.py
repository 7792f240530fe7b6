"""Logging with the call SID and event id on every line, taken from context variables; as
text or as one JSON object a line (`CALLPIPE_LOG_FORMAT=json`), with the trace id when traced.
No line carries a phone number or a query string's values (decision 1105)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

from shared import tracing

call_sid_var: ContextVar[str] = ContextVar("call_sid", default="-")
event_id_var: ContextVar[str] = ContextVar("event_id", default="-")


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.call_sid = call_sid_var.get()
        record.event_id = event_id_var.get()
        record.trace_id = tracing.current_trace_id() or "-"
        return True


# A number as Twilio writes it (E.164), and the values of a URL's query (the player's call
# list is filtered by `phone=` and searched by `q=`; presigned URLs carry signatures).
_PHONE_NUMBER = re.compile(r"\+\d{6,15}")
_QUERY_VALUE = re.compile(r"([?&][^=&\s]+)=[^&\s\"']*")


def masked(text: str) -> str:
    """`text` with each phone number cut to its first and last two digits, and each URL
    query value replaced by `…`."""
    text = _PHONE_NUMBER.sub(lambda number: f"{number[0][:3]}…{number[0][-2:]}", text)
    return _QUERY_VALUE.sub(r"\1=…", text)


class _PersonalDataFilter(logging.Filter):
    """Masks the formatted message of every record (uvicorn's access lines included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = masked(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure(
    service: str, log_format: Literal["text", "json"] = "text", level: str = "INFO"
) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_ContextFilter())
    handler.addFilter(_PersonalDataFilter())
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s %(call_sid)s %(event_id)s %(trace_id)s",
                rename_fields={"levelname": "level", "name": "logger"},
                static_fields={"service": service},
                timestamp="time",  # ISO 8601, UTC
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s {service} call=%(call_sid)s event=%(event_id)s "
                "%(name)s: %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "botocore", "aiobotocore", "httpx", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def call_context(call_sid: str, event_id: str) -> Iterator[None]:
    call_token = call_sid_var.set(call_sid)
    event_token = event_id_var.set(event_id)
    try:
        yield
    finally:
        call_sid_var.reset(call_token)
        event_id_var.reset(event_token)
