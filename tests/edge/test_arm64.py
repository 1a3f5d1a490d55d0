"""The edge bundle on an arm64 device: `bentos export-edge` here, `examples/edge_predict.py` run
by Debian bookworm's arm64 Python under qemu (conftest.py), its answers against the same
example's on this x86-64 machine for the same rows, in every quantization mode and on a real
table with categories and missing values.

Tolerance: the labels are equal, and each printed probability within 2e-6 of x86-64's (int8:
within one step of the output's quantization scale; a regression's number within two float32
steps at its largest value). Seen on 2026-12-06: at most 1e-6 (one printed digit) for the
float, dynamic and float16 models, 0 for int8, one float32 step (3.05e-5 near 300) for the
diabetes regressor. LiteRT's kernels for arm64 (NEON) and
x86-64 (SSE/AVX) add in another order and fuse multiply-adds differently, so a float32 result
may differ in its last bits; the example prints 6 decimals. An int8 model's arithmetic is in
integers, but its requantization rounds through float32 multipliers per platform."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bentos.training.data import load_builtin
from bentos.training.pipeline import TrainConfig
from tests.edge.conftest import ONLY_TFLITE, bundle_of
from tests.support import FAST
from tests.support.tables import TITANIC

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "edge_predict.py"


@pytest.fixture(scope="module", params=["dynamic", "float16", "int8", "titanic", "diabetes"])
def bundle(request, tmp_path_factory) -> tuple[str, Path, Path]:
    kind = request.param
    if kind == "dynamic":
        return request.getfixturevalue("dynamic_bundle")
    if kind == "titanic":
        frame = TITANIC.frame()
        folder = tmp_path_factory.mktemp("titanic")
        frame.to_csv(folder / "table.csv", index=False)
        config = TrainConfig(
            data=str(folder / "table.csv"), target=TITANIC.target, epochs=20, **ONLY_TFLITE
        )
        rows = frame.drop(columns=[TITANIC.target]).head(300).copy()
        rows.loc[rows.index[:5], "passengerClass"] = "4th"  # a class never seen in training
    elif kind == "diabetes":
        config = TrainConfig(dataset="diabetes", epochs=60, **ONLY_TFLITE)
        rows = load_builtin("diabetes").features
    else:
        config = TrainConfig(quantize=kind, **FAST, **ONLY_TFLITE)
        rows = load_builtin("iris").features
    return (kind, *bundle_of(tmp_path_factory, config, rows))


def _printed(text: str) -> tuple[list[str], list[str], np.ndarray]:
    lines = list(csv.reader(io.StringIO(text)))
    header, body = lines[0], lines[1:]
    if len(header) == 1:  # a regression: one number a row
        return header, [], np.array([[float(r[0])] for r in body])
    return header, [r[0] for r in body], np.array([[float(v) for v in r[1:]] for r in body])


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
    kind, folder, rows = bundle
    here = subprocess.run(
        [sys.executable, str(EXAMPLE), str(folder), str(rows)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert here.returncode == 0, here.stderr
    there = on_arm64(str(EXAMPLE), str(folder), str(rows))
    assert there.returncode == 0, there.stderr
    assert there.stderr == here.stderr  # the same unknown-category counts, nothing else
    header, labels, values = _printed(there.stdout)
    want_header, want_labels, want = _printed(here.stdout)
    assert header == want_header and len(values) == len(want) > 0
    if kind == "int8":
        out = json.loads((folder / "model.json").read_text())["tensors"]["outputs"][0]
        atol = out["quantization"]["scale"] * 1.0001
    elif kind == "diabetes":
        # A number in the target's units: two float32 steps at the largest (one was seen).
        atol = 2 * float(np.spacing(np.float32(np.abs(want).max()))) + 1e-6
    else:
        atol = 2e-6
    np.testing.assert_allclose(values, want, rtol=0, atol=atol)
    if labels:
        # A label may differ only where the two top probabilities tie within the tolerance.
        top2 = np.sort(want, axis=1)[:, -2:]
        differ = [i for i, (a, b) in enumerate(zip(labels, want_labels, strict=True)) if a != b]
        assert all(top2[i, 1] - top2[i, 0] <= 2 * atol for i in differ), differ


def test_arm64_refuses_a_tampered_bundle(dynamic_bundle, on_arm64, tmp_path):
    _, folder, rows = dynamic_bundle

    copy = tmp_path / "tampered"
    shutil.copytree(folder, copy)
    with open(copy / "model.tflite", "ab") as fh:
        fh.write(b"\0")
    proc = on_arm64(str(EXAMPLE), str(copy), str(rows))
    assert proc.returncode != 0
    assert "sha256 does not match model.json; refusing to run it" in proc.stderr
