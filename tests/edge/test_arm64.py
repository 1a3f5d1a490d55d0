"""The edge bundle on an arm64 device: `bentos export-edge` here, `examples/edge_predict.py` run
by Debian bookworm's arm64 Python under qemu (conftest.py), its answers against the same
example's on this x86-64 machine for the same rows, in every quantization mode and on a real
table with categories and missing values.

Tolerance: the labels are equal, and each printed probability within 2e-6 of x86-64's (int8:
within one step of the output's quantization scale; a regression's number within a millionth
of the largest, about 8 float32 steps: the network's standardized output differs in its last
bit and is multiplied by the target's spread). Seen on 2026-12-06: at most 1e-6 (one printed digit) for the
float, dynamic and float16 models, 0 for int8, one float32 step (3.05e-5 near 300) for the
diabetes regressor. LiteRT's kernels for arm64 (NEON) and
x86-64 (SSE/AVX) add in another order and fuse multiply-adds differently, so a float32 result
may differ in its last bits; the example prints 6 decimals. An int8 model's arithmetic is in
integers, but its requantization rounds through float32 multipliers per platform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.edge.answers import EXAMPLE, assert_same_answers, python_here, tampered


@pytest.fixture(params=["dynamic", "float16", "int8", "titanic", "diabetes", "economics"])
def bundle(request, edge_bundle) -> tuple[str, Path, Path]:
    return (request.param, *edge_bundle(request.param))


def test_the_device_is_arm64_with_the_locked_wheels(on_arm64):
    proc = on_arm64(
        "-c",
        "import platform, numpy, ai_edge_litert.interpreter as i; "
        "print(platform.machine(), numpy.__version__, i.__file__)",
    )
    assert proc.returncode == 0, proc.stderr
    machine, numpy_version, where = proc.stdout.split()
    assert machine == "aarch64"
    assert numpy_version == np.__version__  # the lock's, as on the server
    assert where.startswith("/opt/bentos-edge/site/")


def test_arm64_prints_what_x86_64_prints_for_the_same_rows(bundle, on_arm64):
    _, folder, rows = bundle
    here = python_here(folder, rows)
    assert here.returncode == 0, here.stderr
    there = on_arm64(str(EXAMPLE), str(folder), str(rows))
    assert there.returncode == 0, there.stderr
    assert there.stderr == here.stderr  # the same unknown-category counts, nothing else
    assert_same_answers(folder, there.stdout, here.stdout)


def test_arm64_refuses_a_tampered_bundle(edge_bundle, on_arm64, tmp_path):
    folder, rows = edge_bundle("dynamic")
    proc = on_arm64(str(EXAMPLE), str(tampered(folder, tmp_path)), str(rows))
    assert proc.returncode == 4
    assert "sha256 does not match model.json; refusing to run it" in proc.stderr
