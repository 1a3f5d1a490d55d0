"""The forest's backends side by side, in process: time per row by call size and row mix.

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.forest

Needs the synthetic workload's models (`bentos train --dataset synthetic`). Every backend
loads the same registered forest (`packed`: bentos.forest; `sklearn`: the pickle, n_jobs=1)
and answers:

- `same`: one body sent again and again, as the online benchmark's load generator does: the
  nodes its rows visit stay in cache;
- `varied`: 4,096 different rows in calls of N rows, as real traffic sends them;
- `cold`: the same body after 64 MB of other memory was read, as after other work or other
  tenants evicted the cache;
- `chunk`: one call on 65,536 different rows (the batch job's chunk).

Prints microseconds per row (median of repeated timings) and the packed forest's ratio to
scikit-learn, measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from benchmarks.workload import sample_rows
from bentos.runners import RandomForestRunner


def _median_us(fn: Callable[[], object], repeat: int, before: Callable[[], object] | None = None):
    fn()
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="rf-classifier:latest")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--varied-rows",
        type=int,
        default=4096,
        help="rows of the 'varied' cases (a smoke run: fewer)",
    )
    args = parser.parse_args()

    runners = {b: RandomForestRunner(args.model, b) for b in ("packed", "sklearn")}
    schema = runners["packed"].schema
    varied = sample_rows(schema, args.varied_rows, seed=1).to_numpy(np.float32)
    chunk = sample_rows(schema, 65536, seed=2).to_numpy(np.float32)
    sweep = np.ones(8_000_000)  # 64 MB: more than the machine's 32 MB L3 cache

    def cases():
        for rows in (1, 64):
            body = varied[:rows]
            yield f"same {rows} row(s)", rows, lambda p, b=body: p(b), None
        for rows in (1, 8, 64, 256):
            yield (
                f"varied, calls of {rows}",
                len(varied),
                lambda p, n=rows: [p(varied[s : s + n]) for s in range(0, len(varied), n)],
                None,
            )
        for rows in (1, 64):
            body = varied[:rows]
            yield f"cold {rows} row(s)", rows, lambda p, b=body: p(b), sweep.sum
        yield "chunk of 65,536", len(chunk), lambda p: p(chunk), None

    print(f"model {runners['packed'].tag}; microseconds per row, median of {args.repeat}")
    print(f"{'case':<22} {'packed':>9} {'sklearn':>9} {'packed/sklearn':>15}")
    for name, rows, call, before in cases():
        per_row = {}
        for backend, runner in runners.items():
            repeat = args.repeat
            if backend == "sklearn" or rows >= 4096:
                repeat = max(3, args.repeat // 10)  # seconds a call: fewer repeats suffice
            us = _median_us(lambda r=runner, c=call: c(r.predict_proba), repeat, before)
            per_row[backend] = us / rows
        print(
            f"{name:<22} {per_row['packed']:>9.1f} {per_row['sklearn']:>9.1f} "
            f"{per_row['packed'] / per_row['sklearn']:>15.3f}"
        )


if __name__ == "__main__":
    main()
