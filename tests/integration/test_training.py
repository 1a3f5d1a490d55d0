from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np
import pytest

from bentos import models
from bentos.errors import ConversionError, GateError
from bentos.runners import RandomForestRunner, TFLiteRunner
from bentos.training.data import load_builtin
from bentos.training.pipeline import TrainConfig, train
from bentos.training.tflite import Parity
from tests.support import FAST


def _tags(name: str) -> set[str]:
    return {str(m.tag) for m in bentoml.models.list(name)}


def test_iris_is_offline_with_snake_case_features_and_named_classes():
    ds = load_builtin("iris")
    assert list(ds.features.columns) == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert sorted(ds.target.unique()) == ["setosa", "versicolor", "virginica"]


def test_synthetic_is_the_benchmark_workload():
    ds = load_builtin("synthetic")
    assert ds.features.shape == (20000, 20)
    assert list(ds.features.columns) == [f"f{i}" for i in range(20)]
    assert sorted(ds.target.unique()) == [0, 1, 2]


def test_rf_is_registered_with_metrics_schema_and_hashes(trained):
    model = bentoml.models.get(trained.rf_tag)
    meta = model.info.metadata
    assert model.info.module == "bentoml.sklearn"
    assert set(meta["metrics"]) >= {"accuracy", "f1_macro", "per_class"}
    assert set(meta["metrics"]["per_class"]) == {"setosa", "versicolor", "virginica"}
    assert meta["schema"]["labels"] == ["setosa", "versicolor", "virginica"]
    assert meta["schema"]["features"][0]["name"] == "sepal_length"
    first = meta["schema"]["features"][0]
    assert first["dtype"] == "float64" and first["min"] == 4.3 and first["max"] == 7.9
    assert meta["sklearn_version"]
    assert meta["sha256"] == models.sha256_file(model.path_of(models.RF_FILE))
    assert len(meta["training_data"]["sha256"]) == 64
    assert meta["params"]["n_estimators"] == FAST["n_estimators"]
    assert meta["params"]["n_jobs_serving"] == 1
    assert RandomForestRunner(trained.rf_tag, "sklearn")._impl.n_jobs == 1
    for filename, form in models.RF_FORMS.items():
        assert meta[form]["sha256"] == models.sha256_file(model.path_of(filename))
        parity = meta[form]["parity"]
        assert parity["labels_identical"] and parity["max_abs_diff"] <= 1e-5, form


def test_the_packed_forest_predicts_like_scikit_learn(trained):
    x = load_builtin("iris").features.to_numpy()
    served, sk = (
        RandomForestRunner(trained.rf_tag, "packed"),
        RandomForestRunner(trained.rf_tag, "sklearn"),
    )
    p_served, p_sk = served.predict_proba(x), sk.predict_proba(x)
    assert served.labels_for(p_served) == sk.labels_for(p_sk)
    np.testing.assert_allclose(p_served, p_sk, atol=1e-5)


def test_tflite_is_registered_with_quantization_sizes_and_parity(trained):
    model = bentoml.models.get(trained.tflite_tag)
    meta = model.info.metadata
    content = Path(model.path_of(models.TFLITE_FILE)).read_bytes()
    assert meta["quantization"] == "dynamic"
    assert meta["size_bytes"] == len(content)
    assert meta["float32_size_bytes"] > 0
    assert meta["parity"]["argmax_agreement"] >= 0.99
    assert meta["parity"]["accuracy_drop"] <= 0.01
    assert meta["sha256"] == models.sha256_file(model.path_of(models.TFLITE_FILE))
    assert meta["schema"] == bentoml.models.get(trained.rf_tag).info.metadata["schema"]
    assert meta["tensors"]["inputs"][0]["shape"] == [-1, 4]


def test_registered_models_reach_their_recorded_accuracy(trained):
    ds = load_builtin("iris")
    x = ds.features.to_numpy()
    rf, lite = RandomForestRunner(trained.rf_tag), TFLiteRunner(trained.tflite_tag)
    for runner in (rf, lite):
        labels = runner.labels_for(runner.predict_proba(x))
        # Over all 150 rows (train + hold-out) both models are well above chance.
        assert np.mean(np.array(labels) == ds.target.to_numpy()) > 0.8


def test_same_seed_and_data_give_the_same_metrics(trained):
    again = train(TrainConfig(**FAST))
    assert again.rf_metrics == trained.rf_metrics
    assert again.tflite_metrics == trained.tflite_metrics
    assert again.parity == trained.parity


@pytest.mark.parametrize("mode", ["float16", "int8"])
def test_other_quantization_modes_pass_their_parity_gates(trained, mode):
    result = train(TrainConfig(quantize=mode, **FAST))
    meta = bentoml.models.get(result.tflite_tag).info.metadata
    assert meta["quantization"] == mode
    if mode == "float16":
        assert meta["parity"]["max_abs_diff"] <= 1e-3
    else:
        inputs = meta["tensors"]["inputs"][0]
        assert inputs["dtype"] == "int8" and inputs["quantization"]["scale"] > 0
        assert meta["size_bytes"] < meta["float32_size_bytes"]


def test_failed_accuracy_gate_registers_nothing(trained):
    before = _tags("rf-classifier") | _tags("tflite-classifier")
    with pytest.raises(GateError, match=r"accuracy .* < --min-accuracy 0\.999"):
        train(TrainConfig(min_accuracy=0.999, **FAST))
    assert _tags("rf-classifier") | _tags("tflite-classifier") == before


def test_a_forest_that_cannot_be_packed_registers_nothing(trained, monkeypatch):
    # A forest too large for 8-byte nodes (over 16M features, or a tree of tens of millions of
    # nodes) cannot be trained here; the packer is made to refuse instead.
    from bentos.forest import PackError
    from bentos.training import packing

    def refuse(forest):
        raise PackError("a tree of 99 nodes is too large to pack with 2 feature bits")

    monkeypatch.setattr(packing, "pack", refuse)
    before = _tags("rf-classifier")
    with pytest.raises(ConversionError, match="RandomForest packing: a tree of 99 nodes"):
        train(TrainConfig(models=("rf",), **FAST))
    assert _tags("rf-classifier") == before


def test_parity_gate_names_each_failed_threshold():
    p = Parity(agreement=0.95, keras_accuracy=0.9, tflite_accuracy=0.85, max_abs_diff=0.01)
    failures = p.failures("float16")
    assert len(failures) == 3
    assert "agreement 0.9500 < 0.99" in failures[0]
    assert Parity(1.0, 0.9, 0.9, 0.01).failures("dynamic") == []


@pytest.mark.parametrize("which", ["rf", "tflite"])
def test_each_model_carries_its_reference_profile_sha256_checked(trained, which, tmp_path):
    import json
    import shutil

    from bentos.errors import ModelError

    tag = trained.rf_tag if which == "rf" else trained.tflite_tag
    stored = models.open_model(tag, models.REFERENCE_FILE)
    profile = json.loads(stored.file.read_text())
    assert set(profile["features"]) == set(stored.schema.matrix_names)
    assert profile["prediction"]["labels"] == ["setosa", "versicolor", "virginica"]
    assert stored.metadata["reference"]["sha256"] == models.sha256_file(stored.file)
    # A copy of the model with its profile edited is refused, as an edited model file is.
    copy = tmp_path / "models" / tag.split(":")[0] / tag.split(":")[1]
    shutil.copytree(stored.file.parent, copy)
    (copy / models.REFERENCE_FILE).write_text(json.dumps({**profile, "rows": 1}))
    from bentoml._internal.models.model import ModelStore

    with pytest.raises(ModelError, match=r"reference\.json has sha256"):
        models.open_model(ModelStore(tmp_path / "models").get(tag), models.REFERENCE_FILE)
