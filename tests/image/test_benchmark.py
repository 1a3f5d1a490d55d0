"""The image benchmark's smoke test: it builds, measures and reports (BENCHMARKS.md has its run)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.k8s import ROOT


def test_image_benchmark_reports_size_layers_packages_and_cold_start(image, bentoml_home):
    args = ["--home", str(bentoml_home), "--repeat", "1", "--no-baseline"]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.image", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for part in ("image bentos-bench:lean:", "cold start to /readyz", "biggest layers:"):
        assert part in out, out
    assert "llvmlite" in out.split("biggest packages:")[1], out
