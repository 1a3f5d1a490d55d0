"""The prediction log's writer thread, in process (issue 27): what one request costs it to build
its part's Arrow table (`bentos.monitoring.predlog._table`) and to write that table to Parquet,
for rows handed over as dicts (gRPC, V2, the batch job: each row written as JSON text) and as a
JSON API body (kept as received), with the body uncompressed and as the log writes it (zstd,
level 1), to a file; and the part's bytes per request. Best of --repeat, one part of --part-rows
rows of 20 random features, its pages warm: in a server under load the writer pays more for each
byte written (`benchmarks.predlog_cost` measures its CPU there).

    .venv/bin/python -m benchmarks.predlog_writer [--part-rows 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np
import orjson
import pyarrow as pa
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
    own = {
        "compression": predlog._COMPRESSION,
        "compression_level": predlog._COMPRESSION_LEVEL,
        "write_statistics": predlog._STATISTICS,
        "use_dictionary": predlog._DICTIONARY,
    }
    plain = {**own, "compression": {**predlog._COMPRESSION, "body": "none"}}
    plain.pop("compression_level")
    with tempfile.TemporaryDirectory() as folder:
        # To a file, as the log writes a part: the bytes' way out costs too.
        def write(table: pa.Table, options: dict) -> Callable[[], object]:
            return lambda: pq.write_table(table, f"{folder}/part.parquet", **options)

        def size(table: pa.Table, options: dict) -> float:
            write(table, options)()
            return os.path.getsize(f"{folder}/part.parquet") / n_requests

        return {
            "rows: table": _best(lambda: predlog._table(as_rows, "http"), repeat) * per,
            "rows: write": _best(write(rows_table, own), repeat) * per,
            "body: table": _best(lambda: predlog._table(as_body, "http"), repeat) * per,
            "body: write, uncompressed": _best(write(body_table, plain), repeat) * per,
            "body: write, as logged": _best(write(body_table, own), repeat) * per,
            "bytes, uncompressed": size(body_table, plain),
            "bytes, as logged": size(body_table, own),
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
        cells = [f"{r[k]:,.0f}" if k.startswith("bytes") else f"{r[k]:.1f} us" for k in names]
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
