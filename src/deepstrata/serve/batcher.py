"""Micro-batching: the inputs of concurrent requests gathered into one forward pass.

A model on a CPU answers 64 inputs in little more time than one, so a server that runs
each request alone wastes most of its throughput under load. ``Batcher.submit`` queues a
request's inputs (already decoded: a bad input has failed its own request before it gets
here) and waits; one collector task takes the first waiting request, gathers more for at
most ``max_wait`` seconds or until ``max_batch`` inputs, and runs ``forward`` on all of
them in one call on the model's thread, then hands each request its own slice back. A
request is never split across batches; one larger than ``max_batch`` runs alone.

It waits only for requests that are coming: a route ``announce`` s a request before decoding
it and ``withdraw`` s it once decoded (or failed). With nothing queued and nothing announced
the batch runs at once — a lone client pays no ``max_wait`` — and under load the requests
that arrive while a batch runs form the next one.

``forward`` runs off the event loop, on an executor with one thread: the model is used by
one batch at a time (torch's intra-op threads parallelise inside it), and the loop keeps
accepting and decoding requests meanwhile. If a gathered batch fails anyway, each of its
requests is run again alone, so that only the one that causes the failure gets it.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class _Waiting:
    items: list
    names: list
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the batcher has done: forward passes, inputs, and the largest batch — for /info and the tests."""

    forward_passes: int = 0
    items: int = 0
    largest: int = 0

    def record(self, size: int) -> None:
        self.forward_passes += 1
        self.items += size
        self.largest = max(self.largest, size)

    def record_dict(self) -> dict:
        return {"forward_passes": self.forward_passes, "items": self.items, "largest_batch": self.largest}


class Batcher:
    """Gathers ``submit`` calls into ``forward(items, names) -> results`` calls of at most ``max_batch`` items.

    ``max_batch`` 1 turns batching off (each request is one forward pass); ``max_wait`` (seconds) bounds how
    long the first request of a batch waits for company. Start with ``start()`` inside the running loop.
    """

    def __init__(self, forward: Callable[[list, list], list], executor: Executor, *, max_batch: int,
                 max_wait: float) -> None:
        self.forward = forward
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._announced = 0

    def announce(self) -> None:
        """A request is on its way (being decoded): a batch that is gathering may wait for it."""
        self._announced += 1

    def withdraw(self) -> None:
        """The request announced is decoded (``submit`` follows at once) or failed."""
        self._announced -= 1

    def start(self) -> None:
        """Start collecting on the running loop (again, if an app's host moved it to another loop)."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._task = self._loop.create_task(self._collect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(self, items: list, names: list) -> list:
        """The results of ``items`` (in order), computed with whatever other requests arrive meanwhile."""
        if self._loop is not asyncio.get_running_loop() or self._task is None or self._task.done():
            self.start()  # not started by a lifespan (an in-process test client), or on another loop
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(items, names, future))
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        carried: _Waiting | None = None
        while True:
            first = carried or await self._queue.get()
            carried = None
            batch, size = [first], len(first.items)
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch:
                left = deadline - time.monotonic()
                if self._queue.empty() and self._announced <= 0:
                    break  # nobody else is coming: waiting would only add latency
                try:
                    nxt = self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if size + len(nxt.items) > self.max_batch:
                    carried = nxt  # it opens the next batch: a request is never split
                    break
                batch.append(nxt)
                size += len(nxt.items)
            await self._run(loop, batch)

    async def _run(self, loop, batch: list[_Waiting]) -> None:
        batch = [w for w in batch if not w.future.done()]  # a client that went away needs no answer
        if not batch:
            return
        items = [x for w in batch for x in w.items]
        names = [n for w in batch for n in w.names]
        try:
            results = await loop.run_in_executor(self.executor, self._forward, items, names)
        except Exception as exc:  # the batch failed: find the request that did it by running each alone
            if len(batch) == 1:
                _settle(batch[0].future, exc=exc)
                return
            for waiting in batch:
                await self._run(loop, [waiting])
            return
        start = 0
        for waiting in batch:
            _settle(waiting.future, result=results[start:start + len(waiting.items)])
            start += len(waiting.items)

    def _forward(self, items: list, names: list) -> list:
        results = self.forward(items, names)
        self.stats.record(len(items))
        if len(results) != len(items):
            raise RuntimeError(f"forward returned {len(results)} results for {len(items)} inputs")
        return list(results)


def _settle(future: asyncio.Future, *, result: Any = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
