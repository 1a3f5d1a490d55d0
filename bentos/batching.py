"""Adaptive batching in the worker's own event loop, one batcher per model.

Requests that arrive while the model is busy are merged into its next call (up to
`max_batch_size` rows), so under load one call serves many requests; when the model is idle a
request goes straight in, so batching adds no latency at one client. Nothing waits on a timer.
A request that has queued longer than `max_latency_ms` is refused (Overloaded, a 503): under
overload, failing fast beats a queue that grows until every client times out.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
import numpy as np


class Overloaded(RuntimeError):
    """The model's queue is too long for this request to be served in time."""


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
        # microseconds (ONNX Runtime, TFLite) the hop to a worker thread cost more than the
        # model (BENCHMARKS.md). Slower models (scikit-learn's forest) always get a thread.
        self.inline_rows = inline_rows
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self._queue: collections.deque[_Job] = collections.deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only weak references
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # rows per call

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self._busy and len(x) <= self.inline_rows:
            # Idle, and fast enough to run right here: no queue, task or future to pay for.
            self.batch_sizes[len(x)] += 1
            return self._fn(x)
        loop = asyncio.get_running_loop()
        job = _Job(x, loop.create_future(), loop.time())
        self._queue.append(job)
        if not self._busy:
            self._busy = True
            self._task = loop.create_task(self._drain())
        return await job.future

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
                x = batch[0].x if len(batch) == 1 else np.concatenate([j.x for j in batch])
                self.batch_sizes[len(x)] += 1
                try:
                    if len(x) <= self.inline_rows:
                        out = self._fn(x)
                    else:
                        out = await anyio.to_thread.run_sync(self._fn, x)
                except Exception as exc:  # handed to every waiting request, not lost
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                start = 0
                for job in batch:
                    end = start + len(job.x)
                    if not job.future.done():
                        job.future.set_result(out[start:end])
                    start = end
        finally:
            self._busy = False
