"""Export the TFLite model with what a device needs to run it without TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bentos.models import TFLITE_NAME, open_model
from bentos.runners import TFLite

FORMAT_VERSION = 1


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
        "features": [vars(f) for f in stored.schema.features],
        "class_labels": list(stored.schema.labels),
        "quantization": meta["quantization"],
        "tensors": TFLite(content).tensor_details(),
        "metrics": {
            "accuracy": meta["metrics"]["accuracy"],
            "f1_macro": meta["metrics"]["f1_macro"],
        },
        "how_to_run": (
            "Feed float32 features in feature_order (shape [rows, n_features]); if the input tensor "
            "is int8, quantize with q = round(x / scale + zero_point); the output is one probability "
            "per class in class_labels order (dequantize int8 with (q - zero_point) * scale)."
        ),
    }
    (out / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
