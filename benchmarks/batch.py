"""Batch benchmark: the job end-to-end against the model's bare in-process predict, and the
job's peak memory for 1M versus 5M rows.

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.batch [--rows 1000000 5000000]

Needs the synthetic workload's models (`bentos train --dataset synthetic`). Writes its data
under --workdir (default: a temporary folder) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.servers import ROOT

ROW_GROUP = 100_000


def make_input(path: Path, rows: int) -> None:
    """`rows` rows like the synthetic workload, written one row group at a time."""
    from bentos.training.data import load_builtin

    base = load_builtin("synthetic").features
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, pa.Schema.from_pandas(base, preserve_index=False)) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            idx = rng.integers(0, len(base), n)
            block = base.iloc[idx].reset_index(drop=True) + rng.normal(0, 0.01, (n, base.shape[1]))
            writer.write_table(pa.Table.from_pandas(block, preserve_index=False))


def run_job(inp: Path, out: Path, chunk_rows: int, backend: str) -> tuple[float, int, dict]:
    """Wall time, peak RSS (KiB) and summary of one job run in a fresh process."""
    code = (
        "import atexit, runpy, sys\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent,
        # which here holds the 1M-row baseline in memory.
        "atexit.register(lambda: print('MAXRSS', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')), file=sys.stderr))\n"
        f"sys.argv = ['batch_predict', '--input', {str(inp)!r}, '--output', {str(out)!r}, '--chunk-rows', '{chunk_rows}', '--rf-backend', {backend!r}]\n"
        "runpy.run_module('jobs.batch_predict', run_name='__main__')\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    rss = int(
        next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("MAXRSS"))
    )
    return wall, rss, json.loads(proc.stdout.strip().splitlines()[-1])


def bare_predict(inp: Path, backend: str) -> float:
    """Seconds for the model alone over the same rows, already in memory (the baseline)."""
    from bentos.runners import RandomForestRunner

    runner = RandomForestRunner("rf-classifier:latest", backend)
    x = pq.read_table(inp).to_pandas().to_numpy(dtype=np.float64)
    t0 = time.perf_counter()
    for start in range(0, len(x), 65536):
        runner.predict_proba(x[start : start + 65536])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--chunk-rows", type=int, default=65536)
    parser.add_argument("--rf-backend", default="sklearn", help="the job's --rf-backend")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bentos-batch-bench-"))
    print(f"workdir {work}; model store {os.environ.get('BENTOML_HOME', '~/bentoml')}")
    print(
        f"{'rows':>10} {'job s':>8} {'job rows/s':>11} {'predict s':>10} {'predict rows/s':>15} {'ratio':>6} {'peak RSS MiB':>13}"
    )
    for rows in args.rows:
        inp = work / f"in-{rows}.parquet"
        if not inp.exists():
            make_input(inp, rows)
        wall, rss, summary = run_job(
            inp, work / f"out-{rows}-{time.time_ns()}", args.chunk_rows, args.rf_backend
        )
        assert summary["rows_written"] == rows, summary
        bare = bare_predict(inp, args.rf_backend) if rows <= 1_000_000 else float("nan")
        ratio = (rows / wall) / (rows / bare) if bare == bare else float("nan")
        print(
            f"{rows:>10} {wall:>8.1f} {rows / wall:>11.0f} {bare:>10.1f} "
            f"{(rows / bare if bare == bare else float('nan')):>15.0f} {ratio:>6.2f} {rss / 1024:>13.0f}"
        )


if __name__ == "__main__":
    main()
