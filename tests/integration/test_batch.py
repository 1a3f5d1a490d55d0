"""Batch prediction as Kubernetes runs it: `python -m jobs.batch_predict`, real files, real models."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from benchmarks.servers import ROOT
from bentos.training.data import load_builtin

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def run_job(env, *args, check: int | None = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.batch_predict", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def iris(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """n rows of iris-like data (tiled and jittered), with an id column the job must ignore."""
    base = load_builtin("iris").features
    rng = np.random.default_rng(seed)
    frame = base.iloc[np.arange(n) % len(base)].reset_index(drop=True)
    frame = frame + rng.normal(0, 0.05, frame.shape).round(3)
    return frame.assign(customer_id=np.arange(n))


def online_predictions(server, route: str, data: pd.DataFrame) -> dict:
    """The service's answers for `data`, in requests within its row limit."""
    merged: dict = {"predictions": [], "probabilities": []}
    for start in range(0, len(data), 40):
        rows = data[FEATURES].iloc[start : start + 40].to_dict(orient="records")
        body = httpx.post(server.url + route, json={"instances": rows}).json()
        merged["predictions"] += body["predictions"]
        merged["probabilities"] += body["probabilities"]
        merged["model"] = body["model"]
    return merged


def read_parts(out: Path) -> pd.DataFrame:
    parts = sorted(out.glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=["source_file", "source_row", "prediction"])
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return frame.sort_values(["source_file", "source_row"]).reset_index(drop=True)


def manifests(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("_SUCCESS-*.json"))]


def test_csv_predictions_equal_the_online_service(job_env, server, tmp_path):
    data = iris(120)
    data.to_csv(tmp_path / "in.csv", index=False)
    proc = run_job(job_env, "--input", tmp_path / "in.csv", "--output", tmp_path / "out")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["event"] == "summary" and summary["rows_written"] == 120

    out = read_parts(tmp_path / "out")
    assert out["source_row"].tolist() == list(range(120))
    assert set(out["source_file"]) == {f"file://{tmp_path / 'in.csv'}"}
    online = online_predictions(server, "/predict", data)
    assert out["prediction"].tolist() == online["predictions"]
    np.testing.assert_allclose(np.stack(out["probabilities"]), online["probabilities"], atol=1e-5)
    assert set(out["model"]) == {online["model"]}


def test_keep_copies_the_named_columns_beside_each_prediction_with_their_types(job_env, tmp_path):
    data = iris(50).assign(region=lambda f: np.where(f.index % 2, "north", "south"))
    data.to_parquet(tmp_path / "in.parquet")
    run_job(
        job_env,
        "--input",
        tmp_path / "in.parquet",
        "--output",
        tmp_path / "out",
        "--keep",
        "customer_id,region",
    )
    out = read_parts(tmp_path / "out")
    assert list(out.columns[:4]) == ["source_file", "source_row", "customer_id", "region"]
    assert out["customer_id"].tolist() == list(range(50))  # integers, as the input has them
    assert out["region"].tolist() == data["region"].tolist()
    # iris has no identifier column: by default nothing is copied.
    run_job(job_env, "--input", tmp_path / "in.parquet", "--output", tmp_path / "default")
    assert "customer_id" not in read_parts(tmp_path / "default").columns
    proc = run_job(
        job_env,
        "--input",
        tmp_path / "in.parquet",
        "--output",
        tmp_path / "bad",
        "--keep",
        "nope",
        check=2,
    )
    assert "--keep: column(s) 'nope' not in" in proc.stdout + proc.stderr


def test_edge_model_in_batch_equals_predict_edge(job_env, server, tmp_path):
    data = iris(40)
    data.to_parquet(tmp_path / "in.parquet")
    run_job(
        job_env, "--input", tmp_path / "in.parquet", "--output", tmp_path / "out", "--model", "edge"
    )
    out = read_parts(tmp_path / "out")
    online = online_predictions(server, "/predict_edge", data)
    assert out["prediction"].tolist() == online["predictions"]
    assert set(out["model"]) == {online["model"]}


@pytest.fixture
def mixed_input(tmp_path) -> Path:
    """A folder of several files: CSVs and Parquet files with many row groups."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    iris(300, 1).to_csv(folder / "a.csv", index=False)
    pq.write_table(
        __import__("pyarrow").Table.from_pandas(iris(500, 2)),
        folder / "b.parquet",
        row_group_size=64,
    )
    iris(77, 3).to_csv(folder / "sub" / "c.csv", index=False)
    pq.write_table(__import__("pyarrow").Table.from_pandas(iris(10, 4)), folder / "d.pq")
    (folder / "_ignored.csv").write_text("not,data\n")
    return folder


def test_folder_of_csv_and_parquet_is_scored_whole(job_env, mixed_input, tmp_path):
    run_job(job_env, "--input", mixed_input, "--output", tmp_path / "out", "--chunk-rows", 50)
    out = read_parts(tmp_path / "out")
    assert len(out) == 300 + 500 + 77 + 10
    assert out.groupby("source_file").size().to_dict() == {
        f"file://{mixed_input / 'a.csv'}": 300,
        f"file://{mixed_input / 'b.parquet'}": 500,
        f"file://{mixed_input / 'd.pq'}": 10,
        f"file://{mixed_input / 'sub' / 'c.csv'}": 77,
    }
    (m,) = manifests(tmp_path / "out")
    assert (m["rows_read"], m["rows_written"], m["rows_rejected"]) == (887, 887, 0)
    assert [i["url"].rsplit("/", 1)[1] for i in m["inputs"]] == [
        "a.csv",
        "b.parquet",
        "d.pq",
        "c.csv",
    ]
    assert all(i["size"] > 0 and "mtime" in i for i in m["inputs"])
    assert m["duration_s"] >= 0 and m["model"].startswith("rf-classifier:")


def test_glob_input_selects_matching_files(job_env, mixed_input, tmp_path):
    run_job(job_env, "--input", f"{mixed_input}/*.csv", "--output", tmp_path / "out")
    assert len(read_parts(tmp_path / "out")) == 300


def test_shards_are_disjoint_and_their_union_is_the_unsharded_run(job_env, mixed_input, tmp_path):
    run_job(job_env, "--input", mixed_input, "--output", tmp_path / "whole", "--chunk-rows", 40)
    whole = read_parts(tmp_path / "whole")
    env = dict(job_env)
    for index in range(3):
        # As in an Indexed Job: the index and the count come from the environment.
        env.update(JOB_COMPLETION_INDEX=str(index), BENTOS_SHARD_COUNT="3")
        run_job(env, "--input", mixed_input, "--output", tmp_path / "sharded", "--chunk-rows", 40)
    sizes = [len(pd.read_parquet(p)) for p in sorted((tmp_path / "sharded").glob("part-*"))]
    assert len(sizes) == 3 and all(s > 0 for s in sizes)
    union = read_parts(tmp_path / "sharded")
    assert not union.duplicated(["source_file", "source_row"]).any()
    pd.testing.assert_frame_equal(
        union[["source_file", "source_row", "prediction"]],
        whole[["source_file", "source_row", "prediction"]],
    )


def test_rerun_skips_complete_shards(job_env, mixed_input, tmp_path):
    run_job(job_env, "--input", mixed_input, "--output", tmp_path / "out")
    before = (tmp_path / "out" / "part-00000-of-00001.parquet").stat().st_mtime_ns
    proc = run_job(job_env, "--input", mixed_input, "--output", tmp_path / "out")
    assert '"event": "skipped"' in proc.stdout
    assert (tmp_path / "out" / "part-00000-of-00001.parquet").stat().st_mtime_ns == before


def test_output_of_another_shard_count_is_refused(job_env, mixed_input, tmp_path):
    run_job(job_env, "--input", mixed_input, "--output", tmp_path / "out")
    proc = run_job(
        job_env, "--input", mixed_input, "--output", tmp_path / "out", "--shard-count", 2, check=2
    )
    assert "already holds a run with 1 shards" in proc.stdout


def _big_input(folder: Path, files: int = 4, rows: int = 40_000) -> int:
    folder.mkdir()
    for k in range(files):
        pq.write_table(
            __import__("pyarrow").Table.from_pandas(iris(rows, k)),
            folder / f"p{k}.parquet",
            row_group_size=5_000,
        )
    return files * rows


def kill_midway(args: list, env: dict, out: Path, at_bytes: int) -> None:
    """Start the job and SIGKILL it once its unpublished part has grown to `at_bytes`: a point
    in its work, not in time, so that the kill lands mid-write however loaded the machine."""
    proc = subprocess.Popen(
        list(map(str, args)),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the job finished before the kill: make the input larger"
        parts = [p for p in out.glob("_tmp/*.parquet") if not p.name.endswith(".rejected.parquet")]
        try:
            if parts and parts[0].stat().st_size >= at_bytes:
                break
        except FileNotFoundError:  # published between the glob and the stat
            pass
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _part_bytes(args: list, env: dict, out: Path) -> int:
    """The size of the part an uninterrupted run publishes (the kills' scale)."""
    run_job(env, *args[3:])
    (part,) = out.glob("part-*.parquet")
    return part.stat().st_size


def test_kill_9_midway_then_rerun_scores_every_row_exactly_once(job_env, tmp_path):
    total = _big_input(tmp_path / "in")
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "jobs.batch_predict",
        "--input",
        tmp_path / "in",
        "--output",
        out,
        "--chunk-rows",
        200,
        "--shard-count",
        2,
    ]
    rng = random.Random(7)
    module, ref = args[:3], tmp_path / "reference"
    one_shard = [*module, "--input", tmp_path / "in", "--output", ref, "--chunk-rows", 200]
    whole = _part_bytes(one_shard, job_env, ref)
    for index in range(2):
        at = int(rng.uniform(0.05, 0.35) * whole)  # a shard's part is about half the whole
        kill_midway([*args, "--shard-index", index], job_env, out, at)
    # Whatever the kill left is never a visible partial part: only whole parts or none.
    for part in out.glob("part-*.parquet"):
        pq.read_metadata(part)
    assert not manifests(out)
    for index in range(2):
        run_job(job_env, *args[3:], "--shard-index", index)
    union = read_parts(out)
    assert len(union) == total
    assert not union.duplicated(["source_file", "source_row"]).any()
    assert list((out / "_tmp").iterdir()) == []


def test_bad_rows_go_to_rejected_with_reasons(job_env, tmp_path):
    data = iris(200).astype(object)
    data.loc[5, "sepal_width"] = "wide"
    data.loc[17, "petal_length"] = None  # an empty cell: a missing value, predicted
    data.loc[23, "petal_width"] = "inf"
    data.to_csv(tmp_path / "in.csv", index=False)
    with open(tmp_path / "in.csv", "a") as fh:
        fh.write("1.0,2.0\n")  # a malformed line: row 200
    run_job(
        job_env,
        "--input",
        tmp_path / "in.csv",
        "--output",
        tmp_path / "out",
        "--max-reject-fraction",
        0.05,
    )
    rejected = pd.read_parquet(tmp_path / "out" / "rejected").sort_values("source_row")
    assert rejected["source_row"].tolist() == [5, 23, 200]
    reasons = rejected["reason"].tolist()
    assert reasons[0] == "sepal_width: expected a number, got text 'wide'"
    assert reasons[1] == "petal_width: expected a finite number, got 'inf'"
    assert reasons[2] == "malformed CSV line (2 fields, expected 5)"
    out = read_parts(tmp_path / "out")
    assert len(out) == 198 and not out["source_row"].isin([5, 23, 200]).any()
    assert out["source_row"].isin([17]).any()
    (m,) = manifests(tmp_path / "out")
    assert (m["rows_read"], m["rows_written"], m["rows_rejected"]) == (201, 198, 3)


def test_too_many_rejected_rows_exit_3_and_publish_no_part(job_env, tmp_path):
    data = iris(100).astype(object)
    data.loc[:9, "sepal_length"] = "?"
    data.to_csv(tmp_path / "in.csv", index=False)
    proc = run_job(
        job_env,
        "--input",
        tmp_path / "in.csv",
        "--output",
        tmp_path / "out",
        "--max-reject-fraction",
        0.05,
        check=3,
    )
    assert "10 of 100 rows rejected" in proc.stdout
    assert not list((tmp_path / "out").glob("part-*")) and not manifests(tmp_path / "out")
    assert len(pd.read_parquet(tmp_path / "out" / "rejected")) == 10
    failed = json.loads(next((tmp_path / "out").glob("_FAILED-*.json")).read_text())
    assert failed["status"] == "failed" and failed["reject_fraction"] == 0.1


def test_missing_feature_column_exits_2_naming_it(job_env, tmp_path):
    iris(10).drop(columns=["petal_width"]).to_csv(tmp_path / "in.csv", index=False)
    proc = run_job(job_env, "--input", tmp_path / "in.csv", "--output", tmp_path / "out", check=2)
    assert "missing column(s) 'petal_width'" in proc.stdout


def test_truncated_parquet_fails_the_shard_naming_the_file(job_env, tmp_path):
    iris(100).to_parquet(tmp_path / "in.parquet")
    raw = (tmp_path / "in.parquet").read_bytes()
    (tmp_path / "in.parquet").write_bytes(raw[: len(raw) // 2])
    proc = run_job(
        job_env, "--input", tmp_path / "in.parquet", "--output", tmp_path / "out", check=1
    )
    assert "in.parquet: cannot be read as parquet" in proc.stdout
    assert not manifests(tmp_path / "out")


def test_no_input_and_bad_shard_are_usage_errors(job_env, tmp_path):
    proc = run_job(job_env, "--input", tmp_path / "nope", "--output", tmp_path / "out", check=2)
    assert "no such file or directory" in proc.stdout
    proc = run_job(
        job_env,
        "--input",
        tmp_path,
        "--output",
        tmp_path / "o",
        "--shard-index",
        3,
        "--shard-count",
        2,
        check=2,
    )
    assert "shard index 3" in proc.stderr


def test_models_come_from_the_bento_when_bento_path_is_set(job_env, trained, tmp_path):
    """The Bento image layout (models under $BENTO_PATH/models, as containerize copies them);
    the container itself cannot be built here, so the layout is made the way containerize does."""
    from _bentoml_sdk.models import BentoModel

    bento = tmp_path / "bento"
    for tag in (trained.rf_tag, trained.tflite_tag):
        BentoModel(tag).resolve(bento / "models")
    iris(30).to_csv(tmp_path / "in.csv", index=False)
    env = {**job_env, "BENTO_PATH": str(bento), "BENTOML_HOME": str(tmp_path / "empty-home")}
    env.pop("BENTOS_RF_MODEL")  # :latest, resolved in the Bento's own store
    run_job(env, "--input", tmp_path / "in.csv", "--output", tmp_path / "out")
    assert set(read_parts(tmp_path / "out")["model"]) == {trained.rf_tag}
    shutil.rmtree(bento / "models" / "rf-classifier")
    proc = run_job(env, "--input", tmp_path / "in.csv", "--output", tmp_path / "out2", check=4)
    assert "nor the Bento's models" in proc.stdout


def test_the_default_packed_forest_in_batch_equals_scikit_learn(job_env, tmp_path):
    """The job's default backend against scikit-learn's own forest, on a few thousand rows
    spread around the training data: the same labels, and probabilities within training's
    parity gate (1e-5, bentos.training.pipeline)."""
    iris(3000, 5).to_parquet(tmp_path / "in.parquet")
    run_job(job_env, "--input", tmp_path / "in.parquet", "--output", tmp_path / "packed")
    run_job(
        job_env,
        *("--input", tmp_path / "in.parquet", "--output", tmp_path / "sk"),
        *("--rf-backend", "sklearn"),
    )
    sk, packed = read_parts(tmp_path / "sk"), read_parts(tmp_path / "packed")
    assert len(packed) == 3000
    assert sk["prediction"].tolist() == packed["prediction"].tolist()
    np.testing.assert_allclose(
        np.stack(sk["probabilities"]), np.stack(packed["probabilities"]), atol=1e-5, rtol=0
    )


@pytest.fixture
def input_with_bad_rows(mixed_input) -> Path:
    """mixed_input, and a CSV with bad cells and malformed lines spread over its chunks."""
    data = iris(400, 9).astype(object)
    for row in (3, 41, 42, 170, 399):
        data.loc[row, "petal_width"] = "n/a"
    data.to_csv(mixed_input / "e.csv", index=False)
    with open(mixed_input / "e.csv", "a") as fh:
        fh.write("1.0,2.0\n")  # row 400, malformed
    return mixed_input


def test_threads_write_the_same_parts_as_one_thread_bit_for_bit(
    job_env, input_with_bad_rows, tmp_path
):
    outs = {}
    for threads in (1, 3):
        outs[threads] = out = tmp_path / f"threads-{threads}"
        run_job(
            job_env,
            *("--input", input_with_bad_rows, "--output", out, "--chunk-rows", 30),
            *("--threads", threads, "--max-reject-fraction", 0.1),
        )
    for name in ("part-00000-of-00001.parquet", "rejected/part-00000-of-00001.parquet"):
        assert (outs[3] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    one, three = manifests(outs[1])[0], manifests(outs[3])[0]
    counts = ("rows_read", "rows_written", "rows_rejected")
    assert [three[k] for k in counts] == [one[k] for k in counts] == [1288, 1282, 6]
    rejected = pd.read_parquet(outs[3] / "rejected")
    assert sorted(rejected["source_row"]) == [3, 41, 42, 170, 399, 400]  # each exactly once


def test_threaded_progress_counts_rows_done_of_the_total(job_env, tmp_path):
    _big_input(tmp_path / "in", files=2, rows=20_000)
    proc = run_job(
        {**job_env, "BENTOS_LOG_FORMAT": "json"},
        *("--input", tmp_path / "in", "--output", tmp_path / "out", "--chunk-rows", 1000),
        *("--threads", 2),
    )
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    (started,) = [e for e in events if e["event"] == "started"]
    assert (started["total"], started["unit"], started["threads"]) == (40_000, "rows", 2)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(e["total"] == 40_000 for e in progress)
    done = [e["done"] for e in progress]
    assert done == sorted(done) and 0 < done[0] <= 40_000
    assert all(e["done"] == e["rows_read"] for e in progress)
    assert events[-1]["event"] == "summary" and events[-1]["rows_written"] == 40_000


def test_five_kills_at_random_points_then_reruns_lose_and_duplicate_nothing(job_env, tmp_path):
    total = _big_input(tmp_path / "in")
    rng = random.Random(11)

    def job(out: Path) -> list:
        module = [sys.executable, "-m", "jobs.batch_predict"]
        return [*module, "--input", tmp_path / "in", "--output", out, "--chunk-rows", 200]

    # The kills land within the part an uninterrupted run writes, at random points of it.
    whole = _part_bytes(job(tmp_path / "reference"), job_env, tmp_path / "reference")
    for attempt in range(5):
        out = tmp_path / f"out{attempt}"
        args = job(out)
        kill_midway(args, job_env, out, int(rng.uniform(0.0, 0.7) * whole))
        assert not manifests(out)  # killed before it could finish
        run_job(job_env, *args[3:])
        union = read_parts(out)
        assert len(union) == total, attempt
        assert not union.duplicated(["source_file", "source_row"]).any(), attempt


@pytest.mark.parametrize(
    ("file", "flags"), [("forest.npz", []), ("saved_model.pkl", ["--rf-backend", "sklearn"])]
)
def test_a_changed_model_file_is_refused_by_the_batch_job(
    job_env, trained, bentoml_home, tmp_path, file, flags
):
    home = tmp_path / "home"
    shutil.copytree(bentoml_home / "models", home / "models")
    version = trained.rf_tag.split(":")[1]
    changed = home / "models" / "rf-classifier" / version / file
    changed.write_bytes(changed.read_bytes() + b"\0")
    iris(10).to_csv(tmp_path / "in.csv", index=False)
    env = {**job_env, "BENTOML_HOME": str(home)}
    args = ["--input", tmp_path / "in.csv", "--output", tmp_path / "out", *flags]
    proc = run_job(env, *args, check=4)
    assert f"model {trained.rf_tag}: {file} has sha256" in proc.stdout
    assert "refusing to load it" in proc.stdout
    assert not list((tmp_path / "out").glob("part-*"))


def test_a_worker_thread_failing_fails_the_shard_with_exit_1_and_publishes_nothing(
    trained, tmp_path
):
    """A real forest whose third chunk fails in its worker thread as a lost disk or mount
    would (OSError): the shard stops with the job's exit code for it (1, Kubernetes retries),
    nothing is published, no worker thread is left behind, and the rerun scores every row."""
    import itertools
    import threading

    from bentos.batch.shard import BatchConfig, run_shard
    from bentos.errors import ExitCode, exit_code
    from bentos.runners import RandomForestRunner

    class FailingOnce(RandomForestRunner):
        calls = itertools.count(1)  # next() is atomic: the workers share it

        def predict_proba(self, x):
            if next(self.calls) == 3:
                raise OSError("[Errno 5] Input/output error")
            return super().predict_proba(x)

    iris(2000, 6).to_parquet(tmp_path / "in.parquet", row_group_size=500)
    cfg = BatchConfig(
        str(tmp_path / "in.parquet"), str(tmp_path / "out"), chunk_rows=100, threads=3
    )
    before = threading.active_count()
    with pytest.raises(OSError, match="Input/output error") as raised:
        run_shard(cfg, FailingOnce(trained.rf_tag), lambda event: None)
    assert exit_code(raised.value) == ExitCode.IO == 1
    assert threading.active_count() == before
    out = tmp_path / "out"
    assert not list(out.glob("part-*")) and not manifests(out)
    assert not list((out / "rejected").glob("part-*"))
    manifest = run_shard(cfg, FailingOnce(trained.rf_tag), lambda event: None)  # past call 3
    assert manifest["rows_written"] == 2000 and len(read_parts(out)) == 2000


def test_the_default_thread_count_is_the_cpus_the_process_may_use(job_env, tmp_path):
    iris(50).to_parquet(tmp_path / "in.parquet")
    env = {**job_env, "BENTOS_LOG_FORMAT": "json"}
    args = [sys.executable, "-m", "jobs.batch_predict", "--input", tmp_path / "in.parquet"]
    proc = subprocess.run(  # pinned to one CPU, as a container limited to one core would be
        ["taskset", "-c", "0", *map(str, args), "--output", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = next(json.loads(line) for line in proc.stdout.splitlines() if '"started"' in line)
    assert started["threads"] == 1
    proc = run_job(env, *args[3:], "--output", tmp_path / "out2", "--threads", 3)
    started = next(json.loads(line) for line in proc.stdout.splitlines() if '"started"' in line)
    assert started["threads"] == 3
