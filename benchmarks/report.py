"""Turn `benchmarks.online --json FILE` into the Markdown table and bar checks of BENCHMARKS.md.

.venv/bin/python -m benchmarks.report FILE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cell(table: list[dict], target: str, rows: int, clients: int) -> dict | None:
    return next(
        (r for r in table if (r["target"], r["rows"], r["clients"]) == (target, rows, clients)),
        None,
    )


def _ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    return a[key] / b[key] if a and b else None


def _get(r: dict | None, key: str) -> float | None:
    return r[key] if r else None


def main(path: str) -> None:
    data = json.loads(Path(path).read_text())
    table = data["table"]
    print(
        "| target | rows | clients | req/s | rows/s | p50 ms | p90 ms | p99 ms | errors | x Flask req/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(
        table, key=lambda r: (r["rows"], r["clients"], r["target"] != "flask", r["target"])
    ):
        print(
            f"| {r['target']} | {r['rows']} | {r['clients']} | {r['req/s']:.0f} | {r['rows/s']:.0f} | "
            f"{r['p50 ms']:.2f} | {r['p90 ms']:.2f} | {r['p99 ms']:.2f} | {r['errors']} | {r['x flask']} |"
        )
    flask1, pred1 = cell(table, "flask", 1, 16), cell(table, "predict", 1, 16)
    noop1, floor1 = cell(table, "noop", 1, 16), cell(table, "floor", 1, 16)
    flask64, pred64 = cell(table, "flask", 64, 16), cell(table, "predict", 64, 16)
    one = cell(table, "predict", 1, 1)
    bars = [
        (
            "/predict, 1 row, 16 clients: >= 2.5x Flask req/s",
            _ratio(pred1, flask1, "req/s"),
            2.5,
            "x",
        ),
        (
            "... and its p99 below Flask's p50 (ms)",
            _get(pred1, "p99 ms"),
            _get(flask1, "p50 ms"),
            "<",
        ),
        (
            "/predict >= 80% of the no-op ceiling (1 row, 16 clients)",
            _ratio(pred1, noop1, "req/s"),
            0.8,
            "x",
        ),
        (
            "/predict >= 40% of the floor, a bare ASGI app (1 row, 16 clients; goal 50%)",
            _ratio(pred1, floor1, "req/s"),
            0.4,
            "x",
        ),
        (
            "/predict, 64 rows, 16 clients: >= 5x Flask rows/s",
            _ratio(pred64, flask64, "rows/s"),
            5,
            "x",
        ),
        (
            "... and >= 15x (the floor's issue)",
            _ratio(pred64, flask64, "rows/s"),
            15,
            "x",
        ),
        ("1 client: /predict p50 <= 5 ms", _get(one, "p50 ms"), 5, "<="),
        ("errors in every cell", sum(r["errors"] for r in table), 0, "=="),
    ]
    print("\n| bar | measured | needed | met |\n|---|---:|---:|---|")
    for name, value, need, op in bars:
        if value is None or need is None:  # a cell this run did not measure
            print(f"| {name} | not measured | | |")
            continue
        met = {"x": value >= need, "<": value < need, "<=": value <= need, "==": value == need}[op]
        print(
            f"| {name} | {value:.2f} | {op if op != 'x' else '>='} {need} | {'yes' if met else 'NO'} |"
        )
    _ladder(table)
    cold = ", ".join(f"{k} {v:.1f} s" for k, v in data["cold_start_s"].items() if v)
    print(f"\nCold start (process start to ready): {cold}.")
    print(
        f"Installed size of the Bento's serving requirements: {data['serving_bytes'] / 2**20:.0f} MiB "
        f"(TensorFlow and what only it needs, not in the Bento: {data['tensorflow_bytes'] / 2**20:.0f} MiB)."
    )


# The request path's ladder, from the floor up (benchmarks.online.LADDER), and what each rung adds.
_RUNGS = {
    "floor": "a bare ASGI app under uvicorn",
    "framework": "+ BentoML's worker, app, middleware and router, the app mounted",
    "noop": "+ this project's middleware (Front), a hot route answering a constant",
    "parse": "+ the body parsed",
    "validate": "+ validated against the schema",
    "walk": "+ the forest, through the batcher",
    "predict": "+ labels, the answer's JSON, request id, prediction log, model metrics",
}


def _ladder(table: list[dict]) -> None:
    rungs = [(name, cell(table, name, 1, 16)) for name in _RUNGS]
    rungs = [(name, r) for name, r in rungs if r]
    floor = cell(table, "floor", 1, 16)
    if len(rungs) < 2 or not floor:
        return
    print("\n| rung (1 row, 16 clients) | req/s | of the floor | us a request | added |")
    print("|---|---:|---:|---:|---:|")
    before = None
    for name, r in rungs:
        # The machine's time per request: both cores, the load generator's share included.
        us = 1e6 / r["req/s"]
        added = f"{us - before:+.0f}" if before is not None else ""
        print(
            f"| {name}: {_RUNGS[name]} | {r['req/s']:.0f} | {r['req/s'] / floor['req/s']:.0%} "
            f"| {us:.0f} | {added} |"
        )
        before = us


if __name__ == "__main__":
    main(sys.argv[1])
