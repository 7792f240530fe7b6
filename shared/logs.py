"""Logging with the call SID and event id on every line, taken from context variables."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

call_sid_var: ContextVar[str] = ContextVar("call_sid", default="-")
event_id_var: ContextVar[str] = ContextVar("event_id", default="-")


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.call_sid = call_sid_var.get()
        record.event_id = event_id_var.get()
        return True


def configure(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_ContextFilter())
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
