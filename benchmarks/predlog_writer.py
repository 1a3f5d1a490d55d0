"""The prediction log's writer thread, in process (issue 27): what one request costs it to build
its part's Arrow table (`bentos.monitoring.predlog._table`) and to write that table to Parquet,
for rows handed over as dicts (gRPC, V2, the batch job: each row written as JSON text) and as a
JSON API body (kept as received), with the body compressed as Parquet's default (Snappy) and as
the log writes it (uncompressed). Best of --repeat, one part of --part-rows rows of 20 random
features.

    .venv/bin/python -m benchmarks.predlog_writer [--part-rows 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np
import orjson
import pyarrow.parquet as pq

from bentos.monitoring import predlog


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(rows_per_request: int, part_rows: int, repeat: int) -> dict[str, float]:
    """Microseconds per request: table and write, per form."""
    rng = np.random.default_rng(0)
    n_requests = max(1, part_rows // rows_per_request)
    as_rows, as_body = [], []
    for i in range(n_requests):
        values = rng.normal(size=(rows_per_request, 20)).round(4)
        rows = [{f"f{j}": float(v) for j, v in enumerate(row)} for row in values]
        proba = np.full((rows_per_request, 3), 1 / 3, dtype=np.float32)
        answers = ["a"] * rows_per_request
        as_rows.append((f"r{i}", time.time(), "m:1", rows, answers, proba))
        body = orjson.dumps({"instances": rows})
        as_body.append((f"r{i}", time.time(), "m:1", body, answers, proba))
    per = 1e6 / n_requests
    rows_table = predlog._table(as_rows, "http")
    body_table = predlog._table(as_body, "http")
    own = {"compression": predlog._COMPRESSION, "write_statistics": predlog._STATISTICS}
    return {
        "rows: table": _best(lambda: predlog._table(as_rows, "http"), repeat) * per,
        "rows: write": _best(lambda: pq.write_table(rows_table, io.BytesIO(), **own), repeat) * per,
        "body: table": _best(lambda: predlog._table(as_body, "http"), repeat) * per,
        "body: write, Snappy": _best(lambda: pq.write_table(body_table, io.BytesIO()), repeat)
        * per,
        "body: write, as logged": _best(
            lambda: pq.write_table(body_table, io.BytesIO(), **own), repeat
        )
        * per,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part-rows", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    results = {n: measure(n, args.part_rows, args.repeat) for n in (1, 64)}
    names = list(results[1])
    print("| rows/request | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for n, r in results.items():
        print(f"| {n} | " + " | ".join(f"{r[k]:.1f} us" for k in names) + " |")


if __name__ == "__main__":
    main()
