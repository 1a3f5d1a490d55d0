"""bentos.training.report on small synthetic problems: its pictures, its page, the curves it
draws for two classes and for more, and the page without matplotlib."""

from __future__ import annotations

import html
import re
import struct
import sys

import numpy as np
import pandas as pd
import pytest

from bentos.schema import FeatureSchema
from bentos.training import report
from bentos.training.gates import evaluate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMMON = {
    "training_data": {"source": "file:///data/<t>.csv", "sha256": "ab" * 32, "rows": 400},
    "split": {"test_size": 0.25, "seed": 3, "stratified": True},
}


def _problem(n_classes: int, labels: list[str], names: list[str], seed: int = 0):
    """A fitted logistic regression's hold-out rows and probabilities, on rows whose first
    feature decides the class and whose last is noise."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, 400)
    x = rng.normal(size=(400, len(names)))
    x[:, 0] += 3 * y
    model = LogisticRegression().fit(x[:300], y[:300])
    x_test, y_test = x[300:], y[300:]
    schema = FeatureSchema.from_training(pd.DataFrame(x, columns=names), labels, "target")
    proba = model.predict_proba(x_test)
    return schema, x_test, y_test, proba, model


def _png_size(content: bytes) -> tuple[int, int]:
    assert content[:8] == PNG_SIGNATURE
    return struct.unpack(">II", content[16:24])  # the IHDR chunk: width, height


def _build(schema, x, y, proba, model, **kw) -> report.Report:
    return report.build(
        "Logistic",
        schema,
        y,
        proba,
        evaluate(y, proba.argmax(1), schema.labels),
        report.permutation_importances(model.predict_proba, x, y, seed=1),
        **kw,
    )


def test_a_multi_class_report_draws_one_curve_per_class_and_every_picture():
    labels = ["a", "b", "c", "d"]
    schema, x, y, proba, model = _problem(4, labels, ["signal", "f1", "noise"])
    parity = report.Parity("Served", "Reference", {"max_abs_diff": 0.01}, proba + 0.01)
    built = _build(schema, x, y, proba, model, parity=parity)
    assert built.drawn == tuple(labels)
    assert set(built.pictures) == {
        report.CONFUSION,
        report.ROC,
        report.PR,
        report.IMPORTANCES,
        report.PARITY,
    }
    for name, content in built.pictures.items():
        width, height = _png_size(content)
        assert width >= 300 and height >= 200, name
        assert len(content) > 5000, name  # drawn, not an empty canvas
    for label in labels:
        assert 0.5 < built.curves[label]["auc"] <= 1 and 0 < built.curves[label]["ap"] <= 1
    assert built.note == ""


def test_a_binary_report_draws_one_curve_for_the_second_class():
    schema, x, y, proba, model = _problem(2, ["no", "yes"], ["signal", "noise"])
    built = _build(schema, x, y, proba, model)
    assert built.drawn == ("yes",)
    assert report.PARITY not in built.pictures  # no reference model given
    # Both classes still get their figures in the table.
    assert set(built.curves) == {"no", "yes"}
    assert built.curves["no"]["auc"] == pytest.approx(built.curves["yes"]["auc"])
    page = built.files("m:1", COMMON)[report.INDEX].decode()
    assert "positive class yes" in page


def test_the_page_links_every_picture_lists_every_class_and_feature_and_escapes_them():
    labels = ["<b>bold</b>", 'quote"d', "a&b"]
    names = ["<script>alert(1)</script>", "x'y", "noise"]
    schema, x, y, proba, model = _problem(3, labels, names)
    files = _build(schema, x, y, proba, model).files("rf-classifier:v1", COMMON)
    page = files[report.INDEX].decode()
    linked = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(linked) == sorted(set(files) - {report.INDEX})
    assert "<script>" not in page and "<b>bold</b>" not in page
    for value in (*labels, *names, COMMON["training_data"]["source"]):
        assert f">{html.escape(value)}<" in page, value
    assert "rf-classifier:v1" in page and COMMON["training_data"]["sha256"] in page
    assert re.search(r"accuracy <b>0\.\d{4}</b>", page)


def test_permutation_importance_ranks_the_deciding_feature_over_noise():
    _, x, y, _, model = _problem(3, ["a", "b", "c"], ["signal", "noise"])
    imp = report.permutation_importances(model.predict_proba, x, y, repeats=4, seed=0)
    assert imp.mean[0] > 0.3 and abs(imp.mean[1]) < 0.05
    assert imp.std.shape == (2,)


def test_without_matplotlib_the_page_is_made_without_pictures_and_says_why(monkeypatch):
    schema, x, y, proba, model = _problem(3, ["a", "b", "c"], ["signal", "noise"])
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises
    built = _build(schema, x, y, proba, model)
    assert built.pictures == {}
    page = built.files("m:1", COMMON)[report.INDEX].decode()
    assert "matplotlib could not be imported" in page and "retrain" in page
    assert "<img" not in page and "signal" in page
