"""The prediction log's cost online (issue 27): `/predict` with the log off, logging every request
(sample 1.0) to a local temporary folder, and logging one request in ten (sample 0.1), in one
run, on this machine. Loopback only.

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.predlog_cost \\
        [--repeat 3] [--duration 8] [--clients 16]

Uses the store's models (`bentos train --dataset synthetic`, as benchmarks.online); when
BENTOML_HOME has none, trains the synthetic ones into a temporary store first. Round after
round, each setting in turn gets a `bentoml serve .` of its own (only the measured server is
up: idle servers are not free on two cores), loaded on `/predict` with a 1-row and then a
64-row JSON body by h2load, a closed loop of --clients clients, --duration s after 1 s of
warm-up. The settings take turns within each round (off, 1.0, 0.1, off, 1.0, 0.1, ...), so the
machine's drift falls on all of them alike. The log writes a part every --part-seconds (default
2; the service's default is 60 s): so the writing thread's work falls inside the measured
seconds, as it does under sustained traffic, rather than after the server is stopped.

Prints each run on stderr, then two markdown tables: req/s per setting (medians over the rounds)
and each one's ratio to off (with the range of the ratios round by round, off and on measured
side by side); and, per logging setting, the rows answered (`bentos_requests_total` of
`/predict`, status 200, warm-up included, times the rows per request) against the rows in the
log's Parquet parts once its servers stopped, and `bentos_prediction_log_rows_total` by outcome
(written, dropped, failed) from /metrics, scraped just before each stop, summed over the rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import loadgen
from benchmarks.servers import ROOT, Process, bentoml_serve
from benchmarks.workload import sample_rows

# Each setting's BENTOS_PREDICTION_LOG_SAMPLE; None: no log.
SETTINGS: dict[str, float | None] = {"off": None, "1.0": 1.0, "0.1": 0.1}
ROWS = (1, 64)
OUTCOMES = ("written", "dropped", "failed")
JSON = {"content-type": "application/json"}


@dataclass
class LogTally:
    """What one logging setting's servers answered and logged, over every round."""

    answered_rows: int = 0
    outcomes: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0.0))


def _models_home() -> Path | None:
    """None when the store (BENTOML_HOME) holds the models to serve; else a temporary store
    with the synthetic workload's models, trained into it now."""
    from bentos.errors import ModelError
    from bentos.models import schema_of
    from bentos.settings import ModelSettings, load

    settings = load(ModelSettings)
    try:
        schema_of(settings.rf_model), schema_of(settings.tflite_model)
        return None
    except ModelError as exc:
        print(f"{exc}: training the synthetic workload's models first", file=sys.stderr)
    home = Path(tempfile.mkdtemp(prefix="bentos-predlog-home-"))
    subprocess.run(
        [sys.executable, "-m", "bentos", "train", "--dataset", "synthetic"],
        cwd=ROOT,
        env={**os.environ, "BENTOML_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    return home


def _metrics(server: Process) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The server's /metrics (every worker's, added up), by sample name and labels."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _answered(server: Process) -> int:
    """Requests /predict answered with 200 so far, as the server counts them."""
    key = (
        "bentos_requests_total",
        (("route", "/predict"), ("status", "200"), ("transport", "http")),
    )
    return int(_metrics(server).get(key, 0.0))


def _log_outcomes(server: Process) -> dict[str, float]:
    found = _metrics(server)
    return {
        o: found.get(("bentos_prediction_log_rows_total", (("outcome", o),)), 0.0) for o in OUTCOMES
    }


def _parquet_rows(folder: Path) -> tuple[int, int, int]:
    """(rows, parts, parts left half-written) of the log in `folder`."""
    parts = sorted(folder.rglob("part-*.parquet"))
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    return rows, len(parts), len(list(folder.rglob(".part-*.tmp")))


def _env(setting: str, folder: Path, part_seconds: float) -> dict[str, str]:
    sample = SETTINGS[setting]
    if sample is None:
        return {"BENTOS_PREDICTION_LOG": ""}  # off, even if this shell's environment sets one
    return {
        "BENTOS_PREDICTION_LOG": str(folder),
        "BENTOS_PREDICTION_LOG_SAMPLE": f"{sample:g}",
        "BENTOS_PREDICTION_LOG_PART_SECONDS": f"{part_seconds:g}",
    }


def _ratio(on: list[float], off: list[float]) -> str:
    """The ratio of the medians, and the range of the rounds' own ratios."""
    rounds = [a / b for a, b in zip(on, off, strict=True)]
    whole = statistics.median(on) / statistics.median(off)
    return f"{whole:.3f} ({min(rounds):.2f}-{max(rounds):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--part-seconds", type=float, default=2.0, help="BENTOS_PREDICTION_LOG_PART_SECONDS"
    )
    args = parser.parse_args()

    trained = _models_home()
    if trained is not None:
        os.environ["BENTOML_HOME"] = str(trained)  # for the servers, and bentos.models here
    from bentos.models import get, schema_of
    from bentos.settings import ModelSettings, load

    rf_tag = load(ModelSettings).rf_model
    schema = schema_of(rf_tag)
    served = str(get(rf_tag).tag)
    bodies = {
        rows: json.dumps(
            {"instances": sample_rows(schema, rows).to_dict(orient="records")}
        ).encode()
        for rows in ROWS
    }
    work = Path(tempfile.mkdtemp(prefix="bentos-predlog-cost-"))
    folders = {setting: work / f"log-{setting}" for setting in SETTINGS}
    rps: dict[tuple[str, int], list[float]] = {}
    errors: dict[str, int] = dict.fromkeys(SETTINGS, 0)
    tally = {setting: LogTally() for setting, sample in SETTINGS.items() if sample is not None}
    try:
        for repeat in range(args.repeat):
            for setting in SETTINGS:
                server = bentoml_serve(".", _env(setting, folders[setting], args.part_seconds))
                server.wait_ready()
                try:
                    before = _answered(server)
                    for rows, body in bodies.items():
                        r = loadgen.run_h2load(
                            server.url + "/predict",
                            body,
                            headers=JSON,
                            concurrency=args.clients,
                            duration=args.duration,
                            rows=rows,
                        )
                        after = _answered(server)
                        if setting in tally:
                            tally[setting].answered_rows += (after - before) * rows
                        before = after
                        rps.setdefault((setting, rows), []).append(r.rps)
                        errors[setting] += r.errors
                        loadgen.print_run(
                            repeat, args.repeat, f"log {setting}", rows, args.clients, r
                        )
                    if setting in tally:
                        for outcome, n in _log_outcomes(server).items():
                            tally[setting].outcomes[outcome] += n
                finally:
                    server.stop()  # its workers write what their logs still hold

        cpus = os.cpu_count()
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"\nThe prediction log's cost on /predict: {served} ({len(schema.names)} features), "
            f"{args.clients} clients (h2load), {args.duration:g} s a run after 1 s of warm-up, "
            f"medians of {args.repeat} round(s); a part every {args.part_seconds:g} s; "
            f"{cpus} CPUs; {when}.\n"
        )
        print(
            "| rows/request | off req/s | sample 1.0 req/s | 1.0 / off (rounds) "
            "| sample 0.1 req/s | 0.1 / off (rounds) |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for rows in ROWS:
            off, full, tenth = (rps[(s, rows)] for s in SETTINGS)
            print(
                f"| {rows} | {statistics.median(off):,.1f} | {statistics.median(full):,.1f} "
                f"| {_ratio(full, off)} | {statistics.median(tenth):,.1f} | {_ratio(tenth, off)} |"
            )
        if any(errors.values()):
            print(f"\nErrors (requests not answered 2xx), by setting: {errors}")

        print(
            "\n| sample | rows answered | rows in the log's Parquet | logged / answered | parts "
            "| written (/metrics) | dropped | failed |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        notes = []
        for setting, t in tally.items():
            rows_logged, parts, half = _parquet_rows(folders[setting])
            share = rows_logged / t.answered_rows if t.answered_rows else float("nan")
            o = {k: int(v) for k, v in t.outcomes.items()}
            print(
                f"| {setting} | {t.answered_rows:,} | {rows_logged:,} | {share:.4f} | {parts} "
                f"| {o['written']:,} | {o['dropped']:,} | {o['failed']:,} |"
            )
            if half:
                notes.append(f"sample {setting}: {half} part(s) left half-written (.tmp)")
            if SETTINGS[setting] == 1.0:
                missing = t.answered_rows - rows_logged - o["dropped"] - o["failed"]
                if missing:
                    notes.append(
                        f"sample {setting}: {missing:,} rows answered are neither in the log nor "
                        "counted dropped or failed"
                    )
        print(
            "\nwritten, dropped, failed: bentos_prediction_log_rows_total by outcome, scraped from "
            "/metrics just before each stop (the stop writes what the log still holds, which only "
            "the Parquet count sees)."
        )
        for note in notes:
            print(f"Note: {note}.")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if trained is not None:
            shutil.rmtree(trained, ignore_errors=True)


if __name__ == "__main__":
    main()
