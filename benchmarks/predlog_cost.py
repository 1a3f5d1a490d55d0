"""The prediction log's cost online (issue 27): `/predict` with the log off, logging every request
(sample 1.0) to a local temporary folder, logging one request in ten (sample 0.1), and with the
log off again (the control: its ratio to off is the measure's own noise), in one run, on this
machine. Loopback only.

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.predlog_cost \\
        [--repeat 3] [--duration 8] [--clients 16]

Uses the store's models (`bentos train --dataset synthetic`, as benchmarks.online); when
BENTOML_HOME has none, trains the synthetic ones into a temporary store first. Round after
round, each setting in turn gets a `bentoml serve .` of its own (only the measured server is
up: idle servers are not free on two cores), loaded on `/predict` with a 1-row and then a
64-row JSON body by h2load, a closed loop of --clients clients, --duration s after 1 s of
warm-up. The settings take turns within each round, each round starting one setting further on
(off, 1.0, 0.1, off again; 1.0, 0.1, off again, off; ...), so the machine's drift and the place
in a round fall on all of them alike. The log writes a part every --part-seconds (default
2; the service's default is 60 s), and each run is followed by that long and 2 s more, so that
the writing thread's work on a run's rows falls inside that run, as it does under sustained
traffic, rather than in the next run or after the server is stopped.

Prints each run on stderr (with the server's CPU per request and each worker's share of it),
then four markdown tables: req/s per setting (h2load's; medians over the rounds) and each
one's ratio to off, with the range of the ratios round by round; the same for the server's CPU
per request (all its processes and threads, the log's writing of the run's rows included), which
does not depend on how the connections spread over the two workers, as req/s does; per logging
setting, the log's writing threads' CPU per request (its own metric,
`bentos_prediction_log_writer_cpu_seconds_total`) and its share of the server's CPU per request,
a direct measure that the servers' run-to-run spread does not move; and, per logging setting, the rows answered (`bentos_requests_total` of `/predict`, status 200, warm-up
included, times the rows per request) against the rows in the log's Parquet parts once its
servers stopped, with `bentos_prediction_log_rows_total` by outcome (written, dropped, failed)
from /metrics, scraped just before each stop, summed over the rounds. At sample 1.0 every row
answered must be in the log, dropped or failed (a request whose client left before its answer,
499, may be in the log too); a note says so when they do not add up.
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
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import loadgen
from benchmarks.servers import ROOT, Process, bentoml_serve
from benchmarks.workload import sample_rows

# Each setting's BENTOS_PREDICTION_LOG_SAMPLE; None: no log. "off again" is the control: a second
# server with the log off, whose ratio to "off" is the noise of the measure itself.
SETTINGS: dict[str, float | None] = {"off": None, "1.0": 1.0, "0.1": 0.1, "off again": None}
ROWS = (1, 64)
OUTCOMES = ("written", "dropped", "failed")
JSON = {"content-type": "application/json"}


@dataclass
class LogTally:
    """What one logging setting's servers answered and logged, over every round."""

    answered_rows: int = 0  # status 200
    gone_rows: int = 0  # 499: the client left before its answer (the log may hold them)
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


def _predict_requests(server: Process) -> tuple[int, int]:
    """Requests to /predict so far, as the server counts them: (answered with 200, left by
    their client before the answer, 499). A stopped h2load leaves requests in flight, which end
    after it: counted once two looks a quarter of a second apart agree."""

    def look() -> tuple[int, int]:
        found = _metrics(server)

        def count(status: str) -> int:
            labels = (("route", "/predict"), ("status", status), ("transport", "http"))
            return int(found.get(("bentos_requests_total", labels), 0.0))

        return count("200"), count("499")

    last = look()
    for _ in range(40):
        time.sleep(0.25)
        now = look()
        if now == last:
            return now
        last = now
    raise RuntimeError(f"{server.url}/predict still answering requests 10 s after its run")


def _log_outcomes(server: Process) -> dict[str, float]:
    found = _metrics(server)
    return {
        o: found.get(("bentos_prediction_log_rows_total", (("outcome", o),)), 0.0) for o in OUTCOMES
    }


def _writer_cpu(server: Process) -> float:
    """The log's writing threads' CPU seconds so far (every worker's)."""
    return _metrics(server).get(("bentos_prediction_log_writer_cpu_seconds_total", ()), 0.0)


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


def _cpu_seconds(server: Process) -> dict[int, float]:
    """CPU seconds (user and system, every thread) of the server's processes so far, by pid:
    `bentoml serve` and its workers, whose prediction logs' threads are theirs."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for pid in (server.proc.pid, *server.children()):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        found[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return found


@dataclass
class Cell:
    """One run's figures: h2load's req/s and the server's CPU per request."""

    rps: float
    cpu_ms: float  # per request, the log's writes of the run's rows included
    shares: list[float]  # each worker's part of the workers' CPU
    writer_ms: float  # per request, the log's writing threads' CPU (as the server counts it)


def _run(
    server: Process,
    rows: int,
    body: bytes,
    args: argparse.Namespace,
    tally: LogTally | None,
    hangs: list[str],
) -> tuple[loadgen.Result, Cell]:
    """Load /predict with `body`, then wait for the log to write the run's rows (a part is due
    --part-seconds after its first row, looked at every second): the server's CPU from the
    start to then, over the requests it answered or saw left (the warm-up's included).

    h2load before nghttp2 1.64 may not end a duration run when the server closes connections
    (nghttp2/nghttp2#2249), as SpreadConnections does every 100 responses: seen here with the
    last answer sent, unread in h2load's socket, and the server idle. loadgen gives up on it
    after a minute, and the run is made again (its requests still count for the log's rows)."""
    for _ in range(3):
        before, cpu0 = _predict_requests(server), _cpu_seconds(server)
        writer0 = _writer_cpu(server)
        r: loadgen.Result | None
        try:
            r = loadgen.run_h2load(
                server.url + "/predict",
                body,
                headers=JSON,
                concurrency=args.clients,
                duration=args.duration,
                rows=rows,
            )
        except subprocess.TimeoutExpired:
            r = None
            hangs.append(f"{rows} row(s)")
            print("h2load did not end its run (nghttp2/nghttp2#2249): again", file=sys.stderr)
        time.sleep(args.part_seconds + 2)
        after = _predict_requests(server)
        writer = _writer_cpu(server) - writer0
        spent = {pid: t - cpu0.get(pid, 0.0) for pid, t in _cpu_seconds(server).items()}
        if tally is not None:
            tally.answered_rows += (after[0] - before[0]) * rows
            tally.gone_rows += (after[1] - before[1]) * rows
        if r is not None:
            requests = (after[0] - before[0]) + (after[1] - before[1])
            workers = [t for pid, t in spent.items() if pid != server.proc.pid]
            shares = [t / sum(workers) for t in workers] if sum(workers) else []
            per = 1000 / max(requests, 1)
            return r, Cell(r.rps, sum(spent.values()) * per, shares, writer * per)
    raise RuntimeError(f"h2load did not end three runs in a row against {server.url}")


def _table(title: str, unit: str, cells: dict[tuple[str, int], list[float]], fmt: str) -> None:
    others = [s for s in SETTINGS if s != "off"]
    print(
        f"| rows/request | off {unit} | "
        + " | ".join(f"{s} {unit} | {s} / off (rounds)" for s in others)
        + " |"
    )
    print("|---:|---:|" + "---:|---:|" * len(others))
    for rows in ROWS:
        off = cells[("off", rows)]
        m = statistics.median
        print(
            f"| {rows} | {m(off):{fmt}} | "
            + " | ".join(
                f"{m(cells[(s, rows)]):{fmt}} | {_ratio(cells[(s, rows)], off)}" for s in others
            )
            + " |"
        )
    print(f"\n{title}\n")


def _writer_table(cells: dict[tuple[str, int], list[Cell]]) -> None:
    """The log's own cost, measured where it is spent: its writing threads' CPU per request
    (bentos_prediction_log_writer_cpu_seconds_total), against the server's CPU per request in
    the same runs. Unlike the ratios above, it does not move with how fast a server happened to
    be (see the control, "off again")."""
    print("| sample | rows/request | writer CPU us/request | share of the server's CPU (rounds) |")
    print("|---:|---:|---:|---:|")
    for setting, sample in SETTINGS.items():
        if sample is None:
            continue
        for rows in ROWS:
            runs = cells[(setting, rows)]
            shares = [c.writer_ms / c.cpu_ms for c in runs if c.cpu_ms]
            print(
                f"| {setting} | {rows} | {statistics.median(c.writer_ms for c in runs) * 1000:.1f} "
                f"| {statistics.median(shares):.1%} ({min(shares):.1%}-{max(shares):.1%}) |"
            )
    print(
        "\nThe writing threads' CPU per request (the request path's own part is an append to a "
        "buffer), and its share of the server's CPU per request in the same run.\n"
    )


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
    cells: dict[tuple[str, int], list[Cell]] = {}
    errors: dict[str, int] = dict.fromkeys(SETTINGS, 0)
    hangs: list[str] = []
    tally = {setting: LogTally() for setting, sample in SETTINGS.items() if sample is not None}
    try:
        order = list(SETTINGS)
        for repeat in range(args.repeat):
            # Each round starts one setting further on: no setting always runs first.
            for setting in order[repeat % len(order) :] + order[: repeat % len(order)]:
                server = bentoml_serve(".", _env(setting, folders[setting], args.part_seconds))
                server.wait_ready()
                try:
                    for rows, body in bodies.items():
                        r, cell = _run(server, rows, body, args, tally.get(setting), hangs)
                        cells.setdefault((setting, rows), []).append(cell)
                        errors[setting] += r.errors
                        loadgen.print_run(
                            repeat, args.repeat, f"log {setting}", rows, args.clients, r
                        )
                        shares = "/".join(f"{s:.0%}" for s in cell.shares)
                        print(
                            f"    server CPU {cell.cpu_ms:.3f} ms a request; workers' shares "
                            f"{shares}",
                            file=sys.stderr,
                        )
                    if setting in tally:
                        for outcome, n in _log_outcomes(server).items():
                            tally[setting].outcomes[outcome] += n
                finally:
                    server.stop()  # its workers write what their logs still hold

        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"\nThe prediction log's cost on /predict: {served} ({len(schema.names)} features), "
            f"{args.clients} clients (h2load), {args.duration:g} s a run after 1 s of warm-up, "
            f"medians of {args.repeat} round(s); a part every {args.part_seconds:g} s; "
            f"{os.cpu_count()} CPUs; {when}.\n"
        )
        _table(
            "req/s: h2load's, the measured seconds. (rounds): the lowest and highest ratio of a "
            "round's own runs.",
            "req/s",
            {k: [c.rps for c in v] for k, v in cells.items()},
            ",.1f",
        )
        _table(
            "CPU ms/request: the server's processes' CPU (user and system, every thread) from a "
            "run's start until the log has written its rows, over the requests of the run "
            "(warm-up included); higher is costlier, whichever worker the connections landed on.",
            "CPU ms/request",
            {k: [c.cpu_ms for c in v] for k, v in cells.items()},
            ".3f",
        )
        _writer_table(cells)
        if hangs:
            print(
                f"h2load did not end {len(hangs)} run(s) and they were made again "
                f"({', '.join(hangs)}; nghttp2/nghttp2#2249).\n"
            )
        if any(errors.values()):
            print(f"Errors (requests not answered 2xx), by setting: {errors}\n")

        print(
            "| sample | rows answered | rows in the log's Parquet | logged / answered | parts "
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
            if t.gone_rows:
                notes.append(
                    f"sample {setting}: besides, {t.gone_rows:,} rows of requests whose client "
                    "left before the answer (499), which the log may hold"
                )
            if SETTINGS[setting] == 1.0:
                accounted = rows_logged + o["dropped"] + o["failed"]
                if not t.answered_rows <= accounted <= t.answered_rows + t.gone_rows:
                    notes.append(
                        f"sample {setting}: the log holds, dropped or failed {accounted:,} rows, "
                        f"not the {t.answered_rows:,} answered (+ up to {t.gone_rows:,} left)"
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
