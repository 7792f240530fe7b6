"""Logging with the call SID and event id on every line, taken from context variables; as
text or as one JSON object a line (`CALLPIPE_LOG_FORMAT=json`), with the trace id when traced.
No line carries a phone number or a query string's values (decision 1105)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
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


# Client libraries that log every failed try while a server is away: a few lines a second for
# as long as the outage lasts, each saying the same. callpipe logs the state change itself.
CHATTY_CLIENTS = ("aiokafka",)
REPEAT_WINDOW_SECONDS = 60.0


class _RepeatFilter(logging.Filter):
    """Lets a chatty client's message through once per REPEAT_WINDOW_SECONDS (per logger and
    message template); the next one that passes says how many like it were held back."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._passed_at: dict[tuple[str, object], float] = {}
        self._held: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(CHATTY_CLIENTS):
            return True
        key = (record.name, record.msg)
        now = self._clock()
        passed_at = self._passed_at.get(key)
        if passed_at is not None and now - passed_at < REPEAT_WINDOW_SECONDS:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._passed_at[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.getMessage()} (and {held} more like it since)"
            record.args = None
        return True


def configure(
    service: str, log_format: Literal["text", "json"] = "text", level: str = "INFO"
) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RepeatFilter())
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
