"""Predict a CSV on an edge device with the folder `bentos export-edge` wrote.

Needs only numpy and ai-edge-litert (no TensorFlow, no pandas, not this project):

    pip install numpy ai-edge-litert
    python edge_predict.py EDGE_DIR rows.csv > predictions.csv

The CSV needs a header with the model's feature names (any order; other columns are ignored).
Output: one line per row, the predicted label, then one probability per class.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def load(folder: Path) -> tuple[Interpreter, dict]:
    manifest = json.loads((folder / "model.json").read_text())
    content = (folder / manifest["file"]).read_bytes()
    if hashlib.sha256(content).hexdigest() != manifest["sha256"]:
        sys.exit(
            f"{folder / manifest['file']}: sha256 does not match model.json; refusing to run it"
        )
    return Interpreter(model_content=content, num_threads=1), manifest


def predict(interp: Interpreter, rows: np.ndarray) -> np.ndarray:
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(rows.shape))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if inp["dtype"] == np.int8:  # full-integer model: quantize the raw features
        scale, zero = inp["quantization"]
        rows = np.clip(np.round(rows / scale + zero), -128, 127)
    interp.set_tensor(inp["index"], rows.astype(inp["dtype"]))
    interp.invoke()
    result = interp.get_tensor(out["index"]).astype(np.float32)
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        result = (result - zero) * scale
    return result


def _parse(reader: csv.DictReader, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """The feature matrix, and a line per cell that is not a finite number: its row (counting
    from 0, as the server and the batch job do), line in the file, and column."""
    rows, problems = [], []
    for i, record in enumerate(reader):
        values = []
        for name in names:
            cell = record[name]
            try:
                value = float(cell)
            except (TypeError, ValueError):
                value = float("nan")
                what = "an empty cell" if not cell else f"text {cell[:40]!r}"
                problems.append(
                    f"row {i} (line {reader.line_num}), column {name!r}: expected a number, "
                    f"got {what}"
                )
            else:
                if not np.isfinite(value):
                    problems.append(
                        f"row {i} (line {reader.line_num}), column {name!r}: expected a finite "
                        f"number, got {cell!r}"
                    )
            values.append(value)
        rows.append(values)
    return np.array(rows, dtype=np.float32).reshape(len(rows), len(names)), problems


def main(folder: str, csv_path: str) -> int:
    interp, manifest = load(Path(folder))
    names, labels = manifest["feature_order"], manifest["class_labels"]
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [n for n in names if n not in (reader.fieldnames or [])]
        if missing:
            print(f"{csv_path}: missing column(s) {', '.join(missing)}", file=sys.stderr)
            return 2
        rows, problems = _parse(reader, names)
    if problems:
        # Nothing is predicted from a file with a bad cell, as the server refuses a request.
        print(f"{csv_path}: {len(problems)} bad cell(s); nothing was predicted", file=sys.stderr)
        for problem in problems[:10]:
            print(f"  {problem}", file=sys.stderr)
        return 2
    writer = csv.writer(sys.stdout)
    writer.writerow(["label", *(f"p_{label}" for label in labels)])
    for proba in predict(interp, rows):
        writer.writerow([labels[int(np.argmax(proba))], *(f"{p:.6f}" for p in proba)])
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
