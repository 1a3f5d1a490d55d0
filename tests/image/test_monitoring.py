"""The prediction log and the drift check in the images, run as the prod overlay's manifests
say (tests/image/pod.py): the server pod pulls its models from a registry on a real
S3-compatible server (moto), answers requests and logs every one of them to that store; a
stopped server writes what it holds; then the monitor CronJob's pod, in the training image with
an empty model store, pulls the logged version from the registry, reads the log's window and
names the feature whose traffic moved. No Kubernetes API server runs here: the monitor's
retrain-on-drift is switched off (its requests are in tests/unit/test_rollout.py)."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from bentos.registry import Registry
from bentos.training.data import load_builtin
from tests.support.k8s import container_port, one

from .harness import render_overlay
from .pod import Pod
from .test_jobs import cronjob_patch

REQUESTS, ROWS = 20, 25


@pytest.fixture
def registry(s3, trained, monkeypatch) -> str:
    """The session's models pushed to a registry on the object store, as its champions."""
    for key, value in s3.credentials.items():
        monkeypatch.setenv(key, value)
    url = f"s3://{s3.bucket}/monitoring-{time.monotonic_ns()}"
    registry = Registry(f"{url}/registry/")
    for tag in (trained.rf_tag, trained.tflite_tag):
        name, version = tag.split(":")
        registry.push(tag)
        registry.set_champion(name, version, "the image test's models")
    return url


def _pod(objects: list[dict], kind: str, name: str, root, s3) -> Pod:
    """The rendered `kind` `name`'s pod, with the object store's credentials as its Secrets."""
    return Pod(objects, one(objects, kind, name), name=name, root=root / name, secrets=s3.secrets)


def _shifted_rows() -> list[list[dict]]:
    """Iris rows with petal_length moved up by 2 cm: requests of ROWS rows."""
    iris = load_builtin("iris").features
    rows = iris.sample(REQUESTS * ROWS, replace=True, random_state=7).reset_index(drop=True)
    rows["petal_length"] += 2.0
    records = rows.round(3).to_dict("records")
    return [records[i : i + ROWS] for i in range(0, len(records), ROWS)]


def test_the_server_logs_to_s3_and_the_monitor_pod_finds_the_drift(
    image, train_image, s3, registry, trained, tmp_path
):
    objects = render_overlay(
        tmp_path / "overlay",
        image.ref,
        train_image=train_image.ref,
        config={
            "model-registry": {"BENTOS_REGISTRY": f"{registry}/registry/"},
            "prediction-log": {
                "BENTOS_PREDICTION_LOG": f"{registry}/log/",
                "BENTOS_PREDICTION_LOG_SAMPLE": "1.0",
            },
            "monitor-config": {"BENTOS_MONITOR_SINCE": "1h"},
        },
        patches=[
            cronjob_patch(
                "monitor", {"env": [{"name": "BENTOS_MONITOR_RETRAIN_ON_DRIFT", "value": "false"}]}
            )
        ],
    )
    server_pod = _pod(objects, "Deployment", "tabular-classifier", tmp_path, s3)
    sent = []
    try:
        server_pod.run_init()  # pull-models: the registry's champions into the pod's home
        server = server_pod.start("server")
        server.wait_started()
        url = f"http://127.0.0.1:{container_port(server.spec, 'http')}"
        for i, rows in enumerate(_shifted_rows()):
            resp = httpx.post(
                url + "/predict", json={"instances": rows}, headers={"x-request-id": f"req-{i}"}
            )
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-request-id"] == f"req-{i}"
            assert resp.json()["model"] == trained.rf_tag
            sent.append(f"req-{i}")
        assert server.terminate() == 0  # a stopped server writes the rows it holds
    finally:
        server_pod.remove()

    fs = s3.fs()
    parts = fs.glob(f"{registry.removeprefix('s3://')}/log/**/*.parquet")
    assert parts, "the server wrote no part"
    frames = []
    for part in parts:
        with fs.open(part, "rb") as fh:
            frames.append(pd.read_parquet(fh))
    logged = pd.concat(frames)
    assert len(logged) == REQUESTS * ROWS  # sample 1.0: every row, none lost
    assert sorted(set(logged["request_id"])) == sorted(sent)
    assert set(logged["model"]) == {trained.rf_tag}

    monitor_pod = _pod(objects, "CronJob", "monitor", tmp_path, s3)
    try:
        code, logs = monitor_pod.run("monitor")
    finally:
        monitor_pod.remove()
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    summaries = [e for e in events if e.get("event") == "summary"]
    assert code == 3 and summaries, logs[-5000:]  # drift found: the gate's exit code
    (model,) = summaries[-1]["models"].values()
    assert model["rows"] == REQUESTS * ROWS
    assert "petal_length" in model["drifted_features"]
    assert "retrain" not in summaries[-1]
    report = summaries[-1]["report"].removeprefix("s3://")
    assert fs.exists(report) and fs.exists(report.replace("index.html", "drift.json"))
    drift = json.loads(fs.cat(report.replace("index.html", "drift.json")))
    assert drift["drifted"] is True
    assert np.isclose(drift["rows"], REQUESTS * ROWS)
