"""The HTTP worker's deadlines: a request's body must arrive in time (else a 408), and, where
bentos.serving.middleware.Front serves a request ahead of BentoML's own layers, its answer must
start in time (else a 504, as BentoML's TimeoutMiddleware would answer).

One timer per worker looks at every deadline while there are any (`Deadlines._sweep`), each met
within a tenth of its timeout or half a second, and cancels the task of a request past its own.
Why not a timer per request: asyncio.timeout per request, and BentoML's task and timer per
request, were a measurable share of a one-row prediction (BENCHMARKS.md, "The floor").
"""

from __future__ import annotations

import asyncio
import math
import time


class Deadline:
    """When its request's task is cancelled, and the status the request then gets."""

    __slots__ = ("at", "code", "expired", "status")

    def __init__(self, at: float, code: int):
        self.at, self.code, self.expired = at, code, False
        self.status = 0  # the answer's, once it starts

    def disarm(self, status: int) -> None:
        """The answer starts, with `status`: nothing cancels it from here on (a stream, say,
        sends from tasks of its own)."""
        self.at = math.inf
        self.status = status


class Deadlines:
    """The deadlines of one worker's requests, by task."""

    def __init__(self, tick: float):
        self._tick = max(tick, 0.01)
        self._by_task: dict[asyncio.Task, Deadline] = {}
        self._sweeping: asyncio.AbstractEventLoop | None = None  # the loop the timer is on

    def arm(self, task: asyncio.Task, seconds: float, code: int) -> Deadline:
        """A deadline `seconds` from now (math.inf: none yet) for `task`, answered `code`."""
        deadline = self._by_task[task] = Deadline(time.monotonic() + seconds, code)
        loop = asyncio.get_running_loop()
        if self._sweeping is not loop:  # none yet, or on a loop that has ended (tests)
            self._sweeping = loop
            loop.call_later(self._tick, self._sweep, loop)
        return deadline

    def drop(self, task: asyncio.Task) -> None:
        del self._by_task[task]

    def __len__(self) -> int:
        return len(self._by_task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        for task, deadline in self._by_task.items():
            if deadline.at <= now and not deadline.expired and task.get_loop() is loop:
                deadline.expired = True
                task.cancel()
        if self._by_task and self._sweeping is loop:
            loop.call_later(self._tick, self._sweep, loop)
        elif self._sweeping is loop:
            self._sweeping = None
