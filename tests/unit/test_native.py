"""bentos.native: the walk's machine code, kept in a folder once and loaded by later processes
without numba; a file cut short or made elsewhere is compiled anew, and a folder that cannot be
written keeps nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor

from bentos import native
from bentos.forest import _LANES, PackedForest, _walk_into
from bentos.native import _compile
from bentos.training.packing import pack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kept(tmp_path_factory) -> Path:
    """A folder holding the walk compiled by this process."""
    folder = tmp_path_factory.mktemp("walk")
    native.load(_walk_into, folder, _LANES)
    return folder


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def test_the_walk_is_kept_as_an_object_file_and_the_sha256_its_json_records(kept):
    meta, code = _files(kept)
    assert code.suffix == ".o" and meta.suffix == ".json" and code.stem == meta.stem
    recorded = json.loads(meta.read_text())
    assert recorded["sha256"] == native.hashlib.sha256(code.read_bytes()).hexdigest()
    assert recorded["name"] and "numba_gil_ensure" in recorded["undefined"]


def test_a_kept_walk_is_loaded_without_compiling(kept, monkeypatch):
    def refuse(*args):
        raise AssertionError("compiled although a kept walk was there")

    monkeypatch.setattr(native, "_compile", refuse)
    native.load(_walk_into, kept, _LANES)


def test_a_file_cut_short_is_compiled_anew_and_replaced(kept, tmp_path, monkeypatch):
    for f in _files(kept):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    meta, code = _files(tmp_path)
    short = code.read_bytes()[: code.stat().st_size // 2]
    code.write_bytes(short)
    compiled = []
    monkeypatch.setattr(native, "_compile", lambda *a: compiled.append(1) or _compile(*a))
    native.load(_walk_into, tmp_path, _LANES)
    assert compiled and code.read_bytes() != short
    assert (
        json.loads(meta.read_text())["sha256"]
        == native.hashlib.sha256(code.read_bytes()).hexdigest()
    )
    native.load(_walk_into, tmp_path, _LANES)  # the new file is whole: loaded, not compiled
    assert len(compiled) == 1


def test_a_folder_that_cannot_be_written_keeps_nothing_and_the_walk_still_runs(tmp_path):
    # A file where the folder should be: no user, root included, can create it.
    (tmp_path / "file").write_text("")
    walk = native.load(_walk_into, tmp_path / "file" / "cache", _LANES)
    assert callable(walk) and _files(tmp_path) == [tmp_path / "file"]


def test_a_new_process_loads_the_kept_walk_without_numba_and_answers_scikit_learn_s_numbers(
    tmp_path,
):
    """As a batch job or a server worker starts: bentos.forest loads the file kept next to it
    (this test session's first import made it), and numba is never imported."""
    x, y = load_diabetes(return_X_y=True)
    x = x.copy()
    x[::4, 2] = np.nan
    forest = RandomForestRegressor(n_estimators=20, random_state=0).fit(x, y)
    (tmp_path / "forest.npz").write_bytes(pack(forest).to_bytes())
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np\n"
        "from bentos.forest import PackedForest\n"
        f"f = PackedForest.from_bytes(open({str(tmp_path / 'forest.npz')!r}, 'rb').read())\n"
        f"np.save({str(tmp_path / 'got.npy')!r}, f.predict_regression(np.load({str(tmp_path / 'x.npy')!r})))\n"
        "print('numba' in sys.modules, 'scipy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"], out
    got = np.load(tmp_path / "got.npy")
    np.testing.assert_allclose(got[:, 0], forest.predict(x), rtol=2e-7, atol=0)
    assert PackedForest.from_bytes(pack(forest).to_bytes()).predict_regression(x).tolist() == (
        got.tolist()
    )
