"""HTTP Range requests on recordings (RFC 9110 §14), resolved against a known length. No I/O.

Parsing is werkzeug's; this module decides what to serve: the whole object, one range (206),
several ranges (206 multipart/byteranges, at most MAX_RANGES), or 416; and which requests
the object store answers the same way, so the player can redirect them there.
"""

from __future__ import annotations

from dataclasses import dataclass

from werkzeug.http import parse_range_header

MAX_RANGES = 8


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


class Unsatisfiable(Exception):
    """Answered with 416 and `Content-Range: bytes */length`."""


class TooManyRanges(Unsatisfiable):
    pass


def resolve(header: str | None, length: int) -> list[ByteRange] | None:
    """None: serve the whole object (no header, or a header that is not a valid byte range,
    which RFC 9110 says to ignore). Otherwise the satisfiable ranges, in request order."""
    if not header:
        return None
    parsed = parse_range_header(header)
    if parsed is None or parsed.units != "bytes":
        return None
    if len(parsed.ranges) > MAX_RANGES:
        raise TooManyRanges(f"at most {MAX_RANGES} ranges per request")
    ranges = []
    for begin, stop in parsed.ranges:
        if begin < 0:  # suffix: the last -begin bytes
            start, end = max(length + begin, 0), length - 1
        else:
            start, end = begin, min(stop if stop is not None else length, length) - 1
        if start < length and end >= start:
            ranges.append(ByteRange(start, end))
    if not ranges:
        raise Unsatisfiable(f"no range within {length} bytes")
    return ranges


def store_answers_alike(header: str | None, wanted: list[ByteRange] | None) -> bool:
    """Whether an S3 GET carrying the client's Range header answers as `resolve` decided: no
    Range at all, or one satisfiable byte range. Not several ranges (S3 servers answer them
    with the whole object), nor a Range this module ignores (invalid, or a stale If-Range,
    which SeaweedFS does not check)."""
    return header is None or (wanted is not None and len(wanted) == 1)
