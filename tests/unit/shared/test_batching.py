"""The micro-batcher: concurrent callers share one call of the handler, each gets its own
answer, and a failure reaches every caller of its batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.batching import MicroBatcher


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.release = asyncio.Event()

    async def handle(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_on in items:
            raise ValueError(f"refused {self.fail_on}")
        return [item * 10 for item in items]


async def test_callers_arriving_during_a_batch_go_together_in_the_next_each_with_its_answer() -> (
    None
):
    recorder = Recorder()
    batcher = MicroBatcher(recorder.handle, max_size=100)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    others = [asyncio.create_task(batcher.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    recorder.release.set()
    assert await first == 10
    assert await asyncio.gather(*others) == [20, 30, 40]
    assert recorder.batches == [[1], [2, 3, 4]]


async def test_a_batch_holds_at_most_max_size_items() -> None:
    recorder = Recorder()
    recorder.release.set()
    batcher = MicroBatcher(recorder.handle, max_size=2)
    assert await asyncio.gather(*(batcher.submit(n) for n in range(5))) == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0, 1], [2, 3], [4]]


async def test_a_failing_batch_fails_its_callers_only() -> None:
    recorder = Recorder(fail_on=2)
    batcher = MicroBatcher(recorder.handle, max_size=100)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    failing = [asyncio.create_task(batcher.submit(n)) for n in (2, 3)]
    await asyncio.sleep(0)
    recorder.release.set()
    assert await first == 10
    for task in failing:
        with pytest.raises(ValueError, match="refused 2"):
            await task
    assert await batcher.submit(4) == 40  # the batcher goes on


async def test_the_result_of_a_caller_that_stopped_waiting_goes_to_abandoned() -> None:
    recorder = Recorder()
    abandoned: list[tuple[int, int]] = []
    batcher = MicroBatcher(
        recorder.handle,
        max_size=100,
        abandoned=lambda item, result: abandoned.append((item, result)),
    )
    gone = asyncio.create_task(batcher.submit(7))
    staying = asyncio.create_task(batcher.submit(8))
    await asyncio.sleep(0)
    gone.cancel()
    recorder.release.set()
    assert await staying == 80
    assert abandoned == [(7, 70)]
