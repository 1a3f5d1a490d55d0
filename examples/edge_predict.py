"""Predict a CSV on an edge device with the folder `bentos export-edge` wrote.

Needs only numpy and ai-edge-litert (no TensorFlow, no pandas, not this project):

    pip install numpy ai-edge-litert
    python edge_predict.py EDGE_DIR rows.csv > predictions.csv

The CSV needs a header with the model's feature names (any order; other columns are ignored).
Each column is read as the model's preprocessing (model.json) says: numbers, booleans, categories
(a value not seen in training is the unknown level, and counted), dates; an empty cell is a
missing value. Output: one line per row, the predicted label, then one probability per class;
for a regression model (model.json's task), the predicted number. Exit codes: 0; 2 a bad cell
or a missing column (nothing printed); 4 a model.tflite whose sha256 is not model.json's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def load(folder: Path) -> tuple[Interpreter, dict]:
    manifest = json.loads((folder / "model.json").read_text())
    content = (folder / manifest["file"]).read_bytes()
    if hashlib.sha256(content).hexdigest() != manifest["sha256"]:
        print(
            f"{folder / manifest['file']}: sha256 does not match model.json; refusing to run it",
            file=sys.stderr,
        )
        sys.exit(4)  # the project's code for a model that fails its integrity check
    return Interpreter(model_content=content, num_threads=1), manifest


def as_input(rows: np.ndarray, inp: dict) -> np.ndarray:
    """The network's input rows in its input tensor's type (`inp`, its details)."""
    if inp["dtype"] == np.int8:  # full-integer model: quantize the raw features
        scale, zero = inp["quantization"]
        rows = np.clip(np.round(rows / scale + zero), -128, 127)
    return rows.astype(inp["dtype"])


def predict(interp: Interpreter, rows: np.ndarray) -> np.ndarray:
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(rows.shape))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.set_tensor(inp["index"], as_input(rows, inp))
    interp.invoke()
    result = interp.get_tensor(out["index"]).astype(np.float32)
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        result = (result - zero) * scale
    return result


def _number(cell: str) -> float:
    value = float(cell)
    if not np.isfinite(value):
        raise ValueError(f"expected a finite number, got {cell!r}")
    return value


def _encoder(column: dict, true_words: set, false_words: set):
    """A function from one cell (text, not empty) to the column's values: what the server's
    bentos.schema.encode does, in the standard library."""
    kind = column["kind"]
    if kind == "numeric":
        return lambda cell: [_number(cell)]
    if kind == "boolean":

        def boolean(cell: str) -> list[float]:
            word = cell.strip().lower()
            if word in true_words or word in false_words:
                return [1.0 if word in true_words else 0.0]
            raise ValueError(f"expected true or false, got {cell[:40]!r}")

        return boolean
    if kind == "categorical":
        levels = {v: float(i) for i, v in enumerate(column.get("levels", []))}
        other = float(len(levels))  # any value not among the training levels
        return lambda cell: [levels.get(cell, other)]

    def date(cell: str) -> list[float]:
        try:
            when = datetime.fromisoformat(cell.strip())
        except ValueError:
            raise ValueError(f"expected an ISO-8601 date, got {cell[:40]!r}") from None
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
        parts = {
            "year": when.year,
            "month": when.month,
            "day": when.day,
            "dayofweek": when.weekday(),
            "hour": when.hour,
            "minute": when.minute,
        }
        return [float(parts[p]) for p in column["parts"]]

    return date


def _parse(reader: csv.DictReader, manifest: dict) -> tuple[np.ndarray, list[str], dict]:
    """The feature matrix (NaN where a cell is empty), a line per cell its column cannot take
    (its row, counting from 0 as the server and the batch job do, line and column), and the
    count of unknown categories by column."""
    prep = manifest.get("preprocessing")
    if prep is None:  # a model from before column kinds: numbers only, none missing
        prep = {"columns": [{"name": n, "kind": "numeric"} for n in manifest["feature_order"]]}
        missing_ok = False
    else:
        missing_ok = True
    words = set(prep.get("true_words", [])), set(prep.get("false_words", []))
    columns = [(c, _encoder(c, *words), len(c.get("parts", [None]))) for c in prep["columns"]]
    rows, problems, unknown = [], [], {}
    for i, record in enumerate(reader):
        values = []
        for column, encode, width in columns:
            cell = record[column["name"]]
            if cell is None or not cell.strip():
                values += [float("nan")] * width
                if not missing_ok:
                    problems.append(
                        f"row {i} (line {reader.line_num}), column {column['name']!r}: "
                        "expected a number, got an empty cell"
                    )
                continue
            try:
                encoded = encode(cell)
            except ValueError as exc:
                text = (
                    str(exc)
                    if "expected" in str(exc)
                    else f"expected a number, got text {cell[:40]!r}"
                )
                problems.append(
                    f"row {i} (line {reader.line_num}), column {column['name']!r}: {text}"
                )
                encoded = [float("nan")] * width
            if column["kind"] == "categorical" and encoded[0] == len(column.get("levels", [])):
                unknown[column["name"]] = unknown.get(column["name"], 0) + 1
            values += encoded
        rows.append(values)
    width = sum(w for _, _, w in columns)
    return np.array(rows, dtype=np.float64).reshape(len(rows), width), problems, unknown


def dense(x: np.ndarray, spec: dict | None) -> np.ndarray:
    """The network's input: what bentos.schema.dense.Dense.apply does on the server."""
    if spec is None:
        return x.astype(np.float32)
    parts = []
    for j in range(x.shape[1]):
        missing = np.isnan(x[:, j])
        filled = np.where(missing, spec["fill"][j], x[:, j])
        k = spec["onehot"][j]
        if k:
            parts.append(np.eye(k, dtype=np.float32)[np.clip(filled.astype(np.int64), 0, k - 1)])
        else:
            parts.append(filled.reshape(-1, 1))
        if j in spec["indicators"]:
            parts.append(missing.reshape(-1, 1))
    out = np.hstack(parts).astype(np.float64)
    if spec.get("center"):  # standardized with the training rows' mean and spread
        out = (out - np.asarray(spec["center"])) / np.asarray(spec["scale"])
    return out.astype(np.float32)


def main(folder: str, csv_path: str) -> int:
    interp, manifest = load(Path(folder))
    names, labels = manifest["feature_order"], manifest["class_labels"]
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [n for n in names if n not in (reader.fieldnames or [])]
        if missing:
            print(f"{csv_path}: missing column(s) {', '.join(missing)}", file=sys.stderr)
            return 2
        rows, problems, unknown = _parse(reader, manifest)
    if problems:
        # Nothing is predicted from a file with a bad cell, as the server refuses a request.
        print(f"{csv_path}: {len(problems)} bad cell(s); nothing was predicted", file=sys.stderr)
        for problem in problems[:10]:
            print(f"  {problem}", file=sys.stderr)
        return 2
    for name, count in unknown.items():
        print(f"{csv_path}: {count} value(s) of {name!r} not seen in training", file=sys.stderr)
    rows = dense(rows, (manifest.get("preprocessing") or {}).get("dense"))
    writer = csv.writer(sys.stdout)
    if manifest.get("task") == "regression":
        # The network answers the standardized target; the manifest has its mean and spread.
        scale = manifest["target_scale"]
        writer.writerow([manifest["target"]])
        for out in predict(interp, rows).reshape(-1).astype(np.float64):
            writer.writerow([f"{np.float32(out * scale['std'] + scale['mean'])}"])
        return 0
    writer.writerow(["label", *(f"p_{label}" for label in labels)])
    for proba in predict(interp, rows):
        writer.writerow([labels[int(np.argmax(proba))], *(f"{p:.6f}" for p in proba)])
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
