"""Adaptive batching in the worker's own event loop, one batcher per model.

Requests for a fast model (the packed forest, TFLite: microseconds a row) that
reach the batcher in the same turn of the event loop share one call, run in the loop itself:
under load a turn brings several requests (one per socket that had data), and at one client a
request waits for nothing but the end of its own turn. Requests for a slow model, or too large to run in the
loop, queue while the model is busy in a worker thread and are merged into its next call (up to
`max_batch_size` rows). Nothing waits on a timer. A request that has queued longer than
`max_latency_ms` is refused (Overloaded, a 503): under overload, failing fast beats a queue
that grows until every client times out.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
import numpy as np

from bentos.errors import ClientError


class Overloaded(ClientError):
    """The model's queue is too long for this request to be served in time (a 503)."""

    def __init__(self, message: str):
        super().__init__(503, f"overloaded, retry later: {message}")


@dataclass
class _Job:
    x: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float


class Batcher:
    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_latency_ms: int,
        inline_rows: int = 0,
    ):
        self._fn = fn
        # Batches up to this many rows run in the event loop itself: for models that answer in
        # microseconds (the packed forest, TFLite) the hop to a worker thread cost more than the
        # model (BENCHMARKS.md). Slower models (scikit-learn's forest) always get a thread.
        self.inline_rows = inline_rows
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self._queue: collections.deque[_Job] = collections.deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only weak references
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # rows per call
        self._turn: list[_Job] = []  # small requests waiting for the end of this loop turn

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if not self._busy and len(x) <= self.inline_rows:
            # One call for every request of this turn, made once the turn's other ready tasks
            # (other sockets' requests) have had their chance to join: the model's fixed cost
            # per call and a cold cache are paid once per turn, not once per request.
            job = _Job(x, loop.create_future(), 0.0)
            self._turn.append(job)
            if len(self._turn) == 1:
                loop.call_soon(self._run_turn)
            return await job.future
        job = _Job(x, loop.create_future(), loop.time())
        self._queue.append(job)
        if not self._busy:
            self._busy = True
            self._task = loop.create_task(self._drain())
        return await job.future

    def _run_turn(self) -> None:
        jobs = [job for job in self._turn if not job.future.done()]  # not the cancelled
        self._turn = []
        while jobs:
            # A request is never split; requests beyond max_batch_size rows get calls of their own.
            rows, n = len(jobs[0].x), 1
            while n < len(jobs) and rows + len(jobs[n].x) <= self.max_batch_size:
                rows += len(jobs[n].x)
                n += 1
            batch, jobs = jobs[:n], jobs[n:]
            x = _concat(batch)
            self.batch_sizes[len(x)] += 1
            try:
                out = self._fn(x)
            except Exception as exc:  # handed to every request of the call, not lost
                _settle(batch, exc)
            else:
                _settle(batch, out)

    def _take(self, now: float) -> list[_Job]:
        batch: list[_Job] = []
        rows = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # the client went away
                self._queue.popleft()
                continue
            if now - job.enqueued > self.max_latency:
                self._queue.popleft()
                job.future.set_exception(
                    Overloaded(f"request queued {now - job.enqueued:.1f}s behind a busy model")
                )
                continue
            # A request is never split, and one larger than a batch still runs, alone.
            if batch and rows + len(job.x) > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            rows += len(job.x)
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._take(loop.time())
                if not batch:
                    continue
                x = _concat(batch)
                self.batch_sizes[len(x)] += 1
                try:
                    if len(x) <= self.inline_rows:
                        out = self._fn(x)
                    else:
                        out = await anyio.to_thread.run_sync(self._fn, x)
                except Exception as exc:  # handed to every waiting request, not lost
                    _settle(batch, exc)
                else:
                    _settle(batch, out)
        finally:
            self._busy = False


def _concat(batch: list[_Job]) -> np.ndarray:
    return batch[0].x if len(batch) == 1 else np.concatenate([job.x for job in batch])


def _settle(batch: list[_Job], result: np.ndarray | Exception) -> None:
    """Each request of a call gets its own rows of the output, or the call's exception."""
    start = 0
    for job in batch:
        end = start + len(job.x)
        if not job.future.done():
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result[start:end])
        start = end
