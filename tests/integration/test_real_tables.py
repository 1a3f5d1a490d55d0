"""Real public tables (tests/support/tables.py: text categories, missing cells, identifier
columns, a rare class) through every door: trained from a CSV, then the same rows answered by
the JSON API (curl's way), BentoML's client, V2 REST and gRPC (one tensor per column), the
batch job and the edge example, with the same predictions for the same rows everywhere."""

from __future__ import annotations

import os
import subprocess
import sys

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
from bentos.schema.kinds import TRUE_WORDS
from bentos.serving.v2 import inputs
from bentos.training.pipeline import TrainConfig, train
from tests.support import SERVER_ENV
from tests.support.tables import DEFAULT, PENGUINS, TITANIC_NAMES, Table

# Rows asked at every door: a sample with missing cells among them, and one changed row each
# with an unseen category and an identifier it must ignore.
N_ROWS = 24
TABLES = {t.name: t for t in (TITANIC_NAMES, DEFAULT, PENGUINS)}


@pytest.fixture(scope="module", params=sorted(TABLES))
def real(request, tmp_path_factory, bentoml_home, serve):
    table: Table = TABLES[request.param]
    folder = tmp_path_factory.mktemp(table.name)
    frame = table.frame()
    frame.to_csv(folder / "table.csv", index=False)
    result = train(
        TrainConfig(data=str(folder / "table.csv"), target=table.target, n_estimators=30, epochs=20)
    )
    schema = schema_of(result.rf_tag)
    rows = _rows(frame.drop(columns=[table.target]), schema)
    rows.to_csv(folder / "rows.csv", index=False)
    pins = {"BENTOS_RF_MODEL": result.rf_tag, "BENTOS_TFLITE_MODEL": result.tflite_tag}
    http = serve({**SERVER_ENV, **pins}).wait_ready()
    grpc = grpc_serve({**SERVER_ENV, **pins}).wait_ready()
    yield {
        "table": table,
        "folder": folder,
        "rows": rows,
        "schema": schema,
        "result": result,
        "http": http,
        "grpc": grpc,
        "env": {**os.environ, "BENTOML_HOME": str(bentoml_home), **pins},
    }
    http.stop()
    grpc.stop()


def _rows(features: pd.DataFrame, schema) -> pd.DataFrame:
    missing = features.isna().any(axis=1).to_numpy()
    rng = np.random.default_rng(0)
    picked = np.concatenate(
        [np.flatnonzero(missing)[:8], rng.choice(np.flatnonzero(~missing), N_ROWS - 8, False)]
    )
    rows = features.iloc[np.sort(picked)].reset_index(drop=True)
    categorical = [c.name for c in schema.columns if c.kind == "categorical"]
    if categorical:
        rows = rows.astype({categorical[0]: object})
        rows.loc[0, categorical[0]] = "never seen in training"
    return rows


def _instances(rows: pd.DataFrame) -> list[dict]:
    """The rows as a client sends JSON: missing cells null, numbers as numbers, text as text."""
    records = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]


def _json(real, route: str) -> dict:
    resp = httpx.post(real["http"].url + route, json={"instances": _instances(real["rows"])})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_the_kinds_are_in_the_schema_both_models_serve(real):
    schema = real["schema"]
    assert "identifier" in {c.kind for c in schema.columns}  # a row key, and not a feature
    assert set(schema.names) == {c.name for c in schema.columns if c.is_feature}
    models = {m["name"]: m for m in httpx.get(real["http"].url + "/models").json()["models"]}
    for model in models.values():
        assert model["schema"]["columns"] == [c.to_dict() for c in schema.columns]
        assert model["schema"]["target"] == real["table"].target


def test_rare_classes_are_weighed_and_the_models_beat_the_majority_class(real):
    meta = bentoml.models.get(real["result"].rf_tag).info.metadata
    for metrics in (real["result"].rf_metrics, real["result"].tflite_metrics):
        assert metrics["f1_macro"] >= metrics["baseline"]["f1_macro"] + 0.05
    # Default has 3% positives: balanced; the penguins' and passengers' classes are not rare.
    assert meta["class_weight"] == ("balanced" if real["table"] is DEFAULT else "none")


def test_json_and_bentoml_client_answer_the_same(real):
    body = _json(real, "/predict")
    assert len(body["predictions"]) == len(real["rows"])
    with bentoml.SyncHTTPClient(real["http"].url) as client:
        answer = client.predict(instances=_instances(real["rows"]))
    assert answer == body


def _tensors(module, rows: pd.DataFrame, schema) -> list:
    """One tensor per column, the datatypes the model's metadata lists (bentos.serving.v2)."""
    out = []
    for spec in inputs(schema):
        values = rows[spec["name"]]
        if spec["datatype"] == "BYTES":
            data = np.array([("" if pd.isna(v) else str(v)) for v in values], dtype=object)
        elif spec["datatype"] == "BOOL":
            data = np.array([str(v).strip().lower() in TRUE_WORDS for v in values])
        else:
            data = values.to_numpy(dtype=np.float64)
        tensor = module.InferInput(spec["name"], [len(rows)], spec["datatype"])
        tensor.set_data_from_numpy(data)
        out.append(tensor)
    return out


@pytest.mark.parametrize(("model", "route"), [("rf", "/predict"), ("tflite", "/predict_edge")])
def test_v2_rest_and_grpc_with_a_tensor_per_column_answer_as_json(real, model, route):
    want = np.array(_json(real, route)["probabilities"])
    rows, schema = real["rows"], real["schema"]
    with thttp.InferenceServerClient(real["http"].address) as client:
        got = client.infer(model, _tensors(thttp, rows, schema)).as_numpy("probabilities")
    np.testing.assert_allclose(got, want, atol=1e-6)
    with tgrpc.InferenceServerClient(real["grpc"].address) as client:
        got = client.infer(model, _tensors(tgrpc, rows, schema)).as_numpy("probabilities")
    np.testing.assert_allclose(got, want, atol=1e-6)


def _unknown_counts(real) -> dict[str, float]:
    counts = {}
    for line in httpx.get(real["http"].url + "/metrics").text.splitlines():
        if line.startswith("bentos_unknown_categories_total{") and 'model="rf"' in line:
            feature = line.split('feature="', 1)[1].split('"', 1)[0]
            counts[feature] = float(line.split()[-1])
    return counts


def test_unknown_categories_are_counted_by_model_and_feature(real):
    # What the schema's levels say is unknown among the rows (rare in training, or never seen).
    want = {}
    for column in real["schema"].columns:
        if column.kind == "categorical":
            values = real["rows"][column.name].dropna().astype(str)
            unknown = int((~values.isin(column.levels)).sum())
            if unknown:
                want[column.name] = unknown
    before = _unknown_counts(real)
    _json(real, "/predict")
    after = _unknown_counts(real)
    got = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    assert got == want
    assert want or real["table"] is DEFAULT  # every table with categories has a row that counts


def test_batch_predictions_equal_the_service_with_the_row_keys_beside_them(real, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.batch_predict",
            "--input",
            real["folder"] / "rows.csv",
            "--output",
            out,
        ],
        cwd=ROOT,
        env=real["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    part = pd.read_parquet(out / "part-00000-of-00001.parquet").sort_values("source_row")
    want = _json(real, "/predict")
    assert part["prediction"].astype(str).tolist() == [str(p) for p in want["predictions"]]
    np.testing.assert_allclose(np.stack(part["probabilities"]), want["probabilities"], atol=1e-6)
    identifiers = [n for n in real["schema"].identifiers if n in real["rows"].columns]
    assert identifiers and set(identifiers) <= set(part.columns)  # joins back by key


def test_the_edge_example_prints_the_services_answers(real, tmp_path):
    export_edge(tmp_path / "edge", real["result"].tflite_tag)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "edge_predict.py"),
            str(tmp_path / "edge"),
            str(real["folder"] / "rows.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    printed = pd.read_csv(pd.io.common.StringIO(proc.stdout))
    want = _json(real, "/predict_edge")
    assert printed["label"].astype(str).tolist() == [str(p) for p in want["predictions"]]
    np.testing.assert_allclose(printed.iloc[:, 1:].to_numpy(), want["probabilities"], atol=1e-5)


def test_a_value_of_the_wrong_kind_is_a_400_naming_row_and_field(real):
    numeric = next(f.name for f in real["schema"].features if f.kind == "numeric")
    rows = _instances(real["rows"])[:3]
    rows[2][numeric] = "not a number"
    resp = httpx.post(real["http"].url + "/predict", json={"instances": rows})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith(f"instances[2].{numeric}: expected a number")


def test_a_schema_changed_after_training_is_refused_at_load(trained, tmp_path):
    # A copy of the session forest's folder in a store of its own, a column's kind note edited
    # in its model.yaml: the schema's sha256 (recorded at registration) no longer matches, and
    # nothing loads it.
    import shutil

    tag = trained.rf_tag
    name, version = tag.split(":")
    folder = tmp_path / "models" / name / version
    shutil.copytree(bentoml.models.get(tag).path, folder)
    (tmp_path / "models" / name / "latest").write_text(version)
    import yaml

    info = yaml.safe_load((folder / "model.yaml").read_text())
    info["metadata"]["schema"]["columns"][0]["why"] = "edited after training"
    (folder / "model.yaml").write_text(yaml.safe_dump(info))
    proc = subprocess.run(
        [sys.executable, "-c", f"from bentos.models import open_model; open_model({tag!r})"],
        cwd=ROOT,
        env={**os.environ, "BENTOML_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "its feature schema was changed after training" in proc.stderr
