"""Many concurrent callers, one round trip: a micro-batcher for writes that cost per
transaction rather than per row (see docs/decisions/0907-batched-webhook-dedupe.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class MicroBatcher(Generic[ItemT, ResultT]):
    """`submit(item)` answers `handle(batch)[i]` for its item. One batch runs at a time;
    items submitted meanwhile wait for it and go together in the next (at most `max_size`).
    Nothing waits for a batch to fill: a lone item goes at once, and under load the batches
    grow by themselves to what arrives during one round trip.

    A failing `handle` fails every item of its batch. Should a caller stop waiting (it was
    cancelled), its result goes to `abandoned`, so a side effect made for nobody can be
    undone.
    """

    def __init__(
        self,
        handle: Callable[[Sequence[ItemT]], Awaitable[Sequence[ResultT]]],
        max_size: int,
        abandoned: Callable[[ItemT, ResultT], None] = lambda _item, _result: None,
    ) -> None:
        self._handle = handle
        self._max_size = max_size
        self._abandoned = abandoned
        self._waiting: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, item: ItemT) -> ResultT:
        answer: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, answer))
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        return await answer

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_size]
                del self._waiting[: self._max_size]
                await self._answer(batch)
        finally:
            self._running = None
            # Only when the batcher itself is cancelled (shutdown) is anything left here.
            for _, answer in self._waiting:
                answer.cancel()
            self._waiting.clear()

    async def _answer(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self._handle([item for item, _ in batch])
        except BaseException as error:
            for _, answer in batch:
                if answer.done():
                    continue
                if isinstance(error, Exception):
                    answer.set_exception(error)
                else:
                    answer.cancel()
            if not isinstance(error, Exception):
                raise
            return
        for (item, answer), result in zip(batch, results, strict=True):
            if answer.done():
                self._abandoned(item, result)
            else:
                answer.set_result(result)
