"""The prediction log through every door, on a real S3-compatible server (moto): a real
`bentoml serve` over HTTP (the JSON API and V2 REST), the real gRPC server, and the batch job.
Each door answers with the request id it logged under; the rows come back from the log as
they were sent, with the answers the clients saw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from bentos.monitoring.predlog import read_window
from tests.support.objectstore import ObjectStore, moto_server

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def s3() -> ObjectStore:
    with moto_server("bentos-prediction-log") as store:
        yield store


def _window(s3: ObjectStore, prefix: str, env: dict) -> pd.DataFrame:
    # Read in a process with the store's credentials, as `bentos monitor` would.
    code = (
        "import sys; from datetime import datetime, timedelta, UTC\n"
        "from bentos.monitoring.predlog import inputs, read_window\n"
        "t = read_window(sys.argv[1], datetime.now(UTC) - timedelta(minutes=10))\n"
        "f = t.drop_columns(['input', 'body']).to_pandas()\n"
        "f['input'] = inputs(t)\n"
        "print(f.to_json(orient='records'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, f"s3://{s3.bucket}/{prefix}"],
        env={**os.environ, **env, **s3.credentials},
        capture_output=True,
        text=True,
        check=True,
    )
    return pd.DataFrame(json.loads(out.stdout))


def _log_metrics(url: str) -> tuple[float, float]:
    """(rows written, the writing threads' CPU seconds) from the server's /metrics."""
    found = {"written": 0.0, "cpu": 0.0}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name == "bentos_prediction_log_rows_total":
                if sample.labels.get("outcome") == "written":
                    found["written"] += sample.value
            elif sample.name == "bentos_prediction_log_writer_cpu_seconds_total":
                found["cpu"] += sample.value
    return found["written"], found["cpu"]


def test_http_requests_are_logged_under_the_id_the_answer_carries(serve, pinned, s3):
    env = {**pinned, **s3.credentials, "BENTOS_PREDICTION_LOG": f"s3://{s3.bucket}/http"}
    srv = serve({**env, "BENTOS_PREDICTION_LOG_PART_SECONDS": "1"}).wait_ready()
    try:
        mine = httpx.post(
            srv.url + "/predict",
            json={"instances": [ROW, {**ROW, "petal_length": 5.0}]},
            headers={"x-request-id": "client-id-1"},
        )
        assert mine.status_code == 200 and mine.headers["x-request-id"] == "client-id-1"
        theirs = httpx.post(srv.url + "/predict_edge", json={"instances": [ROW]})
        generated = theirs.headers["x-request-id"]
        assert len(generated) == 32
        v2 = httpx.post(
            srv.url + "/v2/models/rf/infer",
            json={
                "inputs": [
                    {
                        "name": "features",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "data": list(ROW.values()),
                    }
                ]
            },
            headers={"x-request-id": "client-id-v2"},
        )
        assert v2.status_code == 200 and v2.headers["x-request-id"] == "client-id-v2"
        bad = httpx.post(srv.url + "/predict", json={"instances": [{"sepal_length": "x"}]})
        assert bad.status_code == 400
        # A part is due a second after its first row: /metrics counts its rows and the CPU
        # its writing took (every worker's, added up).
        written, cpu = _log_metrics(srv.url)
        deadline = time.monotonic() + 15
        while written < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
            written, cpu = _log_metrics(srv.url)
        assert written == 4 and cpu > 0
    finally:
        srv.stop()  # a stopped server writes what it holds
    log = _window(s3, "http", env)
    assert sorted(set(log["request_id"])) == sorted({"client-id-1", generated, "client-id-v2"})
    first = log[log["request_id"] == "client-id-1"].sort_values("row")
    assert first["input"].tolist() == [ROW, {**ROW, "petal_length": 5.0}]
    assert first["prediction"].tolist() == mine.json()["predictions"]
    np.testing.assert_allclose(
        np.stack(first["probabilities"].tolist()), mine.json()["probabilities"], rtol=1e-6
    )
    assert set(log["source"]) == {"http"}
    assert set(log["model"]) == {pinned["BENTOS_RF_MODEL"], pinned["BENTOS_TFLITE_MODEL"]}
    v2_row = log[log["request_id"] == "client-id-v2"]["input"].iloc[0]
    assert v2_row == pytest.approx(ROW)


def test_grpc_calls_are_logged_and_answer_their_request_id(grpc_start, s3):
    env = {**s3.credentials, "BENTOS_PREDICTION_LOG": f"s3://{s3.bucket}/grpc"}
    srv = grpc_start(**env, BENTOS_GRPC_WORKERS="1")
    request = pb.ModelInferRequest(model_name="rf")
    request.inputs.add(name="features", datatype="FP32", shape=[3, 4])
    request.raw_input_contents.append(
        np.tile(np.array(list(ROW.values()), np.float32), (3, 1)).tobytes()
    )
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ModelInfer.with_call(request, metadata=(("x-request-id", "grpc-id-1"),))
        assert dict(call.initial_metadata())["x-request-id"] == "grpc-id-1"
        _, call = stub.ModelInfer.with_call(request)
        generated = dict(call.initial_metadata())["x-request-id"]
    srv.stop()
    log = _window(s3, "grpc", env)
    assert set(log["request_id"]) == {"grpc-id-1", generated} and len(log) == 6
    assert set(log["source"]) == {"grpc"}
    assert log["input"].iloc[0] == pytest.approx(ROW)


def test_the_batch_job_logs_a_sample_of_its_rows_by_file_and_row(job_env, s3, tmp_path):
    rows = pd.DataFrame([ROW] * 2000)
    rows.to_csv(tmp_path / "in.csv", index=False)
    env = {
        **job_env,
        **s3.credentials,
        "BENTOS_PREDICTION_LOG": f"s3://{s3.bucket}/batch",
        "BENTOS_PREDICTION_LOG_SAMPLE": "0.1",
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.batch_predict",
            "--input",
            str(tmp_path / "in.csv"),
            "--output",
            str(tmp_path / "out"),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    log = _window(s3, "batch", env)
    # A 10% sample of 2,000 rows: 200 expected; 120..280 is more than 6 standard deviations.
    assert 120 <= len(log) <= 280
    assert log["request_id"].str.match(r".*in\.csv#\d+$").all()
    assert log["request_id"].is_unique and set(log["source"]) == {"batch"}
    out = pd.read_parquet(tmp_path / "out" / "part-00000-of-00001.parquet")
    by_row = dict(zip(out["source_row"], out["prediction"], strict=True))
    for rid, label in zip(log["request_id"], log["prediction"], strict=True):
        assert by_row[int(rid.rsplit("#", 1)[1])] == label


def test_a_window_reads_nothing_from_an_empty_log(tmp_path):
    assert read_window(str(tmp_path), datetime.now(UTC) - timedelta(hours=1)).num_rows == 0
