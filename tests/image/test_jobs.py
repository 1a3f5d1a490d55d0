"""The prod CronJobs' pods, from the real image: batch prediction as an Indexed Job (one pod per
completion index, JOB_COMPLETION_INDEX set as Kubernetes sets it) over a mounted folder and over
a real S3-compatible server, and retraining into that server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bentos.runners import RandomForestRunner
from bentos.training.data import load_builtin
from tests.support.k8s import ROOT, container_port, job_contract, one

from .harness import build_image, render_overlay
from .pod import Pod

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris(n: int, seed: int) -> pd.DataFrame:
    """n iris-like rows (tiled and jittered), with an id column the job must ignore."""
    base = load_builtin("iris").features
    frame = base.iloc[np.arange(n) % len(base)].reset_index(drop=True)
    frame = frame + np.random.default_rng(seed).normal(0, 0.05, frame.shape).round(3)
    return frame.assign(customer_id=np.arange(n))


def write_input(folder: Path) -> dict[tuple[str, int], str | None]:
    """A CSV with three bad rows (and one with an empty cell, which is not bad) and a Parquet
    file of five row groups. Returns, per
    (file name, row), None for a valid row or the column its rejection must name."""
    folder.mkdir(parents=True)
    csv = iris(3000, 0)
    lines = csv.to_csv(index=False).splitlines()
    cells = lambda i: lines[i + 1].split(",")  # noqa: E731 (row i is line i + 1)
    bad = {5: "sepal_width", 7: "petal_length"}
    row5, row7, row12 = cells(5), cells(7), cells(12)
    # Text and an infinity are rejected; an empty cell is a missing value, and predicted.
    row5[1], row7[2], row12[3] = "abc", "inf", ""
    lines[6], lines[8], lines[13] = ",".join(row5), ",".join(row7), ",".join(row12)
    lines[11] = lines[11] + ",1,2"  # row 10: too many fields
    (folder / "a.csv").write_text("\n".join(lines) + "\n")
    pq.write_table(
        pa.Table.from_pandas(iris(5000, 1)),
        folder / "b.parquet",
        row_group_size=1000,
    )
    expected: dict[tuple[str, int], str | None] = {("a.csv", i): None for i in range(3000)}
    expected.update({("a.csv", i): column for i, column in bad.items()})
    expected[("a.csv", 10)] = "malformed CSV line"
    expected.update({("b.parquet", i): None for i in range(5000)})
    return expected


def read_output(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(predictions, rejected rows, _SUCCESS manifests) of a job's output folder."""
    parts = sorted(folder.glob("part-*.parquet"))
    rejected = sorted((folder / "rejected").glob("part-*.parquet"))
    frame = lambda files: pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)  # noqa: E731
    manifests = [json.loads(p.read_text()) for p in sorted(folder.glob("_SUCCESS-*.json"))]
    return frame(parts), frame(rejected), manifests


def check_output(folder: Path, expected: dict, trained, shards: int) -> None:
    """Every valid row exactly once, predicted as the source tree predicts it; every bad row
    rejected with its reason; one manifest per shard."""
    predictions, rejected, manifests = read_output(folder)
    predictions["file"] = predictions["source_file"].str.rsplit("/", n=1).str[-1]
    rejected["file"] = rejected["source_file"].str.rsplit("/", n=1).str[-1]
    keys = list(zip(predictions["file"], predictions["source_row"], strict=True))
    assert len(keys) == len(set(keys)), "a row was written twice"
    assert set(keys) == {k for k, why in expected.items() if why is None}
    rows = zip(rejected["file"], rejected["source_row"], strict=True)
    reasons = dict(zip(rows, rejected["reason"], strict=True))
    assert set(reasons) == {k for k, why in expected.items() if why is not None}
    for key, reason in reasons.items():
        assert expected[key] in reason, (key, reason)
    assert sorted(m["shard_index"] for m in manifests) == list(range(shards))
    assert {m["model"] for m in manifests} == set(predictions["model"]) == {trained.rf_tag}
    assert sum(m["rows_written"] for m in manifests) == len(predictions)

    # The batch job's default forest (the packed one), in this process, on the same rows.
    runner = RandomForestRunner(trained.rf_tag, "packed")
    for name, table in (("b.parquet", pd.read_parquet(folder.parent / "in" / "b.parquet")),):
        mine = predictions[predictions["file"] == name].sort_values("source_row")
        x = table.loc[mine["source_row"], FEATURES].to_numpy()
        want = runner.predict_proba(x)
        assert mine["prediction"].tolist() == runner.labels_for(want)
        np.testing.assert_array_equal(np.stack(mine["probabilities"]), want.astype(np.float32))


def run_indexed_job(objects, tmp: Path, cronjob: str, secrets=None, only=None) -> list[Pod]:
    """One pod per completion index, `parallelism` at a time, as the Job controller runs them."""
    contract = job_contract(objects, cronjob)
    assert contract.completion_mode == "Indexed"
    workload = one(objects, "CronJob", cronjob)
    indexes = list(range(contract.completions)) if only is None else only
    pods = []
    for start in range(0, len(indexes), contract.parallelism):
        batch = [
            Pod(
                objects,
                workload,
                name=f"{cronjob}-{i}",
                root=tmp / f"pod-{i}-{time.monotonic_ns()}",
                secrets=secrets,
                env={"JOB_COMPLETION_INDEX": str(i)},
            )
            for i in indexes[start : start + contract.parallelism]
        ]
        for pod in batch:
            pod.start(cronjob)
        for pod in batch:
            code = pod.containers[0].wait()
            logs = pod.containers[0].logs()
            pod.remove()
            assert code == 0, logs[-5000:]
            assert '"event": "summary"' in logs
        pods += batch
    return pods


def cronjob_patch(cronjob: str, container: dict, **pod: object) -> dict:
    """A strategic-merge patch of a CronJob's container (by name) and its pod spec."""
    spec = {"containers": [{"name": cronjob, **container}], **pod}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cronjob},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}},
    }


def data_volume(cronjob: str, folder: Path) -> dict:
    """A patch giving the CronJob's container a folder at /data (hostPath, as a test stands in
    for a PersistentVolume)."""
    return cronjob_patch(
        cronjob,
        {"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        volumes=[{"name": "data", "hostPath": {"path": str(folder), "type": "Directory"}}],
    )


@pytest.fixture
def folder_job(image, tmp_path):
    data = tmp_path / "data"
    expected = write_input(data / "in")
    (data / "out").mkdir()
    for path in (data, data / "out"):
        path.chmod(0o777)  # as a volume the pod's fsGroup may write to
    objects = render_overlay(
        tmp_path / "overlay",
        image.ref,
        config={
            "batch-predict-config": {
                "BENTOS_BATCH_INPUT": "/data/in/",
                "BENTOS_BATCH_OUTPUT": "/data/out/",
            }
        },
        patches=[data_volume("batch-predict", data)],
    )
    return objects, data, expected


def test_batch_job_scores_a_mounted_folder_exactly_once(folder_job, trained, tmp_path):
    objects, data, expected = folder_job
    shards = job_contract(objects).completions
    run_indexed_job(objects, tmp_path, "batch-predict")
    check_output(data / "out", expected, trained, shards)


def test_batch_job_scores_s3_on_a_real_object_store(image, s3, trained, tmp_path):
    expected = write_input(tmp_path / "local" / "in")
    fs = s3.fs()
    prefix = f"{s3.bucket}/batch-{time.monotonic_ns()}"
    fs.put(str(tmp_path / "local" / "in") + "/", f"{prefix}/in/", recursive=True)
    objects = render_overlay(
        tmp_path / "overlay",
        image.ref,
        config={
            "batch-predict-config": {
                "BENTOS_BATCH_INPUT": f"s3://{prefix}/in/",
                "BENTOS_BATCH_OUTPUT": f"s3://{prefix}/out/",
            }
        },
    )
    run_indexed_job(objects, tmp_path, "batch-predict", secrets=s3.secrets)
    fs.get(f"{prefix}/out/", str(tmp_path / "local" / "out") + "/", recursive=True)
    assert not fs.glob(f"{prefix}/out/_tmp/*"), "temporary files left behind"
    check_output(tmp_path / "local" / "out", expected, trained, job_contract(objects).completions)


def test_a_batch_pod_killed_mid_shard_and_run_again_gives_the_same_result(image, trained, tmp_path):
    data = tmp_path / "data"
    (data / "in").mkdir(parents=True)
    expected: dict = {}
    rows = 500_000  # per file, 4 files in row groups of 5,000: seconds of work per shard
    for k in range(4):
        name = f"p{k}.parquet"
        pq.write_table(
            pa.Table.from_pandas(iris(rows, k)),
            data / "in" / name,
            row_group_size=5_000,
        )
        expected.update({(name, i): None for i in range(rows)})
    (data / "out").mkdir()
    for path in (data, data / "out"):
        path.chmod(0o777)
    objects = render_overlay(
        tmp_path / "overlay",
        image.ref,
        config={
            "batch-predict-config": {
                "BENTOS_BATCH_INPUT": "/data/in/",
                "BENTOS_BATCH_OUTPUT": "/data/out/",
                "BENTOS_BATCH_CHUNK_ROWS": "1000",
            }
        },
        patches=[data_volume("batch-predict", data)],
    )
    shards = job_contract(objects).completions
    pod = Pod(
        objects,
        one(objects, "CronJob", "batch-predict"),
        name="batch-predict-killed",
        root=tmp_path / "killed",
        env={"JOB_COMPLETION_INDEX": "0"},
    )
    try:
        started = pod.start("batch-predict")
        deadline = time.monotonic() + 120
        while not list((data / "out").glob("_tmp/00000-of-*.parquet")):
            assert started.running(), started.logs()
            assert time.monotonic() < deadline, started.logs()
            time.sleep(0.02)
        time.sleep(0.5)  # writing: its first chunks are in the temporary part
        assert started.running(), "shard 0 finished before the kill: make the input larger"
        started.kill("KILL")
        assert started.wait() == 137
    finally:
        pod.remove()
    assert not list((data / "out").glob("_SUCCESS-00000-*")), "killed, yet marked complete"
    assert list((data / "out").glob("_tmp/00000-of-*")), "the kill left no partial file"
    run_indexed_job(objects, tmp_path, "batch-predict")  # index 0 again, then the others
    predictions, rejected, manifests = read_output(data / "out")
    predictions["file"] = predictions["source_file"].str.rsplit("/", n=1).str[-1]
    keys = list(zip(predictions["file"], predictions["source_row"], strict=True))
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == set(expected)
    assert rejected.empty
    assert sorted(m["shard_index"] for m in manifests) == list(range(shards))
    assert not list((data / "out").glob("_tmp/*")), "the rerun left temporary files"


def retrain_patch(**env: str) -> dict:
    """A patch of the retrain CronJob's container env (strategic merge, by name)."""
    return cronjob_patch("retrain", {"env": [{"name": k, "value": v} for k, v in env.items()]})


# No Kubernetes API server runs here: the rollout after a promotion is off in these runs (its
# request is checked in tests/unit/test_rollout.py).
NO_ROLLOUT = retrain_patch(BENTOS_RETRAIN_ROLLOUT_DEPLOYMENT="")


def run_retrain(objects, tmp: Path, secrets) -> list[dict]:
    """The retrain CronJob's pod, to its end: its JSON events (exit 0 asserted)."""
    pod = Pod(
        objects, one(objects, "CronJob", "retrain"), name="retrain", root=tmp, secrets=secrets
    )
    try:
        code, logs = pod.run("retrain")
    finally:
        pod.remove()
    assert code == 0, logs[-5000:]
    return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]


def test_retrain_job_exports_to_s3_and_a_bento_built_with_it_serves_it(
    image, train_image, s3, tmp_path
):
    iris_table = load_builtin("iris")
    table = iris_table.features.assign(species=iris_table.target)
    fs = s3.fs()
    prefix = f"{s3.bucket}/retrain-{time.monotonic_ns()}"
    with fs.open(f"{prefix}/train/iris.csv", "wb") as fh:
        fh.write(table.to_csv(index=False).encode())
    objects = render_overlay(
        tmp_path / "overlay",
        image.ref,
        train_image=train_image.ref,
        config={
            "retrain-config": {
                "BENTOS_RETRAIN_DATA": f"s3://{prefix}/train/iris.csv",
                "BENTOS_RETRAIN_TARGET": "species",
                "BENTOS_RETRAIN_EXPORT": f"s3://{prefix}/models/",
            },
            "model-registry": {"BENTOS_REGISTRY": f"s3://{prefix}/registry/"},
        },
        patches=[NO_ROLLOUT],
    )
    events = run_retrain(objects, tmp_path / "pod", s3.secrets)
    registered = next(e for e in events if e["event"] == "registered")
    tags = sorted(registered["models"])
    assert [t.split(":")[0] for t in tags] == ["rf-classifier", "tflite-classifier"]
    exported = sorted(fs.glob(f"{prefix}/models/*.bentomodel"))
    assert [Path(p).name for p in exported] == [t.replace(":", "-") + ".bentomodel" for t in tags]

    # A new store with the exported models; its Bento, its image, its server.
    home = tmp_path / "home"
    env = {"BENTOML_HOME": str(home)}
    bentoml = [sys.executable, "-m", "bentoml", "models"]
    for path in exported:
        local = tmp_path / Path(path).name
        fs.get(path, str(local))
        subprocess.run(
            [*bentoml, "import", str(local)],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
    retrained = build_image("bentos-image-test:retrained", env)
    served = render_overlay(tmp_path / "overlay2", retrained.ref)
    server_pod = Pod(
        served,
        one(served, "Deployment", "tabular-classifier"),
        name="retrained",
        root=tmp_path / "p2",
    )
    try:
        server = server_pod.start("server")  # no init container: the Bento's own models
        server.wait_started()
        url = f"http://127.0.0.1:{container_port(server.spec, 'http')}"
        models = {m["name"]: m["tag"] for m in httpx.get(url + "/models").json()["models"]}
        assert sorted(models.values()) == tags
        row = dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True))
        resp = httpx.post(url + "/predict", json={"instances": [row]})
        assert resp.status_code == 200 and resp.json()["model"] == models["rf"]
        assert resp.json()["predictions"] == ["setosa"]
    finally:
        server_pod.remove()
