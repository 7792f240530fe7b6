"""Top frames of a py-spy profile: `py-spy record -p PID -d 10 -r 50 -f raw -o prof.txt`, then

    .venv/bin/python -m lab.profile_top prof.txt [N]

prints the N frames holding the most busy samples, by themselves and including their callees.
Samples whose innermost frame is an idle wait (epoll, a thread pool's or aiosqlite's queue)
are counted apart, so a mostly idle process does not look busy in its waits."""

from __future__ import annotations

import sys
from collections import Counter

IDLE_FRAMES = ("selectors.py:468", "thread.py:81", "aiosqlite/core.py:59)")


def main(path: str, count: int) -> None:
    own: Counter[str] = Counter()
    including: Counter[str] = Counter()
    busy = idle = 0
    with open(path) as profile:
        for line in filter(None, (raw.rstrip() for raw in profile)):
            stack, _, count_text = line.rpartition(" ")
            samples = int(count_text)
            frames = stack.split(";")
            if any(marker in frames[-1] for marker in IDLE_FRAMES):
                idle += samples
                continue
            busy += samples
            own[frames[-1]] += samples
            for frame in set(frames):
                including[frame] += samples
    print(f"busy samples {busy}, idle {idle}")
    for title, counter in (("self", own), ("inclusive", including)):
        print(f"-- {title} --")
        for frame, frame_samples in counter.most_common(count):
            print(f"{100 * frame_samples / busy:5.1f}% {frame[:140]}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25)
