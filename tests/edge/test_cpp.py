"""The second consumer of the edge bundle: examples/edge_predict.cpp, C++ on Arm NN (what Arm
boards run, without Python), built here with Debian's g++ and Arm NN 20.08 (and cross-built for
the arm64 device of conftest.py, where Arm NN runs it on its NEON backend), reading the same
folder and CSV as the Python example and printing the same answers: the same labels, each
probability within 2e-6 (Arm NN's reference kernels sum in another order than LiteRT's
XNNPACK; a regression's number within a millionth of the largest), the same messages for unknown
categories and bad cells, and the same refusal of a tampered model. Arm NN 20.08's parser reads
float32 models only (the default `--quantize dynamic` of these small networks): a float16 or
int8 bundle is refused by name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.edge.answers import assert_same_answers, messages, python_here, tampered

CASES = [("cpp_here", kind) for kind in ("dynamic", "titanic", "diabetes", "economics")] + [
    ("cpp_on_arm64", kind) for kind in ("dynamic", "titanic", "economics")
]


@pytest.mark.parametrize(("device", "kind"), CASES)
def test_cpp_prints_what_the_python_example_prints_for_the_same_rows(
    device, kind, edge_bundle, request
):
    folder, rows = edge_bundle(kind)
    want = python_here(folder, rows)
    assert want.returncode == 0, want.stderr
    got = request.getfixturevalue(device)(str(folder), str(rows))
    assert got.returncode == 0, got.stderr
    # The same unknown-category counts, nothing else.
    assert messages(got.stderr) == messages(want.stderr)
    assert_same_answers(folder, got.stdout, want.stdout)


def _both_refuse(
    frame: pd.DataFrame, folder: Path, tmp_path: Path, cpp_here
) -> subprocess.CompletedProcess:
    """The C++ program's run on `frame` as a CSV, after asserting it refuses it as the Python
    example does: exit code 2, nothing printed, the same messages."""
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    want, got = python_here(folder, bad), cpp_here(str(folder), str(bad))
    assert want.returncode == got.returncode == 2
    assert got.stdout == want.stdout == ""
    assert messages(got.stderr) == messages(want.stderr)
    return got


@pytest.mark.parametrize(
    ("column", "value"),
    [("passengerClass", None), ("age", "old"), ("age", "inf")],
    ids=["a missing column", "text in a number", "an infinite number"],
)
def test_cpp_refuses_bad_input_as_the_python_example_does(
    column, value, edge_bundle, cpp_here, tmp_path
):
    folder, rows = edge_bundle("titanic")
    frame = pd.read_csv(rows, dtype=str, keep_default_na=False)
    if value is None:
        frame = frame.drop(columns=[column])
    else:
        frame.loc[3, column] = value
    _both_refuse(frame, folder, tmp_path, cpp_here)


def test_cpp_refuses_a_dates_cell_that_is_not_a_date(edge_bundle, cpp_here, tmp_path):
    folder, rows = edge_bundle("economics")
    frame = pd.read_csv(rows, dtype=str, keep_default_na=False)
    frame.loc[5, "date"] = frame.loc[5, "date"].replace("-", "/")  # 1967/12/01
    got = _both_refuse(frame, folder, tmp_path, cpp_here)
    assert "expected an ISO-8601 date" in got.stderr


def test_cpp_refuses_a_tampered_bundle(edge_bundle, cpp_here, tmp_path):
    folder, rows = edge_bundle("dynamic")
    proc = cpp_here(str(tampered(folder, tmp_path)), str(rows))
    assert proc.returncode == 4 and proc.stdout == ""
    assert "sha256 does not match model.json; refusing to run it" in proc.stderr


@pytest.mark.parametrize("mode", ["float16", "int8"])
def test_cpp_names_the_modes_arm_nn_cannot_run(mode, edge_bundle, cpp_here):
    folder, rows = edge_bundle(mode)
    proc = cpp_here(str(folder), str(rows))
    assert proc.returncode == 4 and proc.stdout == ""
    assert f"a {mode} model; Arm NN 20.08 runs float32 models only" in proc.stderr
