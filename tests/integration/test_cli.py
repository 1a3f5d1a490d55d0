"""The `bentos` command as users run it: exit codes, messages, and what reaches the store."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd
import pytest
import yaml

from bentos.cli import main
from bentos.runners import TFLiteRunner
from bentos.training.data import load_builtin
from tests.support.terminal import on_a_terminal

ROOT = Path(__file__).resolve().parents[2]


def _tags() -> set[str]:
    return {str(m.tag) for m in bentoml.models.list()}


def _iris_csv(path: Path, empty: bool = False, **changes) -> Path:
    """Iris with each of `changes` (column=value) in row 3, or in every row when `empty`."""
    ds = load_builtin("iris")
    frame = ds.features.assign(species=ds.target)
    for column, value in changes.items():
        frame[column] = frame[column].astype(object)
        frame.loc[slice(None) if empty else 3, column] = value
    frame.to_csv(path, index=False)
    return path


BAD_DATA = {
    "text in a numeric column": (
        lambda p: _iris_csv(p, sepal_width="wide"),
        "species",
        "column 'sepal_width' holds numbers, but 1 of its 150 values are text (first 'wide', "
        "row 3); leave those cells empty for a missing value, or name it --categorical sepal_width",
    ),
    "missing target values": (
        lambda p: _iris_csv(p, species=None),
        "species",
        "target column 'species' has 1 missing values",
    ),
    "a feature column with no values": (
        lambda p: _iris_csv(p, petal_length=None, empty=True),
        "species",
        "feature column 'petal_length' has no values; leave it out of the table or --ignore it",
    ),
    "too many categories": (
        lambda p: (
            pd.DataFrame(
                {"code": [f"c{i % 1500}" for i in range(3000)], "y": ["a", "b"] * 1500}
            ).to_csv(p, index=False),
            p,
        )[1],
        "y",
        "categorical column 'code' has 1500 distinct values, more than the 1000 allowed; "
        "--ignore code",
    ),
    "missing target": (lambda p: _iris_csv(p), "label", "target column 'label' not found"),
    "empty file": (lambda p: (p.write_text(""), p)[1], "species", "the file is empty"),
    "header only": (lambda p: (p.write_text("a,b,species\n"), p)[1], "species", "no data rows"),
    "inf value": (
        lambda p: _iris_csv(p, petal_width=float("inf")),
        "species",
        "row 3, column 'petal_width': non-finite value inf; a finite number is required",
    ),
    "single class": (
        lambda p: (pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a"] * 3}).to_csv(p, index=False), p)[
            1
        ],
        "y",
        "target column 'y' has a single class",
    ),
}


def test_a_model_no_better_than_the_majority_class_fails_its_gate(trained, tmp_path, capsys):
    # 5% positives and features that say nothing about them: 95% accuracy, and nothing learnt.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(600, 3)), columns=["a", "b", "c"])
    frame["y"] = np.where(np.arange(600) % 20 == 0, "rare", "common")
    frame.to_csv(tmp_path / "noise.csv", index=False)
    before = _tags()
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "noise.csv"),
            "--target",
            "y",
            "--class-weight",
            "none",
            "--epochs",
            "5",
        ]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 3, err
    assert "RandomForest macro F1" in err and "does not beat always answering 'common'" in err
    assert "by --min-lift 0.05" in err and _tags() == before


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_training_data_exits_2_naming_the_column_and_registers_nothing(
    trained, tmp_path, capsys, case
):
    make, target, message = BAD_DATA[case]
    path = make(tmp_path / "train.csv")
    before = _tags()
    code = main(["train", "--data", str(path), "--target", target])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert message in err
    assert "nothing was registered" in err
    assert _tags() == before


def test_python_m_bentos_trains_on_a_parquet_file_and_prints_a_summary(trained, tmp_path):
    ds = load_builtin("iris")
    path = tmp_path / "iris.parquet"
    ds.features.assign(species=ds.target).to_parquet(path)
    before = _tags()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bentos",
            "train",
            "--data",
            str(path),
            "--target",
            "species",
            "--n-estimators",
            "20",
            "--epochs",
            "60",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Registered models" in proc.stdout and "hold-out accuracy" in proc.stdout
    added = _tags() - before
    assert {t.split(":")[0] for t in added} == {"rf-classifier", "tflite-classifier"}
    rf = bentoml.models.get(next(t for t in added if t.startswith("rf-")))
    assert rf.info.metadata["training_data"]["source"] == str(path)


def test_the_readme_s_regression_command_registers_both_models_with_its_defaults(tmp_path):
    # `bentos train --dataset diabetes`, as the README shows it: no --epochs. The network once
    # overfitted these 353 training rows to a hold-out R² below zero and nothing was registered.
    # A store of its own: the session's "latest" forest stays the classifier other tests serve.
    home = tmp_path / "home"
    proc = subprocess.run(
        [sys.executable, "-m", "bentos", "train", "--dataset", "diabetes"],
        capture_output=True,
        text=True,
        env={**os.environ, "BENTOML_HOME": str(home)},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    registered = sorted((home / "models").glob("*/*/model.yaml"))
    assert sorted(p.parent.parent.name for p in registered) == [
        "rf-classifier",
        "tflite-classifier",
    ]
    for info in registered:
        metrics = yaml.safe_load(info.read_text())["metadata"]["metrics"]
        assert metrics["r2"] >= 0.1 and metrics["rmse"] < metrics["baseline"]["rmse"], info


def test_failed_gate_exits_3(trained, capsys):
    before = _tags()
    assert main(["train", "--min-accuracy", "0.999", "--n-estimators", "5", "--epochs", "5"]) == 3
    assert "nothing was registered" in capsys.readouterr().err
    assert _tags() == before


def test_data_without_target_is_a_usage_error(capsys):
    assert main(["train", "--data", "x.csv"]) == 2
    assert "--target" in capsys.readouterr().err


def test_exported_edge_folder_predicts_like_the_registered_model(trained, tmp_path):
    out = tmp_path / "edge"
    assert main(["export-edge", "--out", str(out), "--model", trained.tflite_tag]) == 0
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["model"] == trained.tflite_tag
    assert manifest["feature_order"] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert manifest["class_labels"] == ["setosa", "versicolor", "virginica"]
    assert manifest["quantization"] == "dynamic"
    assert manifest["tensors"]["inputs"][0]["dtype"] == "float32"
    # The versions a device is told to install: the serving lock's, which read the model here.
    lock = (ROOT / "requirements-serving.lock").read_text()
    pinned = dict(re.findall(r"^(ai-edge-litert|numpy)==([^ ;]+)", lock, re.M))
    assert manifest["runtime"] == pinned and len(pinned) == 2

    ds = load_builtin("iris")
    rows = tmp_path / "rows.csv"
    ds.features.iloc[:, ::-1].to_csv(rows, index=False)  # column order must not matter
    # The example runs with numpy + ai_edge_litert only: block tensorflow and this package.
    blocker = tmp_path / "blocker"
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    blocker.mkdir()
    for name in ("tensorflow", "bentos", "pandas"):
        (blocker / f"{name}.py").write_text(f"raise ImportError('{name} is not on the device')\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "edge_predict.py"), str(out), str(rows)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    got = list(csv.DictReader(proc.stdout.splitlines()))
    runner = TFLiteRunner(trained.tflite_tag)
    want = runner.labels_for(runner.predict_proba(ds.features.to_numpy()))
    assert [r["label"] for r in got] == want
    probs = np.array([[float(r[f"p_{c}"]) for c in manifest["class_labels"]] for r in got])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)


def test_edge_example_refuses_a_tampered_model(trained, tmp_path):
    out = tmp_path / "edge"
    assert main(["export-edge", "--out", str(out)]) == 0
    with open(out / "model.tflite", "ab") as fh:
        fh.write(b"\0")
    rows = tmp_path / "rows.csv"
    load_builtin("iris").features.head(2).to_csv(rows, index=False)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "edge_predict.py"), str(out), str(rows)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4
    assert "sha256 does not match" in proc.stderr


def test_train_reads_its_data_before_it_imports_tensorflow(tmp_path):
    # With TensorFlow made unimportable, a missing file must still be reported as missing: the
    # data is looked at first, so a wrong path costs a second, not TensorFlow's import.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "tensorflow.py").write_text("raise ImportError('tensorflow was imported')\n")
    args = ["train", "--data", str(tmp_path / "no.csv"), "--target", "y"]
    proc = subprocess.run(
        [sys.executable, "-m", "bentos", *args],
        env={**os.environ, "PYTHONPATH": str(blocker)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = " ".join((proc.stdout + proc.stderr).split())  # rich wraps lines to the terminal
    assert proc.returncode == 2, out
    assert "no.csv: no such file" in out
    assert "tensorflow" not in out.lower()


COMMANDS = ("train", "serve", "grpc", "batch", "retrain", "models", "export-edge", "report")


def _bentos(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bentos", *map(str, args)],
        cwd=ROOT,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bentos_help_lists_every_command_with_an_example():
    proc = _bentos("--help")
    assert proc.returncode == 0, proc.stderr
    for command in COMMANDS:
        assert f"\n  bentos {command} " in proc.stdout, command


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_s_help_shows_an_example_of_itself(command):
    proc = _bentos(command, "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    example = proc.stdout.lower().split("example", 1)
    assert len(example) == 2, proc.stdout
    assert f"bentos {command} " in example[1], proc.stdout


def test_bentos_batch_is_the_batch_job(job_env, tmp_path):
    load_builtin("iris").features.to_csv(tmp_path / "in.csv", index=False)
    proc = _bentos(
        "batch", "--input", tmp_path / "in.csv", "--output", tmp_path / "out", env=job_env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["process"] == "batch" and summary["rows_written"] == 150
    assert (tmp_path / "out" / "_SUCCESS-00000-of-00001.json").is_file()
    # Its own argument checks and exit codes, unchanged.
    proc = _bentos("batch", "--input", tmp_path / "in.csv", env=job_env)
    assert proc.returncode == 2 and "--input and --output are required" in proc.stderr


def test_bentos_retrain_is_the_retrain_job():
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENTOS_RETRAIN")}
    proc = _bentos("retrain", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--data and --target are required" in proc.stdout


def test_bentos_serve_and_bentos_grpc_serve_the_session_s_models(pinned, bentoml_home):
    import httpx
    import tritonclient.grpc as triton

    from benchmarks.servers import Process, free_port, grpc_ready, http_ready

    env = {**pinned, "BENTOML_HOME": str(bentoml_home)}
    port = free_port()
    serve = [sys.executable, "-m", "bentos", "serve", "--host", "127.0.0.1", "--port", str(port)]
    ready = http_ready(f"http://127.0.0.1:{port}/readyz")
    with Process(serve, ready=ready, port=port, env=env) as srv:
        row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        answer = httpx.post(f"{srv.url}/predict", json={"instances": [row]}).json()
        assert answer["model"] == pinned["BENTOS_RF_MODEL"]
    port, metrics = free_port(), free_port()
    grpc = [sys.executable, "-m", "bentos", "grpc", "--host", "127.0.0.1", "--port", str(port)]
    grpc += ["--metrics-port", str(metrics)]
    with Process(grpc, ready=grpc_ready(f"127.0.0.1:{port}"), port=port, env=env) as srv:
        client = triton.InferenceServerClient(srv.address)
        assert client.is_model_ready("rf")
        assert httpx.get(f"http://127.0.0.1:{metrics}/metrics").status_code == 200


def test_bentos_report_prints_where_the_report_is_and_copies_it(trained, tmp_path):
    proc = _bentos("report", trained.rf_tag)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = Path(proc.stdout.strip())
    assert str(page) == trained.reports[trained.rf_tag] and page.is_file()
    proc = _bentos("report", trained.tflite_tag, "--out", tmp_path / "copy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copied = Path(proc.stdout.strip())
    assert copied == tmp_path / "copy" / "index.html" and copied.is_file()
    assert sorted(p.name for p in copied.parent.iterdir()) == sorted(
        p.name for p in Path(trained.reports[trained.tflite_tag]).parent.iterdir()
    )


def test_bentos_report_of_a_model_without_one_says_how_to_make_it(trained, bentoml_home, tmp_path):
    import shutil

    # A store whose forest was registered before reports existed.
    home = tmp_path / "home"
    shutil.copytree(bentoml_home / "models", home / "models", symlinks=True)
    version = trained.rf_tag.split(":")[1]
    shutil.rmtree(home / "models" / "rf-classifier" / version / "report")
    proc = _bentos("report", trained.rf_tag, env={**os.environ, "BENTOML_HOME": str(home)})
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "has no training report" in proc.stderr and "retrain" in proc.stderr


def test_bentos_models_show_prints_a_stored_model_s_record(trained):
    proc = _bentos("models", "show", trained.rf_tag)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["tag"] == trained.rf_tag
    assert shown["metrics"]["accuracy"] == trained.rf_metrics["accuracy"]
    assert shown["training_data"]["rows"] == 150
    assert shown["report"] == trained.reports[trained.rf_tag]
    proc = _bentos("models", "show", "rf-classifier:nosuchversion")
    assert proc.returncode == 4 and "nosuchversion" in proc.stderr


def test_on_a_terminal_bentos_train_shows_its_steps_and_keras_epochs(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home")}
    code, text = on_a_terminal(["bentos", "train", "--epochs", "12", "--n-estimators", "10"], env)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert code == 0, text
    for title in ("Loading data", "Training RandomForest", "Training Keras MLP (12 epochs)"):
        assert f"done {title}" in text, text
    assert "12/12" in text and "loss" in text, text  # the epochs' bar, and its latest loss
