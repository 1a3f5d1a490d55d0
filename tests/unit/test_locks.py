"""The locks: one resolution (uv.lock) of pyproject.toml's direct requirements, exported to the
files .venv and the images install; the venv this suite runs in holds exactly that.

None of these asks the package index: they hold whatever it publishes tomorrow."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import locks

UV = [sys.executable, "-m", "uv"]
PYPROJECT = tomllib.loads((locks.ROOT / "pyproject.toml").read_text())


def _uv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*UV, *args], cwd=locks.ROOT, capture_output=True, text=True, timeout=120)


def _body(text: str) -> str:
    """A lock without its header (the command that wrote it names its output file)."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def test_uv_lock_is_the_resolution_of_pyproject_s_requirements():
    proc = _uv("lock", "--check", "--offline")
    assert proc.returncode == 0, proc.stderr


# Each exported lock -> the `uv export` options that write it (Makefile, `lock`).
EXPORTS = {
    locks.TESTED: ["--all-extras"],
    locks.IMAGE_LOCKS["tabular-classifier"]: [],
    locks.IMAGE_LOCKS["tabular-classifier-train"]: ["--extra", "train"],
}


@pytest.mark.parametrize("lock", sorted(EXPORTS), ids=lambda p: p.name)
def test_each_lock_file_is_the_export_of_uv_lock(lock: Path, tmp_path):
    out = tmp_path / lock.name
    proc = _uv("export", "--quiet", "--frozen", "--no-emit-project", *EXPORTS[lock], "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert _body(lock.read_text()) == _body(out.read_text()), f"run `make lock`: {lock.name}"


@pytest.mark.parametrize("lock", [*EXPORTS, locks.TOOLS], ids=lambda p: p.name)
def test_every_lock_pins_every_package_with_its_hashes(lock: Path):
    pins = locks.read(lock.read_text())
    assert pins
    assert [name for name, pin in pins.items() if not pin.hashes] == []


def test_the_image_locks_hold_the_tested_versions_and_serving_has_no_training_packages():
    tested = locks.read(locks.TESTED.read_text(), locks.IMAGE_PYTHON)
    serving, train = (
        locks.read(path.read_text(), locks.IMAGE_PYTHON) for path in locks.IMAGE_LOCKS.values()
    )
    assert serving.items() <= train.items() <= tested.items()
    assert not {"tensorflow", "keras", "matplotlib", "pytest"} & set(serving)
    assert {"tensorflow", "keras", "kubernetes", "matplotlib"} <= set(train)


def test_the_tools_lock_satisfies_requirements_tools_in():
    pins = locks.read(locks.TOOLS.read_text())
    for line in (locks.ROOT / "requirements-tools.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            assert req.specifier.contains(pins[canonicalize_name(req.name)].version), line


def test_every_python_the_lock_covers_is_one_the_makefile_accepts():
    assert PYPROJECT["project"]["requires-python"] == ">=3.11,<3.14"
    assert 'requires-python = ">=3.11, <3.14"' in (locks.ROOT / "uv.lock").read_text()
    makefile = (locks.ROOT / "Makefile").read_text()
    assert "SUPPORTED := 3.11 3.12 3.13\n" in makefile


def test_this_venv_holds_exactly_the_tested_lock_and_pip_check_passes():
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in md.distributions()
        if canonicalize_name(d.metadata["Name"])
        not in {"bentos", "pip"}  # this checkout, and the venv's own
    }
    assert installed == locks.versions(locks.read(locks.TESTED.read_text()))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
