"""Process tuning for the serving processes (the HTTP workers and the gRPC server)."""

from __future__ import annotations

import gc


def tune_gc(gen0_threshold: int) -> None:
    """Collect rarely, and never again walk what start-up allocated.

    Every request leaves short-lived cyclic garbage (ASGI scopes, tasks, frames). With Python's
    default threshold the collector runs so often that its full collections, each walking the
    hundreds of thousands of objects BentoML and its imports hold, stall requests at the 99th
    percentile. Freezing start-up's objects and raising the first threshold removed those
    stalls with throughput unchanged (BENCHMARKS.md, "Choices": garbage collector); garbage is
    still collected, in fewer, cheaper passes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, 20, 100)
