"""Where a call's CPU goes: the CPU time (user + system, from Linux's /proc) that each process
of the bench's stack, and the bench itself, spent over one measurement."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from callpipe.stack import Stack

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
BENCH = "bench client"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the command name (which may hold spaces) start at field 3, the state;
    # utime and stime are fields 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


@dataclass(frozen=True)
class CpuSnapshot:
    seconds: dict[tuple[str, int], float]  # (part, pid) → CPU seconds so far

    @classmethod
    def of(cls, stack: Stack) -> CpuSnapshot:
        pids = {(BENCH, os.getpid())}
        pids |= {(c.name, c.process.pid) for c in stack.children if c.process is not None}
        readings = {key: cpu_seconds(key[1]) for key in pids}
        return cls({key: used for key, used in readings.items() if used is not None})

    def ms_each_since(self, before: CpuSnapshot, count: int) -> dict[str, float]:
        """Milliseconds of CPU each part spent per one of `count` (calls, webhooks), largest
        first; a part restarted in between (another pid) is left out, not counted wrong."""
        spent = {
            part: (used - before.seconds[(part, pid)]) * 1000 / max(count, 1)
            for (part, pid), used in self.seconds.items()
            if (part, pid) in before.seconds
        }
        return dict(sorted(((p, round(ms, 1)) for p, ms in spent.items()), key=lambda x: -x[1]))


def stack_ms(ms_each: dict[str, float]) -> float:
    """The stack's processes' milliseconds together, the bench's own left out."""
    return round(sum(ms for part, ms in ms_each.items() if part != BENCH), 1)
