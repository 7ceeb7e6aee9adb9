from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.batching import WRITER_TASK, GroupCommit


class Recorder:
    """A batch writer that holds each batch until released, and remembers the batches."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_with: Exception | None = None

    async def write(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [item * 10 for item in items]


async def test_a_lone_call_is_written_at_once() -> None:
    recorder = Recorder()
    recorder.release.set()
    assert await GroupCommit(recorder.write).submit(1) == 10
    assert recorder.batches == [[1]]


async def test_calls_made_during_a_write_share_the_next_batch() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write, max_in_flight=1)
    first = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0)  # the first batch is now in flight
    rest = [asyncio.create_task(commit.submit(item)) for item in range(2, 6)]
    await asyncio.sleep(0)
    recorder.release.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40, 50]
    assert recorder.batches == [[1], [2, 3, 4, 5]]


async def test_batches_are_capped() -> None:
    recorder = Recorder()
    recorder.release.set()
    commit = GroupCommit(recorder.write, max_batch=2, max_in_flight=1)
    assert await asyncio.gather(*(commit.submit(item) for item in range(5))) == [
        0,
        10,
        20,
        30,
        40,
    ]
    assert recorder.batches == [[0, 1], [2, 3], [4]]


async def test_two_batches_in_flight_and_the_rest_waiting_for_either() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write, max_in_flight=2)
    first = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(commit.submit(2))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(commit.submit(item)) for item in range(3, 6)]
    await asyncio.sleep(0)
    assert recorder.batches == [[1], [2]]
    recorder.release.set()
    assert await asyncio.gather(first, second, *rest) == [10, 20, 30, 40, 50]
    assert recorder.batches == [[1], [2], [3, 4, 5]]


async def test_a_failed_batch_fails_each_of_its_calls_and_the_next_batch_still_runs() -> None:
    recorder = Recorder()
    recorder.fail_with = TimeoutError("store down")
    recorder.release.set()
    commit = GroupCommit(recorder.write)
    results = await asyncio.gather(commit.submit(1), commit.submit(2), return_exceptions=True)
    assert [str(result) for result in results] == ["store down", "store down"]
    recorder.fail_with = None
    assert await commit.submit(3) == 30


async def test_a_cancelled_caller_does_not_disturb_its_batch() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    leaving = asyncio.create_task(commit.submit(1))
    staying = asyncio.create_task(commit.submit(2))
    await asyncio.sleep(0)
    leaving.cancel()
    recorder.release.set()
    assert await staying == 20
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert recorder.batches == [[1, 2]]


async def test_callers_are_cancelled_with_the_writer() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    caller = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the writer is now waiting in the batch write
    [writer] = [task for task in asyncio.all_tasks() if task.get_name() == WRITER_TASK]
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_a_call_made_as_the_last_writer_leaves_is_written() -> None:
    """A batch's caller resumes before its writer's task is done; what it submits then must not
    wait for a writer that has already left (as the relay does, an event after another)."""
    recorder = Recorder()
    recorder.release.set()
    commit = GroupCommit(recorder.write, max_in_flight=1)

    async def one_after_another(items: list[int]) -> list[int]:
        return [await commit.submit(item) for item in items]

    assert await asyncio.wait_for(one_after_another([1, 2, 3]), timeout=1) == [10, 20, 30]
