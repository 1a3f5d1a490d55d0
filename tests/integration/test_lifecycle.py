"""Periodic evaluation and promotion, as the retrain CronJob runs it, against a registry in a
folder (the image tests use an S3 server): a first challenger becomes the champion, a worse one
(trained on noisy labels, judged on clean ones) does not, promote and rollback by hand, and
`bentos models pull` checks what it imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.servers import ROOT
from bentos.training.data import load_builtin


def _iris(path: Path, noise: float = 0.0, seed: int = 0) -> Path:
    ds = load_builtin("iris")
    target = ds.target.to_numpy().copy()
    rng = np.random.default_rng(seed)
    flip = rng.random(len(target)) < noise
    target[flip] = rng.choice(np.unique(target), flip.sum())
    ds.features.assign(species=target).to_csv(path, index=False)
    return path


def _run(module: list[str], home: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *module, *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "BENTOML_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _retrain(home: Path, *args) -> tuple[int, list[dict]]:
    return _run_retrain(home, "--target", "species", *args)


def _run_retrain(home: Path, *args) -> tuple[int, list[dict]]:
    proc = _run(["jobs.retrain"], home, *args)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events


def _decision(events: list[dict], model: str = "rf-classifier") -> dict:
    (decision,) = [e for e in events if e["event"] == "decision" and e["model"] == model]
    return decision


@pytest.fixture
def registry(tmp_path) -> Path:
    return tmp_path / "registry"


def test_the_champion_changes_only_for_a_challenger_at_least_as_good(tmp_path, registry):
    clean = _iris(tmp_path / "clean.csv")
    noisy = _iris(tmp_path / "noisy.csv", noise=0.5, seed=3)

    code, events = _retrain(
        tmp_path / "pod1", "--data", clean, "--models", "rf", "--registry", registry
    )
    assert code == 0, events
    first = _decision(events)
    assert first["promoted"] and first["why"] == "no champion yet" and first["champion"] is None
    version = first["challenger"]["version"]
    pointer = json.loads((registry / "rf-classifier" / "champion.json").read_text())
    assert pointer["version"] == version and len(pointer["sha256"]) == 64
    assert (registry / "rf-classifier" / f"{version}.bentomodel").is_file()
    report = json.loads((registry / "rf-classifier" / f"{version}.report.json").read_text())
    assert (
        report["promoted"]
        and "<table>" in (registry / "rf-classifier" / f"{version}.report.html").read_text()
    )

    # Worse: trained on noisy labels (its own gate lowered so that it passes), judged on clean.
    code, events = _retrain(
        tmp_path / "pod2", "--data", noisy, "--models", "rf", "--registry", registry,
        "--eval-data", clean, "--min-accuracy", "0.2",
    )  # fmt: skip
    assert code == 0, events  # a decision not to promote is a success
    worse = _decision(events)
    assert not worse["promoted"], worse
    assert worse["champion"]["version"] == version
    assert worse["challenger"]["metrics"]["f1_macro"] < worse["champion"]["metrics"]["f1_macro"]
    assert (
        json.loads((registry / "rf-classifier" / "champion.json").read_text())["version"] == version
    )
    assert (registry / "rf-classifier" / f"{worse['challenger']['version']}.bentomodel").is_file()

    # By hand: promote the worse one, then roll back to the first.
    home = tmp_path / "ops"
    proc = _run(
        ["bentos", "models", "promote"],
        home,
        "--registry",
        registry,
        "rf-classifier",
        worse["challenger"]["version"],
    )
    assert proc.returncode == 0, proc.stderr
    proc = _run(
        ["bentos", "models", "rollback"], home, "--registry", registry, "rf-classifier", version
    )
    assert proc.returncode == 0, proc.stderr
    pointer = json.loads((registry / "rf-classifier" / "champion.json").read_text())
    assert pointer["version"] == version and pointer["reason"].startswith("rollback from")
    proc = _run(
        ["bentos", "models", "rollback"], home, "--registry", registry, "rf-classifier", "nope"
    )
    assert proc.returncode == 2 and "was never the champion" in proc.stderr


def test_pull_imports_each_champion_and_refuses_a_changed_archive(tmp_path, registry):
    clean = _iris(tmp_path / "clean.csv")
    code, events = _retrain(tmp_path / "pod", "--data", clean, "--registry", registry)
    assert code == 0, events
    versions = {e["model"]: e["challenger"]["version"] for e in events if e["event"] == "decision"}
    assert set(versions) == {"rf-classifier", "tflite-classifier"}
    # Keras' epochs as progress lines, the last one at the last epoch.
    epochs = [e for e in events if e["event"] == "progress" and "Keras" in e["step"]]
    assert epochs and epochs[-1]["done"] == epochs[-1]["total"] and "loss" in epochs[-1]

    store = tmp_path / "store"
    proc = _run(["bentos", "models", "pull"], store, "--registry", registry)
    assert proc.returncode == 0, proc.stderr
    for name, version in versions.items():
        assert (store / "models" / name / version).is_dir()

    edge = tmp_path / "edge"
    proc = _run(
        ["bentos", "export-edge"], tmp_path / "edge-store", "--registry", registry, "--out", edge
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((edge / "model.json").read_text())["version"] == versions["tflite-classifier"]

    archive = registry / "rf-classifier" / f"{versions['rf-classifier']}.bentomodel"
    archive.write_bytes(archive.read_bytes() + b"\0")
    proc = _run(["bentos", "models", "pull"], tmp_path / "store2", "--registry", registry)
    assert proc.returncode == 4, proc.stderr
    assert "refusing to import it" in " ".join(proc.stderr.split())


def test_a_challenger_with_other_columns_is_promoted_only_when_allowed(tmp_path, registry):
    clean = _iris(tmp_path / "clean.csv")
    code, events = _retrain(
        tmp_path / "pod1", "--data", clean, "--models", "rf", "--registry", registry
    )
    assert code == 0 and _decision(events)["promoted"], events
    champion = _decision(events)["challenger"]["version"]
    # The same table with a text column more: a client of the champion would not send it.
    wider = tmp_path / "wider.csv"
    frame = pd.read_csv(clean)
    frame.insert(0, "colour", np.where(np.arange(len(frame)) % 2, "red", "blue"))
    frame.to_csv(wider, index=False)

    code, events = _retrain(
        tmp_path / "pod2", "--data", wider, "--models", "rf", "--registry", registry
    )
    assert code == 0, events
    refused = _decision(events)
    assert not refused["promoted"]
    assert refused["why"].startswith(
        "schema differs from the champion's: column 'colour' added; clients send the champion's "
        "schema, so it is promoted only with --allow-schema-change"
    )
    assert (
        json.loads((registry / "rf-classifier" / "champion.json").read_text())["version"]
        == champion
    )

    code, events = _retrain(
        tmp_path / "pod3", "--data", wider, "--models", "rf", "--registry", registry,
        "--allow-schema-change",
    )  # fmt: skip
    assert code == 0, events
    allowed = _decision(events)
    assert allowed["promoted"], allowed
    assert "column 'colour' added (allowed by --allow-schema-change)" in allowed["why"]


def test_a_real_table_with_categories_and_missing_values_goes_through_the_lifecycle(
    tmp_path, registry
):
    from tests.support.tables import TITANIC

    table = tmp_path / "titanic.csv"
    TITANIC.frame().to_csv(table, index=False)
    args = ["--data", table, "--target", TITANIC.target, "--models", "rf", "--registry", registry]
    code, events = _run_retrain(tmp_path / "pod1", *args)
    assert code == 0, events
    first = _decision(events)
    assert first["promoted"]
    # Judged on the held-out rows, a fifth of them without an age: none refused.
    assert first["challenger"]["metrics"]["rows_refused"] == 0
    assert first["challenger"]["metrics"]["rows"] == 262
    code, events = _run_retrain(tmp_path / "pod2", *args)
    assert code == 0, events
    second = _decision(events)
    assert second["champion"]["version"] == first["challenger"]["version"]
    assert "schema differs" not in second["why"]  # the same columns, the same kinds
