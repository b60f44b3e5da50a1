"""The micro-batcher alone: gathering, its bounds, and a failing batch that fails only the guilty request."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from deepstrata.serve.batcher import Batcher


class Recorder:
    """A forward pass that doubles numbers, records each batch, and fails on a batch holding ``poison``."""

    def __init__(self, poison=None):
        self.batches: list[list] = []
        self.poison = poison

    def __call__(self, items, names):
        self.batches.append(list(items))
        if self.poison in items:
            raise ValueError("poisoned batch")
        return [2 * x for x in items]


def gather(batcher: Batcher, requests: list[list]) -> list:
    async def main():
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(r, [str(x) for x in r]) for r in requests),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


@pytest.fixture
def executor():
    with ThreadPoolExecutor(1) as pool:
        yield pool


def test_concurrent_requests_share_one_forward_pass_and_get_their_own_results(executor):
    forward = Recorder()
    results = gather(Batcher(forward, executor, max_batch=64, max_wait=0.2), [[1], [2, 3], [4], [5, 6, 7]])
    assert results == [[2], [4, 6], [8], [10, 12, 14]]
    assert forward.batches == [[1, 2, 3, 4, 5, 6, 7]]


def test_max_batch_bounds_a_batch_and_never_splits_a_request(executor):
    forward = Recorder()
    results = gather(Batcher(forward, executor, max_batch=3, max_wait=0.2), [[1, 2], [3, 4], [5], [6, 7, 8, 9]])
    assert results == [[2, 4], [6, 8], [10], [12, 14, 16, 18]]
    assert forward.batches == [[1, 2], [3, 4, 5], [6, 7, 8, 9]]  # the 4-item request runs alone
    assert all(len(b) <= 3 or len(b) == 4 for b in forward.batches)


def test_max_batch_one_is_one_forward_pass_per_request(executor):
    forward = Recorder()
    gather(Batcher(forward, executor, max_batch=1, max_wait=0.2), [[1], [2], [3]])
    assert forward.batches == [[1], [2], [3]]


def test_a_failing_batch_fails_only_the_request_that_causes_it(executor):
    forward = Recorder(poison=13)
    batcher = Batcher(forward, executor, max_batch=64, max_wait=0.2)
    results = gather(batcher, [[1], [13, 2], [3]])
    assert results[0] == [2] and results[2] == [6]
    assert isinstance(results[1], ValueError)
    assert forward.batches[0] == [1, 13, 2, 3] and sorted(map(tuple, forward.batches[1:])) == [(1,), (3,), (13, 2)]


def test_the_wait_is_bounded(executor):
    import time

    forward = Recorder()
    start = time.monotonic()
    assert gather(Batcher(forward, executor, max_batch=64, max_wait=0.05), [[1]]) == [[2]]
    assert time.monotonic() - start < 2


def test_stats_count_passes_and_items(executor):
    batcher = Batcher(Recorder(), executor, max_batch=64, max_wait=0.1)
    gather(batcher, [[1], [2], [3, 4]])
    assert batcher.stats.record_dict() == {"forward_passes": 1, "items": 4, "largest_batch": 4}


def test_a_lone_request_does_not_wait_and_an_announced_one_is_waited_for(executor):
    import time

    forward = Recorder()
    batcher = Batcher(forward, executor, max_batch=64, max_wait=5.0)

    async def main():
        batcher.start()
        try:
            start = time.monotonic()
            alone = await batcher.submit([1], ["1"])
            lone_seconds = time.monotonic() - start
            batcher.announce()  # a request still decoding: the next batch waits for it (bounded)

            async def late():
                await asyncio.sleep(0.1)
                batcher.withdraw()
                return await batcher.submit([3], ["3"])

            together = await asyncio.gather(batcher.submit([2], ["2"]), late())
            return alone, lone_seconds, together
        finally:
            await batcher.stop()

    alone, lone_seconds, together = asyncio.run(main())
    assert alone == [2] and lone_seconds < 1.0  # max_wait is 5 s: nobody was coming
    assert together == [[4], [6]] and forward.batches == [[1], [2, 3]]
