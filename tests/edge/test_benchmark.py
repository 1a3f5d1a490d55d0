"""benchmarks.edge's measurement of an exported bundle (docs/edge.md's memory and latency
columns), run briefly so the harness keeps working; its figures are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_edge_benchmark_measures_memory_and_latency_of_an_exported_bundle(edge_bundle):
    folder, rows = edge_bundle("dynamic")
    probe = ["--probe", str(folder), str(rows)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.edge", "--calls", "50", *probe],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout)
    assert set(measured) == {
        "runtime_kib",
        "first_kib",
        "interpreter_kib",
        "peak_kib",
        "row_us_median",
        "row_us_p99",
        "batch_row_us",
    }
    assert measured["peak_kib"] >= measured["runtime_kib"] > 0
    assert 0 < measured["row_us_median"] <= measured["row_us_p99"]
    assert measured["batch_row_us"] > 0
