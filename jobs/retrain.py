"""Scheduled retraining: `python -m jobs.retrain --data URL --target COLUMN`.

Runs the training pipeline of `bentos train` on a data URL and registers new model versions
only when they pass its gates; with --export-to, also writes each new version as a
`.bentomodel` archive to that folder (any fsspec URL), which is how a version trained in a
Kubernetes pod leaves it (the pod's model store is gone when the pod is).

The Bento image serves TFLite but carries no TensorFlow, so inside it use `--models rf`.

Every flag has an environment default: BENTOS_RETRAIN_DATA, BENTOS_RETRAIN_TARGET,
BENTOS_RETRAIN_EXPORT, BENTOS_RETRAIN_MODELS, BENTOS_RETRAIN_MIN_ACCURACY.

Exit codes: 0 registered (and exported); 1 the export failed; 2 bad arguments or data;
3 a gate failed (nothing registered).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

EXIT_IO, EXIT_USAGE, EXIT_GATE = 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m jobs.retrain", description=__doc__.splitlines()[0])
    p.add_argument("--data", default=env("BENTOS_RETRAIN_DATA"), help="CSV/Parquet, any fsspec URL")
    p.add_argument("--target", default=env("BENTOS_RETRAIN_TARGET"), help="the label column")
    p.add_argument("--export-to", default=env("BENTOS_RETRAIN_EXPORT"), metavar="URL")
    p.add_argument(
        "--models",
        default=env("BENTOS_RETRAIN_MODELS", "rf,tflite"),
        help="rf, tflite or rf,tflite",
    )
    p.add_argument(
        "--min-accuracy", type=float, default=float(env("BENTOS_RETRAIN_MIN_ACCURACY", "0.7"))
    )
    p.add_argument("--quantize", default="dynamic", choices=("dynamic", "float16", "int8"))
    p.add_argument("--seed", type=int, default=42)
    return p


def _log(**event: object) -> None:
    print(json.dumps(event, default=str), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.data or not args.target:
        _log(
            event="error", error="--data and --target are required (or BENTOS_RETRAIN_DATA/TARGET)"
        )
        return EXIT_USAGE

    from bentos.conversion import ConversionError
    from bentos.data import DataError
    from bentos.training import GateError, TrainConfig, train

    config = TrainConfig(
        data=args.data,
        target=args.target,
        quantize=args.quantize,
        min_accuracy=args.min_accuracy,
        seed=args.seed,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
    )
    try:
        result = train(config)
    except DataError as exc:
        _log(event="error", error=f"{exc}; nothing was registered")
        return EXIT_USAGE
    except (GateError, ConversionError) as exc:
        _log(event="gate_failed", error=str(exc))
        return EXIT_GATE
    tags = [t for t in (result.rf_tag, result.tflite_tag) if t]
    metrics = {"rf": result.rf_metrics, "tflite": result.tflite_metrics}
    _log(
        event="registered",
        models=tags,
        accuracy={k: v["accuracy"] for k, v in metrics.items() if v},
    )
    if args.export_to:
        import bentoml
        import fsspec

        try:
            fs, folder = fsspec.core.url_to_fs(args.export_to)
            fs.makedirs(folder, exist_ok=True)
            for tag in tags:
                name, version = tag.split(":")
                dest = f"{args.export_to.rstrip('/')}/{name}-{version}.bentomodel"
                bentoml.models.export_model(tag, dest)
                _log(event="exported", model=tag, to=dest)
        except (OSError, ValueError, bentoml.exceptions.BentoMLException) as exc:
            _log(event="error", error=f"export to {args.export_to} failed: {exc}")
            return EXIT_IO
    return 0


if __name__ == "__main__":
    sys.exit(main())
