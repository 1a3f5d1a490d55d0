"""The drift check of a window of the prediction log (`bentos monitor`): each model the window
holds, its logged rows validated again by the one path every door takes (bentos.schema), then
compared with the reference profile the model was registered with (bentos.monitoring.drift),
with a report per model (bentos.monitoring.drift_report)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bentos.errors import ModelError
from bentos.monitoring.drift import check_drift
from bentos.monitoring.predlog import inputs, read_window


@dataclass(frozen=True)
class ModelWindow:
    """One model's rows of a window: validated again, with the labels it answered."""

    tag: str
    matrix: np.ndarray
    predicted: np.ndarray
    rows: int  # logged rows of this model
    unusable: int  # rows that no longer validate (the model's schema is not the one logged)


class Reference(NamedTuple):
    """What the monitors compare a logged model's rows with, from its registration."""

    schema: Any  # bentos.schema.FeatureSchema
    profile: dict[str, Any]  # the reference profile (bentos.monitoring.profile)
    holdout: dict[str, Any]  # its hold-out metrics


def reference_of(tag: str) -> Reference:
    """The model's schema, reference profile and hold-out metrics, sha256-checked as every load
    is."""
    from bentos import models

    stored = models.open_model(tag, models.REFERENCE_FILE)
    profile = json.loads(stored.file.read_text())
    return Reference(stored.schema, profile, stored.metadata.get("metrics", {}))


def references(tags: list[str], registry: str | None = None) -> dict[str, Reference]:
    """Each logged model's reference. A version missing from the local stores is pulled from
    `registry` first: a window can hold rows of a former champion, and the monitor's own store
    starts empty. Without one, or when the registry lacks it too, a ModelError names the
    model."""
    found: dict[str, Reference] = {}
    for tag in tags:
        try:
            found[tag] = reference_of(tag)
            continue
        except ModelError as exc:
            if registry is None:
                raise ModelError(
                    f"the log holds predictions of {tag}, which cannot be checked: {exc}"
                ) from None
        from bentos.registry import Registry

        Registry(registry).pull(*tag.split(":", 1))
        found[tag] = reference_of(tag)
    return found


def windows(table: pa.Table, schemas: dict[str, Any]) -> list[ModelWindow]:
    """The window's rows by model tag, each validated against that model's schema."""
    out = []
    models = table.column("model")
    for tag in sorted(set(pc.unique(models).to_pylist())):
        mine = table.filter(pc.equal(models, tag))
        schema = schemas[tag]
        frame = pd.DataFrame.from_records(inputs(mine))
        for name in schema.names:  # a field no logged row had (cannot be: rows are validated)
            if name not in frame.columns:
                frame[name] = None
        matrix, reasons = schema.validate_frame(frame)
        ok = np.array([r is None for r in reasons], dtype=bool)
        answers = mine.column("prediction").to_pylist()
        if schema.regression:  # the number answered, as text
            predicted = pd.to_numeric(pd.Series(answers), errors="coerce").to_numpy(np.float64)
            ok &= np.isfinite(predicted)
        else:
            index = {str(label): i for i, label in enumerate(schema.labels)}
            predicted = np.array([index.get(p, -1) for p in answers], dtype=np.int64)
            ok &= predicted >= 0
        out.append(ModelWindow(tag, matrix[ok], predicted[ok], len(frame), int((~ok).sum())))
    return out


def check(
    log: str, since: datetime, until: datetime, registry: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The summary of the window `since`..`until` of `log`, and per model tag what its report
    needs. A model of the window in neither the store nor `registry` is a ModelError naming it."""
    table = read_window(log, since, until)
    found = references(sorted(set(table.column("model").to_pylist())), registry)
    summary: dict[str, Any] = {
        "log": log,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "rows": table.num_rows,
        "models": {},
        "drifted": False,
    }
    details: dict[str, Any] = {}
    for window in windows(table, {t: r.schema for t, r in found.items()}):
        schema, reference, _ = found[window.tag]
        result = check_drift(reference, schema, window.matrix, window.predicted)
        result["unusable_rows"] = window.unusable
        summary["models"][window.tag] = {
            "rows": window.rows,
            "drifted_features": result["drifted"],
            "prediction_drifted": result["prediction_drifted"],
            "result": result,
        }
        summary["drifted"] |= bool(result["drifted"]) or result["prediction_drifted"]
        details[window.tag] = (result, reference, schema, window.matrix, window.predicted)
    return summary, details


def report_files(details: dict[str, Any]) -> dict[str, bytes]:
    """Each model's drift report, in a folder named for its tag, and an index of them."""
    from bentos.monitoring.drift_report import drift_report

    files: dict[str, bytes] = {}
    links = []
    for tag, (result, reference, schema, matrix, predicted) in details.items():
        folder = tag.replace(":", "-")
        for name, content in drift_report(result, reference, schema, matrix, predicted).items():
            files[f"{folder}/{name}"] = content
        mark = "drifted" if result["drifted"] or result["prediction_drifted"] else "no drift"
        links.append(f'<li><a href="{folder}/index.html">{tag}</a>: {mark}</li>')
    page = "<!doctype html><meta charset=utf-8><title>Drift</title><ul>" + "".join(links)
    files["index.html"] = (page + "</ul>\n").encode()
    return files
