"""The arm64 device of the edge tests: Debian bookworm's Python 3.11 for arm64 with numpy and
ai-edge-litert's aarch64 wheels, run under qemu's user-mode emulation (tests/edge/arm64.sh
builds it, once per machine; `make test-edge` runs it as root first)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bentos.edge import export_edge
from bentos.training.data import load_builtin
from bentos.training.pipeline import TrainConfig, train
from tests.support import FAST

ROOT = Path(__file__).resolve().parents[2]
# A Raspberry Pi 4's CPU (the root's proc/cpuinfo says the same, arm64.sh): without -cpu, qemu
# emulates every arm64 extension it knows (SVE, SME), which no Pi has, and LiteRT's XNNPACK
# picks its kernels by what the CPU reports.
CPU = "cortex-a72"


@pytest.fixture(scope="session")
def arm64_root() -> Path:
    proc = subprocess.run(
        [str(ROOT / "tests" / "edge" / "arm64.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def on_arm64(arm64_root: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run `python3.11 ARGS...` on the arm64 device: the interpreter is Debian's arm64 binary,
    started by qemu-aarch64-static, emulating a Pi 4's CPU, with the root as the prefix of every absolute path it opens
    (-L), so it loads the root's arm64 libc and standard library and the aarch64 wheels."""
    python = arm64_root / "usr" / "bin" / "python3.11"

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": "/opt/bentos-edge/site",  # under the root, through -L
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": os.environ.get("HOME", "/root"),
        }
        return subprocess.run(
            ["qemu-aarch64-static", "-cpu", CPU, "-L", str(arm64_root), str(python), *args],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=cwd,
        )

    return run


def bundle_of(tmp_path_factory, config: TrainConfig, rows) -> tuple[Path, Path]:
    """The exported folder of a TFLite model trained with `config`, and a CSV of `rows`."""
    folder = tmp_path_factory.mktemp("edge")
    result = train(config)
    export_edge(folder / "bundle", result.tflite_tag)
    rows.to_csv(folder / "rows.csv", index=False)
    return folder / "bundle", folder / "rows.csv"


ONLY_TFLITE = {"models": ("tflite",)}


@pytest.fixture(scope="session")
def dynamic_bundle(tmp_path_factory) -> tuple[str, Path, Path]:
    config = TrainConfig(quantize="dynamic", **FAST, **ONLY_TFLITE)
    return ("dynamic", *bundle_of(tmp_path_factory, config, load_builtin("iris").features))
