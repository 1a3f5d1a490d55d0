"""Scheduled retraining, as the CronJob runs it: `python -m jobs.retrain`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import bentoml
import pytest

from benchmarks.servers import ROOT
from bentos.training.data import load_builtin


@pytest.fixture
def iris_csv(tmp_path):
    ds = load_builtin("iris")
    path = tmp_path / "iris.csv"
    ds.features.assign(species=ds.target).to_csv(path, index=False)
    return path


@pytest.fixture
def no_tensorflow(tmp_path) -> dict[str, str]:
    """The Bento image's situation: TensorFlow cannot be imported."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "tensorflow.py").write_text("raise ImportError('No module named tensorflow')\n")
    return {**os.environ, "PYTHONPATH": str(blocker)}


def retrain(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.retrain", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _tags(name: str) -> set[str]:
    return {str(m.tag) for m in bentoml.models.list(name)}


def test_retrain_without_tensorflow_registers_and_exports_the_forest(
    trained, iris_csv, tmp_path, no_tensorflow
):
    before_rf, before_tfl = _tags("rf-classifier"), _tags("tflite-classifier")
    env = {
        **no_tensorflow,
        "BENTOS_RETRAIN_DATA": str(iris_csv),
        "BENTOS_RETRAIN_TARGET": "species",
    }
    proc = retrain(env, "--models", "rf", "--export-to", tmp_path / "exported")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (new,) = _tags("rf-classifier") - before_rf
    assert _tags("tflite-classifier") == before_tfl
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    (registered,) = [e for e in events if e["event"] == "registered"]
    assert registered["models"] == [new]
    # Training's steps, each started and done, before the registration.
    steps = [(e["step"], e["status"]) for e in events if e["event"] == "step"]
    assert steps[0] == ("Loading data", "started") and steps[1] == ("Loading data", "done")
    assert ("Registering models", "done") in steps
    # The run's figures (bentos.jobmetrics) in its last line, the summary.
    summary = events[-1]
    assert summary["event"] == "summary" and summary["process"] == "retrain"
    assert summary["metrics"]["rows"] == {"read": 150}
    assert summary["metrics"]["models"] == {"rf-classifier": new.split(":")[1]}
    assert summary["metrics"]["success"] is True
    archive = tmp_path / "exported" / f"{new.replace(':', '-')}.bentomodel"
    assert archive.is_file() and archive.stat().st_size > 0
    # The archive is a model BentoML can import elsewhere, with its metadata intact.
    from bentoml._internal.models.model import ModelStore

    imported = bentoml.models.import_model(
        str(archive), _model_store=ModelStore(tmp_path / "other")
    )
    assert imported.info.metadata["training_data"]["source"] == str(iris_csv)


def test_retrain_of_tflite_without_tensorflow_is_a_clear_usage_error(
    trained, iris_csv, no_tensorflow
):
    proc = retrain(
        no_tensorflow, "--data", iris_csv, "--target", "species", "--models", "rf,tflite"
    )
    assert proc.returncode == 2
    assert "needs TensorFlow" in proc.stdout and "nothing was registered" in proc.stdout


def test_retrain_registers_nothing_when_a_gate_fails(trained, iris_csv):
    before = _tags("rf-classifier") | _tags("tflite-classifier")
    proc = retrain(
        dict(os.environ), "--data", iris_csv, "--target", "species", "--min-accuracy", "0.999"
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "nothing was registered" in proc.stdout
    assert _tags("rf-classifier") | _tags("tflite-classifier") == before
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["event"] == "summary" and summary["status"] == "failed"
    assert summary["exit_code"] == 3 and summary["metrics"]["success"] is False
    assert "last_success_timestamp_seconds" not in summary["metrics"]


def test_retrain_needs_data_and_target(trained):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENTOS_RETRAIN")}
    proc = retrain(env)
    assert proc.returncode == 2
    assert "--data and --target are required" in proc.stdout
