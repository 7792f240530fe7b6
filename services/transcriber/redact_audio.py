"""Rewriting a WAV recording in place: the samples of each span, on its channel only, replaced
by a tone or by silence. Every other byte of the file (header, other chunks, the other
channel, the samples outside the spans) stays as it was, and so does the file's size.

Blocking: callers run it off the event loop.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from numpy.typing import NDArray

from shared.transcript import AudioSpan

# Telephony's test tone: 1004 Hz rather than 1000, so at 8 kHz its samples do not repeat
# every few (1000 Hz falls on zero every fourth sample, where silence would be unchanged).
TONE_HERTZ = 1004.0
# A tenth of full scale: plainly a beep, never louder than the speech around it.
TONE_LEVEL = 0.1
_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


class UnredactableAudio(Exception):
    """The file is not a WAV whose samples can be rewritten; the message says why."""


@dataclass(frozen=True)
class WavLayout:
    """Where a WAV file's samples are and how they are written."""

    encoding: int
    channels: int
    sample_rate: int
    sample_bytes: int
    data_offset: int
    frames: int

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.sample_bytes


def layout(file: BinaryIO, size: int) -> WavLayout:
    """Reads the RIFF header: the format chunk and where the data chunk's samples are."""
    head = file.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise UnredactableAudio("not a RIFF WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    while chunk := file.read(8):
        if len(chunk) < 8:
            break
        name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        start = file.tell()
        if name == b"fmt ":
            fmt = _format(file.read(length))
        elif name == b"data":
            if fmt is None:
                raise UnredactableAudio("data before the format chunk")
            encoding, channels, rate, bits = fmt
            sample_bytes = bits // 8
            # A recorder that never went back to write the length leaves it too large.
            available = min(length, size - start)
            return WavLayout(
                encoding, channels, rate, sample_bytes, start,
                available // (channels * sample_bytes),
            )  # fmt: skip
        file.seek(start + length + (length & 1))
    raise UnredactableAudio("no data chunk")


def _format(body: bytes) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise UnredactableAudio("format chunk too short")
    encoding, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if encoding == _EXTENSIBLE and len(body) >= 26:
        encoding = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID's first field
    supported = {_PCM: (8, 16, 24, 32), _FLOAT: (32,)}
    if bits not in supported.get(encoding, ()) or channels < 1 or rate < 1:
        raise UnredactableAudio(f"samples encoded as format {encoding}, {bits} bits")
    return encoding, channels, rate, bits


def redact_wav(path: Path, spans: Sequence[AudioSpan], sound: Literal["tone", "silence"]) -> None:
    """Replaces each span's samples on its channel by `sound`, in place."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        wav = layout(file, size)
        for span in spans:
            if span.channel >= wav.channels:
                raise UnredactableAudio(f"no channel {span.channel + 1} in the recording")
            first = min(wav.frames, math.floor(span.start * wav.sample_rate))
            last = min(wav.frames, math.ceil(span.end * wav.sample_rate))
            if last <= first:
                continue
            file.seek(wav.data_offset + first * wav.frame_bytes)
            frames = bytearray(file.read((last - first) * wav.frame_bytes))
            samples = np.frombuffer(frames, np.uint8).reshape(last - first, wav.channels, -1)
            samples[:, span.channel, :] = _encoded(_signal(first, last, wav, sound), wav)
            file.seek(wav.data_offset + first * wav.frame_bytes)
            file.write(frames)


def _signal(
    first: int, last: int, wav: WavLayout, sound: Literal["tone", "silence"]
) -> NDArray[np.float64]:
    if sound == "silence":
        return np.zeros(last - first)
    seconds = np.arange(first, last) / wav.sample_rate
    return TONE_LEVEL * np.sin(2 * np.pi * TONE_HERTZ * seconds)


def _encoded(signal: NDArray[np.float64], wav: WavLayout) -> NDArray[np.uint8]:
    """The signal (-1..1) as the file's little-endian sample bytes, one row a frame."""
    if wav.encoding == _FLOAT:
        return signal.astype("<f4").view(np.uint8).reshape(len(signal), 4)
    if wav.sample_bytes == 1:  # 8-bit PCM is unsigned, silence at 128
        return np.round(128 + signal * 127).astype(np.uint8).reshape(len(signal), 1)
    full_scale = 2 ** (8 * wav.sample_bytes - 1) - 1
    values = np.round(signal * full_scale).astype("<i4").view(np.uint8).reshape(len(signal), 4)
    low_bytes: NDArray[np.uint8] = values[:, : wav.sample_bytes]
    return low_bytes
