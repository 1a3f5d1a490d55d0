"""Scheduled retraining: `python -m jobs.retrain --data URL --target COLUMN`.

Runs the training pipeline of `bentos train` on a data URL and registers new model versions
only when they pass its gates; with --export-to, also writes each new version as a
`.bentomodel` archive to that folder (any fsspec URL), which is how a version trained in a
Kubernetes pod leaves it (the pod's model store is gone when the pod is).

The Bento image serves TFLite but carries no TensorFlow, so inside it use `--models rf`.

Every flag defaults to its setting (bentos.settings.RetrainSettings): BENTOS_RETRAIN_DATA,
BENTOS_RETRAIN_TARGET, BENTOS_RETRAIN_EXPORT, BENTOS_RETRAIN_MODELS,
BENTOS_RETRAIN_MIN_ACCURACY.

Exit codes (bentos.errors.ExitCode, the same for every command): 0 registered (and exported);
1 the export failed; 2 bad arguments, settings or data; 3 a gate failed (nothing registered).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bentos.errors import BentosError, ExitCode, SettingsError
from bentos.settings import RetrainSettings, load


def _parser(settings: RetrainSettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.retrain", description=__doc__.splitlines()[0])
    p.add_argument("--data", default=settings.data, help="CSV/Parquet, any fsspec URL")
    p.add_argument("--target", default=settings.target, help="the label column")
    p.add_argument("--export-to", default=settings.export, metavar="URL")
    p.add_argument("--models", default=settings.models, help="rf, tflite or rf,tflite")
    p.add_argument("--min-accuracy", type=float, default=settings.min_accuracy)
    p.add_argument("--quantize", default="dynamic", choices=("dynamic", "float16", "int8"))
    p.add_argument("--seed", type=int, default=42)
    return p


def _log(**event: object) -> None:
    print(json.dumps(event, default=str), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser(load(RetrainSettings)).parse_args(argv)
    except SettingsError as exc:
        _log(event="error", error=str(exc))
        return exc.exit_code
    if not args.data or not args.target:
        _log(
            event="error", error="--data and --target are required (or BENTOS_RETRAIN_DATA/TARGET)"
        )
        return ExitCode.USAGE

    from bentos.training.pipeline import TrainConfig, train

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
    except BentosError as exc:
        if exc.exit_code == ExitCode.GATE:
            _log(event="gate_failed", error=str(exc))
        else:
            _log(event="error", error=f"{exc}; nothing was registered")
        return exc.exit_code
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
            return ExitCode.IO
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
