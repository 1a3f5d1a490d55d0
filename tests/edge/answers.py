"""What the edge example prints, read back, and the one comparison every edge test makes: the
same rows' answers from another device or program against the Python example's on x86-64."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "edge_predict.py"


def python_here(folder: Path, rows: Path) -> subprocess.CompletedProcess:
    """examples/edge_predict.py on this x86-64 machine: the reference answers."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE), str(folder), str(rows)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def tampered(folder: Path, into: Path) -> Path:
    """A copy of the bundle `folder` whose model.tflite gained a byte after it was exported."""
    copy = into / "tampered"
    shutil.copytree(folder, copy)
    with open(copy / "model.tflite", "ab") as fh:
        fh.write(b"\0")
    return copy


def messages(stderr: str) -> list[str]:
    """A program's own lines on stderr, without LiteRT's note that it made its XNNPACK delegate
    (the Python example's runtime writes it; the C++ program's has none)."""
    return [line for line in stderr.splitlines() if not line.startswith("INFO: Created TensorFlow")]


def _printed(text: str) -> tuple[list[str], list[str], np.ndarray]:
    lines = list(csv.reader(io.StringIO(text)))
    header, body = lines[0], lines[1:]
    if len(header) == 1:  # a regression: one number a row
        return header, [], np.array([[float(r[0])] for r in body])
    return header, [r[0] for r in body], np.array([[float(v) for v in r[1:]] for r in body])


def assert_same_answers(folder: Path, got: str, want: str) -> None:
    """The same header and rows; each probability within 2e-6 (int8: one step of the output's
    quantization scale; a regression's number: a millionth of the largest); a label
    differs only where the two top probabilities tie within that tolerance."""
    header, labels, values = _printed(got)
    want_header, want_labels, wanted = _printed(want)
    assert header == want_header and len(values) == len(wanted) > 0
    manifest = json.loads((folder / "model.json").read_text())
    if manifest["quantization"] == "int8":
        atol = manifest["tensors"]["outputs"][0]["quantization"]["scale"] * 1.0001
    elif manifest.get("task") == "regression":
        atol = 1e-6 * float(np.abs(wanted).max())  # about 8 float32 steps
    else:
        atol = 2e-6
    np.testing.assert_allclose(values, wanted, rtol=0, atol=atol)
    top2 = np.sort(wanted, axis=1)[:, -2:] if labels else None
    differ = [i for i, (a, b) in enumerate(zip(labels, want_labels, strict=True)) if a != b]
    assert all(top2[i, 1] - top2[i, 0] <= 2 * atol for i in differ), differ
