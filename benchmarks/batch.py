"""Batch benchmark, in one run: scikit-learn's bare `predict_proba` on the rows in memory (the
baseline), the packed forest alone on 1 and 2 threads, and the job end to end with its default
flags (process start to its `_SUCCESS` manifest) with its peak memory, on 1M and 5M rows.

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.batch [--rows 1000000 5000000]

Needs the synthetic workload's models (`bentos train --dataset synthetic`). Writes its data
under --workdir (default: a temporary folder) and prints a table; every figure is also a ratio
to the baseline's rows/s on the first --rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.servers import ROOT

ROW_GROUP = 100_000
CHUNK = 65536  # the job's default --chunk-rows: the baselines predict in the same chunks


def make_input(path: Path, rows: int, names: list[str]) -> None:
    """`rows` rows like the model's training data, jittered, one row group at a time."""
    from bentos.training.data import load_builtin

    base = load_builtin("synthetic" if names[0] == "f0" else "iris").features[names]
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, pa.Schema.from_pandas(base, preserve_index=False)) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            idx = rng.integers(0, len(base), n)
            block = base.iloc[idx].reset_index(drop=True) + rng.normal(0, 0.01, (n, base.shape[1]))
            writer.write_table(pa.Table.from_pandas(block, preserve_index=False))


def run_job(inp: Path, out: Path, env: dict[str, str], cwd: Path = ROOT) -> tuple[float, int, dict]:
    """Seconds from process start to the `_SUCCESS` manifest, peak RSS (KiB) and the summary of
    one job run with default flags in a fresh process, its code imported from `cwd`."""
    code = (
        "import atexit, runpy, sys\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent,
        # which here holds the baseline's rows in memory.
        "atexit.register(lambda: print('MAXRSS', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')), file=sys.stderr))\n"
        f"sys.argv = ['batch_predict', '--input', {str(inp)!r}, '--output', {str(out)!r}]\n"
        "runpy.run_module('jobs.batch_predict', run_name='__main__')\n"
    )
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    (success,) = out.glob("_SUCCESS-*.json")
    rss = int(
        next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("MAXRSS"))
    )
    return success.stat().st_mtime - t0, rss, json.loads(proc.stdout.strip().splitlines()[-1])


@contextmanager
def _walk_cold() -> Iterator[Path]:
    """A folder holding a copy of the job's code without any kept walk: a job run from there
    compiles the walk and keeps it in the copy (bentos.native). The checkout's own kept walk is
    left alone, so that processes starting meanwhile (other tests) still load it."""
    with tempfile.TemporaryDirectory(prefix="walk-cold-") as tmp:
        for package in ("bentos", "jobs"):
            shutil.copytree(
                ROOT / package, Path(tmp) / package, ignore=shutil.ignore_patterns("__pycache__")
            )
        yield Path(tmp)


def alternate(repeat: int, baseline: Callable[[], float], job: Callable[[], float]) -> tuple:
    """`repeat` rounds of `baseline()` then `job()` (seconds each), each round's ratio printed:
    a shared machine's speed moves from one second to the next, so the medians are the figure.
    Returns (median baseline, median job)."""
    bases, jobs = [], []
    for r in range(repeat):
        bases.append(baseline())
        jobs.append(job())
        print(f"round {r + 1}/{repeat}: baseline {bases[-1]:.2f} s, job {jobs[-1]:.2f} s: "
              f"{bases[-1] / jobs[-1]:.2f}x")  # fmt: skip
    base, wall = statistics.median(bases), statistics.median(jobs)
    print(f"medians of {repeat}: baseline {base:.2f} s, job {wall:.2f} s: {base / wall:.2f}x")
    return base, wall


def bare_predict(x: np.ndarray, runner, threads: int = 1) -> float:
    """Seconds for the model alone over rows already in memory, in the job's chunks."""
    chunks = [x[start : start + CHUNK] for start in range(0, len(x), CHUNK)]
    runner.predict_proba(chunks[0][:100])  # anything lazy happens before the clock
    t0 = time.perf_counter()
    if threads == 1:
        for chunk in chunks:
            runner.predict_proba(chunk)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(runner.predict_proba, chunks))
    return time.perf_counter() - t0


def _line(what: str, rows: int, seconds: float, base_rate: float, rss_kib: int = 0) -> None:
    rate = rows / seconds
    rss = f"{rss_kib / 1024:.0f} MiB" if rss_kib else ""
    print(f"{what:<38} {rows:>10} {seconds:>8.2f} {rate:>10.0f} {rate / base_rate:>10.2f} {rss:>9}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--model", default="rf-classifier:latest")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the baseline and the job on the first size, each round's ratio printed, "
        "then the ratio of the medians (a shared machine's speed moves from second to second)",
    )
    args = parser.parse_args()
    from bentos.batch.shard import usable_cpus
    from bentos.runners import RandomForestRunner

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bentos-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sklearn = RandomForestRunner(args.model, "sklearn")
    packed = RandomForestRunner(args.model, "packed")
    names = list(sklearn.schema.names)
    print(f"workdir {work}; model {sklearn.tag}; {usable_cpus()} usable CPUs")
    print(f"{'what':<38} {'rows':>10} {'s':>8} {'rows/s':>10} {'x baseline':>10} {'peak RSS':>9}")
    env = {**os.environ, "BENTOS_RF_MODEL": sklearn.tag}
    base_rate = 0.0
    peaks = []
    for rows in args.rows:
        inp = work / f"in-{len(names)}f-{rows}.parquet"
        if not inp.exists():
            make_input(inp, rows, names)
        if not base_rate:  # the baselines on the first size, in this process
            x = pq.read_table(inp, columns=names).to_pandas().to_numpy(dtype=np.float64)
            seconds = bare_predict(x, sklearn)
            base_rate = rows / seconds
            _line("scikit-learn predict_proba (baseline)", rows, seconds, base_rate)
            for threads in (1, 2):
                seconds = bare_predict(x, packed, threads)
                _line(f"packed forest alone, {threads} thread(s)", rows, seconds, base_rate)
            del x
        wall, rss, summary = run_job(inp, work / f"out-{rows}-{time.time_ns()}", env)
        assert summary["rows_written"] == rows, summary
        _line("job end to end, default flags", rows, wall, base_rate, rss)
        peaks.append(rss)
        if rows == args.rows[0] and args.repeat > 1:
            x = pq.read_table(inp, columns=names).to_pandas().to_numpy(dtype=np.float64)
            alternate(
                args.repeat,
                lambda: bare_predict(x, sklearn),  # noqa: B023 - called within this iteration
                lambda: run_job(inp, work / f"out-{rows}-{time.time_ns()}", env)[0],  # noqa: B023
            )
            del x
        if rows == args.rows[0]:
            # No kept walk: the compile a pod without the image's file pays (bentos.native).
            with _walk_cold() as code:
                out = work / f"out-{rows}-cold-{time.time_ns()}"
                wall, rss, _ = run_job(inp, out, env, cwd=code)
            _line("job end to end, walk compiled cold", rows, wall, base_rate, rss)
    if len(peaks) > 1:
        print(f"peak RSS {args.rows[-1]:,} / {args.rows[0]:,} rows: {peaks[-1] / peaks[0]:.2f}x")


if __name__ == "__main__":
    main()
