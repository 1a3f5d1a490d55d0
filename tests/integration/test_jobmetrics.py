"""The jobs' figures on a real Prometheus Pushgateway (Debian's prometheus-pushgateway): a batch
shard and a retrain run push rows, duration, success, model versions and the last success time,
grouped by job and shard; a failed run says so without losing the last success; a gateway that
cannot be reached leaves the run's own result (and its summary) as it was."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.servers import free_port
from bentos import jobmetrics
from tests.integration.test_batch import iris, run_job

GATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"


@pytest.fixture
def pushgateway(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        # Debian's build persists to /var/lib/prometheus by default: this one keeps to itself.
        [
            GATEWAY,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={tmp_path / 'gateway.data'}",
        ],
        stdout=(tmp_path / "gateway.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail((tmp_path / "gateway.log").read_text())
    yield url
    proc.terminate()
    proc.wait(10)


def _series(url: str) -> dict[tuple[str, frozenset], float]:
    """(name, labels) -> value of every bentos_job_* sample the gateway holds."""
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("bentos_job_")
    }


def _of(series, name: str, **labels: str) -> float:
    want = frozenset(labels.items())
    found = [v for (n, lab), v in series.items() if n == name and want <= lab]
    assert len(found) == 1, (name, labels, series)
    return found[0]


def test_a_batch_shard_pushes_its_figures_grouped_by_job_and_shard(job_env, tmp_path, pushgateway):
    iris(200).to_parquet(tmp_path / "in.parquet", row_group_size=100)
    env = {**job_env, "BENTOS_PUSHGATEWAY": pushgateway}
    started = time.time()
    for shard in ("0", "1"):
        run_job(
            env,
            "--input",
            tmp_path / "in.parquet",
            "--output",
            tmp_path / "out",
            "--shard-count",
            "2",
            "--shard-index",
            shard,
        )
    series = _series(pushgateway)
    version = job_env["BENTOS_RF_MODEL"].split(":")[1]
    for shard in ("0", "1"):
        group = {"job": "bentos-batch", "shard": shard}
        assert _of(series, "bentos_job_rows", kind="read", **group) == 100
        assert _of(series, "bentos_job_rows", kind="written", **group) == 100
        assert _of(series, "bentos_job_rows", kind="rejected", **group) == 0
        assert _of(series, "bentos_job_success", **group) == 1
        assert _of(series, "bentos_job_duration_seconds", **group) > 0
        assert _of(series, "bentos_job_last_success_timestamp_seconds", **group) >= started - 1
        assert (
            _of(series, "bentos_job_model_info", model="rf-classifier", version=version, **group)
            == 1
        )


def test_a_failed_shard_pushes_success_0_and_keeps_the_last_success_time(
    job_env, tmp_path, pushgateway
):
    env = {**job_env, "BENTOS_PUSHGATEWAY": pushgateway}
    good = iris(50)
    good.to_csv(tmp_path / "good.csv", index=False)
    run_job(env, "--input", tmp_path / "good.csv", "--output", tmp_path / "out1")
    succeeded = _of(
        _series(pushgateway), "bentos_job_last_success_timestamp_seconds", job="bentos-batch"
    )
    bad = good.astype({"sepal_length": object})
    bad.loc[:9, "sepal_length"] = "n/a"  # 10 of 50 rows rejected, more than 1%
    bad.to_csv(tmp_path / "bad.csv", index=False)
    proc = run_job(env, "--input", tmp_path / "bad.csv", "--output", tmp_path / "out2", check=3)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["metrics"]["success"] is False
    # Nothing was published: the 40 valid rows are not written (the manifest's rows_valid).
    assert summary["metrics"]["rows"] == {"read": 50, "written": 0, "rejected": 10}
    series = _series(pushgateway)
    assert _of(series, "bentos_job_success", job="bentos-batch") == 0
    assert _of(series, "bentos_job_rows", job="bentos-batch", kind="rejected") == 10
    assert _of(series, "bentos_job_last_success_timestamp_seconds", job="bentos-batch") == succeeded


def test_an_unreachable_gateway_leaves_the_shard_s_result_and_summary(job_env, tmp_path):
    iris(50).to_csv(tmp_path / "in.csv", index=False)
    env = {**job_env, "BENTOS_PUSHGATEWAY": f"http://127.0.0.1:{free_port()}"}
    proc = run_job(env, "--input", tmp_path / "in.csv", "--output", tmp_path / "out")
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["metrics"]["rows"]["written"] == 50
    (failed,) = [e for e in events if e["event"] == "push_failed"]
    assert "pushgateway http://127.0.0.1:" in failed["message"]
    assert (tmp_path / "out" / "_SUCCESS-00000-of-00001.json").exists()


def test_the_exposition_of_a_summary_is_what_a_push_sends(pushgateway):
    figures = jobmetrics.figures(
        rows={"read": 7},
        duration_s=1.5,
        success=True,
        models={"rf-classifier": "v1"},
        finished_at=1_800_000_000.0,
    )
    jobmetrics.push(pushgateway, "retrain", figures)
    pushed = {(n, lab): v for (n, lab), v in _series(pushgateway).items()}
    local = {
        (s.name, frozenset({**s.labels, "job": "bentos-retrain", "instance": ""}.items())): s.value
        for family in text_string_to_metric_families(jobmetrics.exposition(figures).decode())
        for s in family.samples
    }
    assert pushed == local
