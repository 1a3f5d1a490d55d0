"""The in-process adaptive batcher (bentos.serving.batching), with real threads and an event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from bentos.serving.batching import Batcher, Overloaded


def _slow_model(calls: list[int], seconds: float = 0.05):
    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        time.sleep(seconds)
        return x * 2

    return predict


def test_requests_arriving_while_the_model_is_busy_share_its_next_call():
    calls: list[int] = []
    batcher = Batcher(_slow_model(calls), max_batch_size=100, max_latency_ms=5000)

    async def main():
        xs = [np.full((1, 2), i, dtype=float) for i in range(9)]
        return await asyncio.gather(*(batcher(x) for x in xs))

    results = asyncio.run(main())
    assert [r.tolist() for r in results] == [[[2 * i, 2 * i]] for i in range(9)]
    assert sum(calls) == 9 and len(calls) < 9  # concurrent requests were merged


def test_batches_respect_max_batch_size_and_never_split_a_request():
    calls: list[int] = []
    batcher = Batcher(_slow_model(calls), max_batch_size=4, max_latency_ms=5000)

    async def main():
        sizes = [1, 3, 3, 2, 6, 1]
        return await asyncio.gather(*(batcher(np.ones((n, 1))) for n in sizes))

    results = asyncio.run(main())
    assert [len(r) for r in results] == [1, 3, 3, 2, 6, 1]
    assert all(c <= 4 for c in calls if c != 6) and 6 in calls  # a big request runs alone


def test_a_model_error_reaches_every_request_of_its_batch():
    def broken(x: np.ndarray) -> np.ndarray:
        time.sleep(0.02)
        raise RuntimeError("model failed")

    batcher = Batcher(broken, max_batch_size=10, max_latency_ms=5000)

    async def main():
        return await asyncio.gather(
            *(batcher(np.ones((1, 1))) for _ in range(4)), return_exceptions=True
        )

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


def test_requests_queued_past_max_latency_are_refused_as_overloaded():
    calls: list[int] = []
    batcher = Batcher(_slow_model(calls, 0.3), max_batch_size=1, max_latency_ms=100)

    async def main():
        return await asyncio.gather(
            *(batcher(np.ones((1, 1))) for _ in range(4)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert not isinstance(results[0], Exception)
    assert any(isinstance(r, Overloaded) for r in results[1:])


def test_fast_models_run_inline_without_a_thread():
    threads: set[int] = set()

    def fast(x: np.ndarray) -> np.ndarray:
        threads.add(threading.get_ident())
        return x

    batcher = Batcher(fast, max_batch_size=10, max_latency_ms=1000, inline_rows=8)

    async def main():
        await batcher(np.ones((2, 1)))
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads == {loop_thread}


@pytest.mark.parametrize("rows", [1, 5])
def test_a_lone_request_goes_straight_to_the_model(rows):
    calls: list[int] = []
    batcher = Batcher(_slow_model(calls, 0.0), max_batch_size=10, max_latency_ms=1000)
    asyncio.run(batcher(np.ones((rows, 1))))
    assert calls == [rows]  # no batching window: nothing waited for company


def _fast_model(calls: list[int], threads: set[int] | None = None):
    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if threads is not None:
            threads.add(threading.get_ident())
        return x * 2

    return predict


def test_small_requests_of_one_loop_turn_share_one_call_in_the_loop():
    calls: list[int] = []
    threads: set[int] = set()
    batcher = Batcher(
        _fast_model(calls, threads), max_batch_size=100, max_latency_ms=1000, inline_rows=8
    )

    async def main():
        xs = [np.full((1, 2), i, dtype=float) for i in range(5)]
        return await asyncio.gather(*(batcher(x) for x in xs)), threading.get_ident()

    results, loop_thread = asyncio.run(main())
    assert [r.tolist() for r in results] == [[[2 * i, 2 * i]] for i in range(5)]
    assert calls == [5] and threads == {loop_thread}


def test_a_turn_is_cut_into_calls_of_at_most_max_batch_size_rows():
    calls: list[int] = []
    batcher = Batcher(_fast_model(calls), max_batch_size=7, max_latency_ms=1000, inline_rows=8)

    async def main():
        return await asyncio.gather(*(batcher(np.full((3, 1), i)) for i in range(5)))

    results = asyncio.run(main())
    assert [r[:, 0].tolist() for r in results] == [[2 * i] * 3 for i in range(5)]
    assert calls == [6, 6, 3]


def test_a_model_error_reaches_every_request_of_its_turn():
    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("model failed")

    batcher = Batcher(broken, max_batch_size=10, max_latency_ms=1000, inline_rows=8)

    async def main():
        return await asyncio.gather(
            *(batcher(np.ones((1, 1))) for _ in range(3)), return_exceptions=True
        )

    assert [str(r) for r in asyncio.run(main())] == ["model failed"] * 3
