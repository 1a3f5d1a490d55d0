"""The edge tests' bundles (exported once a session) and devices: Debian bookworm's Python 3.11
for arm64 with numpy and ai-edge-litert's aarch64 wheels, run under qemu's user-mode emulation
(tests/edge/arm64.sh builds it, once per machine; `make test-edge` runs it as root first), and
the C++ consumer (examples/edge_predict.cpp, built by tests/edge/cpp.sh)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bentos.edge import export_edge
from bentos.training.data import load_builtin
from bentos.training.pipeline import TrainConfig, train
from tests.support import FAST
from tests.support.tables import TITANIC, Table

ROOT = Path(__file__).resolve().parents[2]
# A Raspberry Pi 4's CPU (the root's proc/cpuinfo says the same, arm64.sh): without -cpu, qemu
# emulates every arm64 extension it knows (SVE, SME), which no Pi has, and LiteRT's XNNPACK
# picks its kernels by what the CPU reports.
CPU = "cortex-a72"
Run = Callable[..., subprocess.CompletedProcess]  # a program on a device, run with ARGS


def _script(name: str, *args: str) -> str:
    """Run tests/edge/NAME with ARGS (it installs what it needs, as root); its stdout."""
    proc = subprocess.run(
        [str(ROOT / "tests" / "edge" / name), *args],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="session")
def arm64_root() -> Path:
    return Path(_script("arm64.sh").strip().splitlines()[-1])


def _qemu(root: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the arm64 program `argv[0]` on the device: qemu-aarch64-static, emulating a Pi 4's CPU,
    with the root as the prefix of every absolute path the program opens (-L), so it loads the
    root's arm64 libc and libraries."""
    return subprocess.run(
        ["qemu-aarch64-static", "-cpu", CPU, "-L", str(root), *argv],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), **env},
    )


@pytest.fixture(scope="session")
def on_arm64(arm64_root: Path) -> Run:
    """Run `python3.11 ARGS...` on the arm64 device: Debian's arm64 interpreter, its standard
    library and the aarch64 wheels."""
    python = str(arm64_root / "usr" / "bin" / "python3.11")
    env = {"PYTHONPATH": "/opt/bentos-edge/site", "PYTHONDONTWRITEBYTECODE": "1"}  # under -L
    return lambda *args: _qemu(arm64_root, [python, *args], env)


ONLY_TFLITE = {"models": ("tflite",)}
ECONOMICS = Table("ggplot2", "economics", "unemploy")  # an ISO date a row: date parts


def _table(folder: Path, table: Table, **changes: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    frame = table.frame()
    frame.to_csv(folder / "table.csv", index=False)
    config = {"data": str(folder / "table.csv"), "target": table.target, **changes}
    return config, frame.drop(columns=[table.target])


def _kind(kind: str, folder: Path) -> tuple[TrainConfig, pd.DataFrame]:
    """What each bundle of the edge tests is trained with, and the rows it is run on."""
    if kind in ("dynamic", "float16", "int8"):  # iris, in each quantization mode
        config = TrainConfig(quantize=kind, **FAST, **ONLY_TFLITE)
        return config, load_builtin("iris").features
    if kind == "titanic":  # text categories, a fifth of the ages missing
        config, rows = _table(folder, TITANIC, epochs=20)
        rows = rows.head(300).copy()
        rows.loc[rows.index[:5], "passengerClass"] = "4th"  # a class never seen in training
        return TrainConfig(**config, **ONLY_TFLITE), rows
    if kind == "diabetes":  # a regression
        return TrainConfig(dataset="diabetes", epochs=60, **ONLY_TFLITE), load_builtin(
            "diabetes"
        ).features
    if kind == "economics":  # a regression with a date column
        config, rows = _table(folder, ECONOMICS, epochs=60)
        return TrainConfig(**config, **ONLY_TFLITE), rows
    raise ValueError(kind)


@pytest.fixture(scope="session")
def edge_bundle(tmp_path_factory) -> Callable[[str], tuple[Path, Path]]:
    """`edge_bundle(kind)`: the folder `bentos export-edge` wrote for a TFLite model of `kind`
    (trained once a session) and a CSV of rows to run it on."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in made:
            folder = tmp_path_factory.mktemp(kind)
            config, rows = _kind(kind, folder)
            export_edge(folder / "bundle", train(config).tflite_tag)
            rows.to_csv(folder / "rows.csv", index=False)
            made[kind] = folder / "bundle", folder / "rows.csv"
        return made[kind]

    return get


@pytest.fixture(scope="session")
def cpp_here(tmp_path_factory) -> Run:
    """Run examples/edge_predict.cpp here with ARGS: built by tests/edge/cpp.sh (g++ and Arm NN
    20.08, its reference backend)."""
    program = tmp_path_factory.mktemp("cpp") / "edge_predict"
    _script("cpp.sh", str(program))
    return lambda *args: subprocess.run(
        [str(program), *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="session")
def cpp_on_arm64(arm64_root: Path, tmp_path_factory) -> Run:
    """Run examples/edge_predict.cpp on the arm64 device with ARGS: cross-built by
    tests/edge/cpp.sh against the root's Arm NN, which runs it on its NEON backend (CpuAcc)."""
    program = tmp_path_factory.mktemp("cpp-arm64") / "edge_predict"
    _script("cpp.sh", str(program), str(arm64_root))
    return lambda *args: _qemu(arm64_root, [str(program), *args], {})
