"""The journeys a newcomer takes from the README, where each once went wrong: a rollback that
changed nothing locally, a traceback where exit 4 was promised, a client that answered what curl
refused, a failed batch shard's untrue manifest, a store that could not be listed, the edge
example's raw ValueError, and TensorFlow's CUDA lines on every CPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bentoml
import pytest

from bentos import models
from bentos.cli import main
from bentos.registry import Registry
from bentos.runners import RandomForestRunner
from bentos.training.data import load_builtin
from bentos.training.pipeline import TrainConfig, train
from tests.support.strategies import ROW

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def unpinned(bentoml_home):
    """The session's store without pins before and after: other tests open `:latest`."""
    (bentoml_home / models.CHAMPIONS_FILE).unlink(missing_ok=True)
    yield
    (bentoml_home / models.CHAMPIONS_FILE).unlink(missing_ok=True)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bentos", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_pulled_rollback_is_what_local_processes_open(trained, tmp_path, unpinned, capsys):
    newer = train(TrainConfig(models=("rf",), n_estimators=5)).rf_tag
    url = str(tmp_path / "registry")
    registry = Registry(url)
    for tag in (trained.rf_tag, newer):
        registry.push(tag, {"accuracy": 0.9})
        registry.set_champion("rf-classifier", tag.split(":")[1], "test")
    # `models list` prints name:version; rollback takes it as printed.
    assert main(["models", "rollback", "--registry", url, trained.rf_tag]) == 0
    assert RandomForestRunner("rf-classifier:latest").tag == newer  # the newest, until a pull
    assert main(["models", "pull", "--registry", url]) == 0
    runner = RandomForestRunner("rf-classifier:latest")
    assert runner.tag == trained.rf_tag
    assert runner.selected["by"] == "champion" and runner.selected["registry"] == url
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert f"* {trained.rf_tag}  created " in listed and f"  {newer}  created " in listed


def _newest_rf_tag() -> str:
    """The store's newest forest: the message names the newest of each model, and other tests
    of this worker may have registered newer ones than the session's."""
    newest = max(bentoml.models.list("rf-classifier"), key=lambda m: m.info.creation_time)
    return str(newest.tag)


def test_an_unknown_version_lists_what_the_store_has(trained, capsys):
    assert main(["models", "show", "rf-classifier:nope"]) == 4
    err = capsys.readouterr().err
    assert "rf-classifier:nope" in err and _newest_rf_tag() in err


@pytest.mark.parametrize("command", ["serve", "grpc"])
def test_serving_without_its_model_is_one_line_and_exit_4(trained, command):
    proc = _run(command, "--port", "3999", env={"BENTOS_RF_MODEL": "rf-classifier:nope"})
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "rf-classifier:nope" in proc.stderr and _newest_rf_tag() in proc.stderr


def test_the_python_client_refuses_unknown_features_as_curl_does(server):
    misspelt = {k: v for k, v in ROW.items() if k != "sepal_length"} | {"sepal_lenght": 1.0}
    with bentoml.SyncHTTPClient(server.url) as client:
        for row, words in (
            ({**ROW, "extra": 1}, ["unknown feature(s) 'extra'"]),
            (misspelt, ["missing feature(s) 'sepal_length'", "unknown feature(s) 'sepal_lenght'"]),
        ):
            with pytest.raises(bentoml.exceptions.BentoMLException) as raised:
                client.predict(instances=[row])
            assert all(w in str(raised.value) for w in words), raised.value


def test_a_failed_shard_says_what_was_rejected_and_shows_it(job_env, tmp_path):
    frame = load_builtin("iris").features.head(10).astype(object)
    frame.loc[2, "sepal_width"] = "wide"
    frame.loc[7, "petal_length"] = "long"
    frame.to_csv(tmp_path / "in.csv", index=False)
    out = f"{tmp_path / 'out'}/"
    proc = _run("batch", "--input", str(tmp_path / "in.csv"), "--output", out, env=job_env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "2 of 10 rows rejected" in summary["error"] and "//rejected" not in summary["error"]
    assert "row 2" in summary["error"] and "sepal_width" in summary["error"]
    failed = json.loads((tmp_path / "out" / "_FAILED-00000-of-00001.json").read_text())
    assert failed["rows_written"] == 0 and failed["rows_valid"] == 8
    assert set(failed["outputs"]) == {"rejected"}
    shown = _run("batch", "--show-rejected", out, env=job_env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert len(lines) == 3 and "\t2\t" in lines[1] and "\t7\t" in lines[2]


def test_the_edge_example_names_the_row_and_column_of_a_bad_cell(trained, tmp_path):
    assert (
        main(["export-edge", "--out", str(tmp_path / "edge"), "--model", trained.tflite_tag]) == 0
    )
    rows = tmp_path / "rows.csv"
    rows.write_text("sepal_length,sepal_width,petal_length,petal_width\n5,3,1,0.2\n5,abc,1,0.2\n")
    proc = subprocess.run(
        [sys.executable, "examples/edge_predict.py", str(tmp_path / "edge"), str(rows)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "row 1 (line 3), column 'sepal_width'" in proc.stderr and "'abc'" in proc.stderr


def test_tensorflow_is_quiet_unless_asked(tmp_path):
    code = (
        "from bentos.training.tflite import tensorflow; tensorflow().config.list_physical_devices()"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    env["BENTOS_LOG_LEVEL"] = "debug"
    loud = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert loud.returncode == 0 and loud.stderr != ""  # TensorFlow's own start-up lines
