"""Periodic evaluation and promotion in the real images, against a real S3-compatible server: the
retrain CronJob's pod (the training image) promotes into the registry, a server pod started
again pulls the new champion in its init container and serves it, a worse challenger (noisy
labels, judged on clean ones) is not promoted, and a rollback brings the previous champion
back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np

from benchmarks.servers import ROOT
from bentos.training.data import load_builtin
from tests.support.k8s import container_port, one

from .harness import render_overlay
from .pod import Pod
from .test_jobs import NO_ROLLOUT, run_retrain


def _iris_csv(noise: float = 0.0, seed: int = 0) -> bytes:
    ds = load_builtin("iris")
    target = ds.target.to_numpy().copy()
    rng = np.random.default_rng(seed)
    flip = rng.random(len(target)) < noise
    target[flip] = rng.choice(np.unique(target), flip.sum())
    return ds.features.assign(species=target).to_csv(index=False).encode()


def _served(objects, tmp, secrets) -> dict[str, str]:
    """Start the Deployment's pod as the kubelet would (init containers first), and return
    the tags its server serves."""
    deployment = one(objects, "Deployment", "tabular-classifier")
    pod = Pod(objects, deployment, name="lifecycle", root=tmp, secrets=secrets)
    try:
        pod.run_init()
        server = pod.start("server")
        server.wait_started()
        url = f"http://127.0.0.1:{container_port(server.spec, 'http')}"
        return {m["name"]: m["tag"] for m in httpx.get(url + "/models").json()["models"]}
    finally:
        pod.remove()


def test_a_promoted_challenger_is_served_after_a_restart_a_worse_one_is_not_and_rollback_works(
    image, train_image, s3, tmp_path
):
    fs = s3.fs()
    prefix = f"{s3.bucket}/lifecycle-{time.monotonic_ns()}"
    for name, content in (("clean", _iris_csv()), ("noisy", _iris_csv(noise=0.5, seed=3))):
        with fs.open(f"{prefix}/{name}.csv", "wb") as fh:
            fh.write(content)
    registry = f"s3://{prefix}/registry/"

    def overlay(folder: str, **retrain: str) -> list[dict]:
        return render_overlay(
            tmp_path / folder,
            image.ref,
            train_image=train_image.ref,
            config={
                "retrain-config": {
                    "BENTOS_RETRAIN_DATA": f"s3://{prefix}/clean.csv",
                    "BENTOS_RETRAIN_TARGET": "species",
                    **retrain,
                },
                "model-registry": {"BENTOS_REGISTRY": registry},
            },
            patches=[NO_ROLLOUT],
        )

    # 1. No champion yet: both retrained models are promoted; a new server pod serves them.
    objects = overlay("o1")
    events = run_retrain(objects, tmp_path / "r1", s3.secrets)
    first = {e["model"]: e for e in events if e["event"] == "decision"}
    assert set(first) == {"rf-classifier", "tflite-classifier"}
    assert all(d["promoted"] for d in first.values()), first
    champions = {n: f"{n}:{d['challenger']['version']}" for n, d in first.items()}
    served = _served(objects, tmp_path / "p1", s3.secrets)
    assert served == {"rf": champions["rf-classifier"], "tflite": champions["tflite-classifier"]}

    # 2. A worse forest (noisy labels, its own gate lowered so it passes), judged on clean rows.
    worse = run_retrain(
        overlay(
            "o2",
            BENTOS_RETRAIN_DATA=f"s3://{prefix}/noisy.csv",
            BENTOS_RETRAIN_EVAL_DATA=f"s3://{prefix}/clean.csv",
            BENTOS_RETRAIN_MODELS="rf",
            BENTOS_RETRAIN_MIN_ACCURACY="0.2",
        ),
        tmp_path / "r2",
        s3.secrets,
    )
    (decision,) = [e for e in worse if e["event"] == "decision"]
    assert not decision["promoted"], decision
    pointer = json.loads(fs.cat(f"{prefix}/registry/rf-classifier/champion.json"))
    assert f"rf-classifier:{pointer['version']}" == champions["rf-classifier"]

    # 3. An equal forest is promoted (at least as good, margin 0); then rolled back by hand.
    again = run_retrain(overlay("o3", BENTOS_RETRAIN_MODELS="rf"), tmp_path / "r3", s3.secrets)
    (decision,) = [e for e in again if e["event"] == "decision"]
    assert decision["promoted"], decision
    assert f"rf-classifier:{decision['challenger']['version']}" != champions["rf-classifier"]
    first_version = champions["rf-classifier"].split(":")[1]
    rollback = ["models", "rollback", "--registry", registry, "rf-classifier", first_version]
    proc = subprocess.run(
        [sys.executable, "-m", "bentos", *rollback],
        cwd=ROOT,
        env={**os.environ, **s3.credentials, "BENTOML_HOME": str(tmp_path / "ops")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _served(objects, tmp_path / "p2", s3.secrets)["rf"] == champions["rf-classifier"]
