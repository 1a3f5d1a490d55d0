"""The prediction log in the batch job, and the drift check on what it logged, at scale: the
mixed table of benchmarks/mixed.py (carData's TitanicSurvival: text categories, missing ages),
trained by `bentos train`, N rows scored by the batch job end to end with the log off and with
every row logged (rounds interleaved), then `bentos monitor` timed on the N logged rows.

    .venv/bin/python -m benchmarks.monitor_scale [--rows 1000000] [--repeat 2]

Prints the job's seconds (process start to exit) with and without the log (and their ratio), the log's size on disk,
and the drift check's seconds, process start to exit, with its summary's verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.batch import ROW_GROUP
from benchmarks.mixed import W, _rows, _table
from benchmarks.servers import ROOT


def _train(home: Path) -> None:
    table = home / "table.csv"
    _table().to_csv(table, index=False)
    subprocess.run(
        [sys.executable, "-m", "bentos", "train", "--data", str(table), "--target", W.target],
        cwd=ROOT,
        env={**os.environ, "BENTOML_HOME": str(home)},
        check=True,
        capture_output=True,
    )


def _input(work: Path, rows: int) -> Path:
    inp = work / "in.parquet"
    frame = _rows(_table(), rows, seed=2).drop(columns=[W.target])
    with pq.ParquetWriter(inp, pa.Schema.from_pandas(frame, preserve_index=False)) as writer:
        for start in range(0, len(frame), ROW_GROUP):
            part = frame.iloc[start : start + ROW_GROUP]
            writer.write_table(pa.Table.from_pandas(part, preserve_index=False))
    return inp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bentos-monitor-scale-"))
    home = work / "home"
    home.mkdir()
    _train(home)
    inp = _input(work, args.rows)
    env = {**os.environ, "BENTOML_HOME": str(home)}
    walls: dict[str, list[float]] = {"off": [], "on": []}
    log = work / "log"
    for r in range(args.repeat):
        for mode in ("off", "on"):
            out = work / f"out-{mode}-{r}"
            extra = {}
            if mode == "on":
                log = work / f"log-{r}"
                extra = {"BENTOS_PREDICTION_LOG": str(log), "BENTOS_PREDICTION_LOG_SAMPLE": "1"}
            # To the process's exit, not its _SUCCESS: the log's last part is written after it.
            t0 = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "jobs.batch_predict",
                    "--input",
                    str(inp),
                    "--output",
                    str(out),
                ],
                cwd=ROOT,
                env={**env, **extra},
                capture_output=True,
                text=True,
                check=True,
            )
            walls[mode].append(time.perf_counter() - t0)
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
            assert summary["rows_written"] == args.rows, summary
    logged = sum(pq.read_metadata(p).num_rows for p in log.rglob("part-*.parquet"))
    size = sum(p.stat().st_size for p in log.rglob("part-*.parquet"))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.monitor", "--log", str(log), "--since", "1d"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    monitor_s = time.perf_counter() - t0
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    off, on = statistics.median(walls["off"]), statistics.median(walls["on"])
    print("| rows | job, log off | job, every row logged | x | log on disk | drift check |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.rows:,} | {off:.2f} s | {on:.2f} s | {on / off:.2f} | "
        f"{logged:,} rows, {size / 2**20:.1f} MiB | {monitor_s:.2f} s (exit {proc.returncode}, "
        f"drifted: {summary.get('drifted')}) |"
    )


if __name__ == "__main__":
    main()
