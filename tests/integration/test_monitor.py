"""The drift check end to end: the batch job logs its predictions to a real S3-compatible
server (moto), `python -m jobs.monitor` reads the window, compares it with the model's
reference profile, writes its report to the same store and pushes its gauges to a real
Pushgateway. A window drawn from the training table raises nothing; a shifted one names the
features that moved."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bentos.training.data import load_builtin
from tests.support.apiserver import api_server
from tests.support.monitoring import pushgateway_server, scrape
from tests.support.objectstore import ObjectStore, moto_server


@pytest.fixture(scope="module")
def s3() -> ObjectStore:
    with moto_server("bentos-monitor-test") as store:
        yield store


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with pushgateway_server(tmp_path_factory.mktemp("pushgateway")) as gw:
        yield gw


@pytest.fixture()
def kube(tmp_path):
    """The API server is the one thing mocked (none can run here): a stand-in holding the
    retrain CronJob, found through a kubeconfig as outside a pod (tests/unit/test_rollout.py
    has the requests; tests/k8s/test_retrain_on_drift.py the RBAC and the admission policy)."""
    with api_server() as server:
        server.cronjobs[("bentos", "retrain")] = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "retrain", "namespace": "bentos", "uid": "u-1"},
            "spec": {
                "schedule": "0 1 1 * *",
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "r"}]}}}},
            },
        }
        env = {"KUBECONFIG": str(server.kubeconfig(tmp_path / "kubeconfig"))}
        yield server, env


def _logged(rows: pd.DataFrame, prefix: str, job_env, s3: ObjectStore, tmp_path) -> dict:
    """The batch job over `rows`, every row logged under s3://bucket/prefix."""
    rows.to_csv(tmp_path / f"{prefix}.csv", index=False)
    env = {**job_env, **s3.credentials, "BENTOS_PREDICTION_LOG": f"s3://{s3.bucket}/{prefix}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.batch_predict",
            "--input",
            str(tmp_path / f"{prefix}.csv"),
            "--output",
            str(tmp_path / f"{prefix}-out"),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    return env


def _monitor(
    env: dict, prefix: str, s3: ObjectStore, gateway=None, args: tuple[str, ...] = ()
) -> tuple[int, dict]:
    extra = {"BENTOS_PUSHGATEWAY": gateway.url} if gateway else {}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.monitor",
            "--log",
            f"s3://{s3.bucket}/{prefix}",
            "--since",
            "1h",
            *args,
        ],
        env={**env, **extra},
        capture_output=True,
        text=True,
    )
    summary = [json.loads(line) for line in proc.stdout.splitlines() if '"summary"' in line]
    assert summary, proc.stdout + proc.stderr
    return proc.returncode, summary[-1]


def _iris(n: int, seed: int) -> pd.DataFrame:
    return load_builtin("iris").features.sample(n, replace=True, random_state=seed)


def test_a_window_drawn_from_the_training_table_raises_no_drift(
    job_env, s3, gateway, tmp_path, kube
):
    env = _logged(_iris(1000, seed=1), "same", job_env, s3, tmp_path)
    server, kubeconfig = kube
    code, summary = _monitor(
        {**env, **kubeconfig}, "same", s3, gateway, ("--retrain-on-drift", "--namespace", "bentos")
    )
    assert code == 0 and summary["drifted"] is False, summary
    assert server.requests == [] and "retrain" not in summary  # nothing to retrain for
    (model,) = summary["models"].values()
    assert model["rows"] == 1000 and model["drifted_features"] == {}
    assert s3.fs().exists(summary["report"].removeprefix("s3://"))
    pushed = scrape(gateway.url + "/metrics")
    version = job_env["BENTOS_RF_MODEL"].split(":")[1]
    rows = {k: v for k, v in pushed.items() if k.startswith("bentos_drift_window_rows{")}
    assert list(rows.values()) == [1000.0]
    assert 'model="rf-classifier"' in next(iter(rows)) and f'version="{version}"' in next(
        iter(rows)
    )
    drifted = [v for k, v in pushed.items() if k.startswith("bentos_drift_features_drifted{")]
    assert drifted == [0.0]


def test_a_shifted_window_names_the_features_that_moved_and_exits_3(
    job_env, s3, gateway, tmp_path, kube
):
    rows = _iris(1000, seed=2).reset_index(drop=True)
    rows["petal_length"] += 2.0  # a moved mean
    rows.loc[rows.index[:300], "sepal_width"] = np.nan  # more missing values
    env = _logged(rows, "shifted", job_env, s3, tmp_path)
    server, kubeconfig = kube
    code, summary = _monitor(
        {**env, **kubeconfig},
        "shifted",
        s3,
        gateway,
        ("--retrain-on-drift", "--namespace", "bentos"),
    )
    assert code == 3 and summary["drifted"] is True
    # --retrain-on-drift: the retrain CronJob started as a Job of its own template.
    (job,) = server.jobs.values()
    assert summary["retrain"] == {
        "cronjob": "retrain",
        "started": True,
        "job": job["metadata"]["name"],
        "namespace": "bentos",
    }
    assert job["metadata"]["annotations"]["bentos.io/started-by"] == "drift"
    (model,) = summary["models"].values()
    assert set(model["drifted_features"]) == {"petal_length", "sepal_width"}
    assert "missing" in model["drifted_features"]["sepal_width"]
    report = s3.fs().cat(
        summary["report"].removeprefix("s3://").replace("/index.html", "/drift.json")
    )
    assert json.loads(report)["drifted"] is True


def test_an_empty_window_is_no_drift_and_a_bad_duration_is_a_usage_error(job_env, s3):
    env = {**job_env, **s3.credentials}
    code, summary = _monitor(env, "nothing-logged-here", s3)
    assert code == 0 and summary["rows"] == 0 and summary["models"] == {}
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.monitor", "--log", "/tmp/x", "--since", "yesterday"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "'yesterday' is not a duration" in proc.stderr


def _evaluate(env: dict, prefix: str, labels: str, gateway, kube) -> tuple[int, dict]:
    _, kubeconfig = kube
    retrain = {"BENTOS_MONITOR_RETRAIN_ON_DRIFT": "true", "BENTOS_MONITOR_NAMESPACE": "bentos"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.evaluate",
            "--log",
            f"s3://{env['_bucket']}/{prefix}",
            "--labels",
            labels,
            "--since",
            "1h",
        ],
        env={**env, **kubeconfig, **retrain, "BENTOS_PUSHGATEWAY": gateway.url},
        capture_output=True,
        text=True,
    )
    summary = [json.loads(line) for line in proc.stdout.splitlines() if '"summary"' in line]
    assert summary, proc.stdout + proc.stderr
    return proc.returncode, summary[-1]


@pytest.mark.parametrize("degraded", [False, True])
def test_delayed_labels_show_the_served_models_accuracy(
    job_env, s3, gateway, tmp_path, kube, degraded
):
    iris = load_builtin("iris")
    picked = iris.features.sample(400, replace=True, random_state=3)
    truth = iris.target.loc[picked.index].astype(str).to_numpy()
    prefix = f"labelled-{degraded}"
    env = _logged(picked.reset_index(drop=True), prefix, job_env, s3, tmp_path)
    # The labels arrive later, keyed by the request id the log holds for each row (FILE#ROW).
    if degraded:  # a model whose world changed: a third of its answers are now wrong
        truth = truth.copy()
        truth[::3] = np.where(truth[::3] == "setosa", "virginica", "setosa")
    (source,) = s3.fs().find(f"{s3.bucket}/{prefix}")
    with s3.fs().open(source, "rb") as fh:
        logged = pd.read_parquet(fh)
    rows = logged["request_id"].str.rsplit("#", n=1).str[1].astype(int)
    labels = pd.DataFrame({"request_id": logged["request_id"], "species": truth[rows]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    code, summary = _evaluate(
        {**env, "_bucket": s3.bucket}, prefix, str(tmp_path / "labels.csv"), gateway, kube
    )
    (model,) = summary["models"].values()
    assert model["rows"] == 400 and summary["label_column"] == "species"
    if degraded:
        assert code == 3 and set(model["fell"]) == {"accuracy", "f1_macro"}
        assert model["accuracy"] < 0.75
        # BENTOS_MONITOR_RETRAIN_ON_DRIFT: an accuracy drop starts the retrain CronJob too.
        (job,) = kube[0].jobs.values()
        assert job["metadata"]["annotations"]["bentos.io/started-by"] == "accuracy"
        assert summary["retrain"]["started"] is True
    else:
        assert code == 0 and model["fell"] == [] and model["accuracy"] > 0.9
        assert kube[0].requests == []
    pushed = scrape(gateway.url + "/metrics")
    fell = [v for k, v in pushed.items() if k.startswith("bentos_evaluation_fell{")]
    assert fell == [float(degraded)]
