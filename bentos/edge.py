"""Export the TFLite model with what a device needs to run it without TensorFlow."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bentos.models import TFLITE_NAME, open_model
from bentos.runners import TFLite
from bentos.schema import FeatureSchema
from bentos.schema.kinds import FALSE_WORDS, TRUE_WORDS

# 2: model.json carries the preprocessing (column kinds, levels, fill values) of models with kinds.
FORMAT_VERSION = 2


def export_edge(out: str | Path, model: str = f"{TFLITE_NAME}:latest") -> dict[str, Any]:
    """Write `model.tflite` and `model.json` into `out`; return the manifest written."""
    stored = open_model(model)  # verifies the file's sha256, once
    content = stored.file.read_bytes()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.tflite").write_bytes(content)
    meta = stored.metadata
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": stored.tag,
        "version": stored.tag.split(":", 1)[1],
        "file": "model.tflite",
        "sha256": meta["sha256"],
        "size_bytes": meta["size_bytes"],
        "feature_order": stored.schema.names,
        "features": stored.schema.to_dict()["features"],
        "preprocessing": _preprocessing(stored.schema),
        "task": stored.schema.task,
        "class_labels": list(stored.schema.labels),
        "quantization": meta["quantization"],
        "tensors": TFLite(content).tensor_details(),
        # What read it here, the versions docs/edge.md tells a device to install.
        "runtime": {name: version(name) for name in ("ai-edge-litert", "numpy")},
        "metrics": _metrics(stored.schema, meta["metrics"]),
        "how_to_run": (
            "Encode each column of feature_order as preprocessing.columns says (numbers; booleans "
            "as 1/0 from true_words/false_words; categories as their index in levels, any other "
            "value len(levels); dates as the listed parts, in UTC; an empty cell is missing, NaN), "
            "then make the network's input as preprocessing.dense says (a missing value becomes "
            "fill, features listed in indicators get a 1/0 missing column after them, a feature "
            "with onehot k becomes k one-hot columns, then each input is (x - center) / scale); "
            "feed it as float32 [rows, inputs]. If the "
            "input tensor is int8, quantize with q = round(x / scale + zero_point); the output is "
            "one probability per class in class_labels order (dequantize int8 with "
            "(q - zero_point) * scale); for task regression, one number per row, the "
            "standardized target: the prediction is output * target_scale.std + "
            "target_scale.mean. examples/edge_predict.py does all of this with numpy."
        ),
    }
    if stored.schema.regression:
        manifest["target"] = stored.schema.target
        manifest["target_scale"] = meta["target_scale"]
    (out / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _metrics(schema: FeatureSchema, metrics: dict[str, Any]) -> dict[str, Any]:
    names = ("rmse", "mae", "r2") if schema.regression else ("accuracy", "f1_macro")
    return {k: metrics[k] for k in names}


def _preprocessing(schema: FeatureSchema) -> dict[str, Any] | None:
    """What a device applies before the network: None for a model from before column kinds,
    whose input is its features as numbers, none missing."""
    if not schema.columns:
        return None
    return {
        "columns": [c.to_dict() for c in schema.columns if c.is_feature],
        "dense": schema.dense.to_dict() if schema.dense else None,
        "true_words": sorted(TRUE_WORDS),
        "false_words": sorted(FALSE_WORDS),
        "date_parts": "year, month, day, dayofweek (Monday 0), hour, minute; UTC",
    }
