"""The bounded stop of a long-running process, whatever its broker, S3 server or database do.

SIGTERM or SIGINT sets `stop`: the process stops taking work, in-flight work gets
`shutdown_grace_seconds` to finish, and committing what finished and closing connections get
`shutdown_close_seconds` more. A step not done by then is abandoned (uncommitted work is
redelivered after the restart) and named in the one line the stop logs. Should something
still hold the process past that bound (a thread that cannot be interrupted), it ends at
once, exit status 0, saying so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable

from shared.retry import describe
from shared.settings import ShutdownSettings

log = logging.getLogger(__name__)

# Past the bound, the last resort gives the event loop this long to finish on its own.
LAST_RESORT_MARGIN_SECONDS = 1.0


class Shutdown:
    def __init__(
        self, name: str, settings: ShutdownSettings, stop: asyncio.Event | None = None
    ) -> None:
        """`stop`: an event the caller sets to stop this part (by default its own, set by
        `begin`)."""
        self.name = name
        self.grace_seconds = settings.grace_seconds
        self.close_seconds = settings.close_seconds
        self.stop = stop or asyncio.Event()
        self.abandoned: list[str] = []
        self._began: float | None = None

    def on_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.begin)

    def begin(self, last_resort: bool = True) -> None:
        """The stop begins. `last_resort`: the process ends at the bound if still there (not
        for an app run inside another program, as tests do)."""
        if self._began is not None:
            return
        self._began = time.monotonic()
        self.stop.set()
        log.info(
            "%s stopping: in-flight work gets %.1f s, closing %.1f s more",
            self.name,
            self.grace_seconds,
            self.close_seconds,
        )
        if not last_resort:
            return
        bound = self.grace_seconds + self.close_seconds + LAST_RESORT_MARGIN_SECONDS
        threading.Thread(target=self._last_resort, args=(bound,), daemon=True).start()

    @property
    def bound_seconds(self) -> float:
        return self.grace_seconds + self.close_seconds

    def _elapsed(self) -> float:
        return 0.0 if self._began is None else time.monotonic() - self._began

    def grace_left(self) -> float:
        return max(0.0, self.grace_seconds - self._elapsed())

    def close_left(self) -> float:
        return max(0.0, self.bound_seconds - self._elapsed())

    def abandon(self, what: str) -> None:
        self.abandoned.append(what)

    async def within_bound(self, what: str, step: Awaitable[object]) -> bool:
        """Runs one step of the stop (a commit, closing a client) for at most what is left of
        the bound (all of it before the stop began); True if it finished, else it is
        abandoned (and named in the last line)."""
        try:
            await asyncio.wait_for(step, self.close_left())
        except TimeoutError:
            self.abandon(f"{what} (no answer)")
            return False
        except asyncio.CancelledError:
            # A client's own task, cancelled inside it (aiokafka's fetcher does), not this stop.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            self.abandon(f"{what} (cancelled inside)")
            return False
        except Exception as error:
            self.abandon(f"{what} ({describe(error)})")
            return False
        return True

    def closing(
        self, what: str, close: Callable[[], Awaitable[object]]
    ) -> Callable[[], Awaitable[None]]:
        """`close` as a bounded step, for an AsyncExitStack callback."""

        async def bounded() -> None:
            await self.within_bound(f"closing {what}", close())

        return bounded

    def finished(self) -> None:
        """The one line of a stop: how long it took and what it abandoned."""
        log.info(
            "%s stopped in %.1f s; abandoned: %s",
            self.name,
            self._elapsed(),
            "; ".join(self.abandoned) or "nothing",
        )

    def _last_resort(self, bound: float) -> None:
        # A daemon thread: a process that exits in time ends it unnoticed.
        time.sleep(bound)
        log.error(
            "%s still stopping %.1f s after the signal: exiting now; abandoned: %s",
            self.name,
            bound,
            "; ".join([*self.abandoned, "whatever was still running"]),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
