"""The `bentos` command: train and register the models, export the edge model.

Exit codes (bentos.errors.ExitCode, the same for every command): 0 success; 2 bad arguments or
bad data (nothing registered); 3 a quality gate or the TFLite conversion failed (nothing
registered); 4 a model is missing or fails its check.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

from bentos.errors import BentosError, ExitCode, SettingsError
from bentos.models import MODEL_FILES, TFLITE_NAME
from bentos.settings import ModelSettings, load


def _parser() -> argparse.ArgumentParser:
    from bentos.training.data import DATASETS
    from bentos.training.tflite import QUANTIZE_MODES

    parser = argparse.ArgumentParser(prog="bentos", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train, validate and register both models")
    train.add_argument(
        "--dataset", choices=DATASETS, default="iris", help="bundled data (default: iris)"
    )
    train.add_argument(
        "--data", metavar="PATH_OR_URL", help="your own CSV or Parquet (any fsspec URL)"
    )
    train.add_argument("--target", metavar="COLUMN", help="the label column of --data")
    train.add_argument("--quantize", choices=QUANTIZE_MODES, default="dynamic")
    train.add_argument(
        "--min-accuracy",
        type=float,
        default=0.7,
        metavar="X",
        help="hold-out accuracy both models must reach (default: 0.7)",
    )
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--n-estimators", type=int, default=100, help="trees in the forest")
    train.add_argument(
        "--epochs", type=int, default=None, help="Keras epochs (default: by data size)"
    )

    settings = load(ModelSettings)
    edge = sub.add_parser(
        "export-edge", help="write the TFLite model and its manifest for a device"
    )
    edge.add_argument("--out", required=True, metavar="DIR")
    edge.add_argument("--model", default=settings.tflite_model, metavar="TAG")
    edge.add_argument(
        "--registry", default=settings.registry, metavar="URL", help="export its champion"
    )

    models = sub.add_parser("models", help="the model registry: list, pull, promote, rollback")
    verbs = models.add_subparsers(dest="verb", required=True)
    for verb, text in (
        ("list", "every pushed version of each model, and its champion"),
        ("pull", "import each champion into the local model store (sha256-checked)"),
        ("promote", "point NAME's champion at VERSION"),
        ("rollback", "point NAME's champion back at VERSION, an earlier champion"),
    ):
        cmd = verbs.add_parser(verb, help=text)
        cmd.add_argument("--registry", default=settings.registry, metavar="URL")
        if verb in ("promote", "rollback"):
            cmd.add_argument("name", choices=MODEL_FILES)
            cmd.add_argument("version")
    return parser


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _train(args: argparse.Namespace) -> int:
    from bentos.training.pipeline import TrainConfig, train

    console = _console()
    if args.data and not args.target:
        console.print("error: --data needs --target, the name of the label column")
        return ExitCode.USAGE
    if not 0.0 <= args.min_accuracy <= 1.0:
        console.print(f"error: --min-accuracy must be between 0 and 1, got {args.min_accuracy}")
        return ExitCode.USAGE

    @contextmanager
    def step(title: str):
        with console.status(title + "..."):
            yield
        console.print(f"[green]done[/green] {title}")

    config = TrainConfig(
        dataset=args.dataset,
        data=args.data,
        target=args.target,
        quantize=args.quantize,
        min_accuracy=args.min_accuracy,
        seed=args.seed,
        n_estimators=args.n_estimators,
        epochs=args.epochs,
    )
    try:
        result = train(config, step)
    except BentosError as exc:
        if exc.exit_code == ExitCode.GATE:
            console.print(f"[red]gate failed:[/red] {exc}")
        else:
            console.print(f"[red]data error:[/red] {exc}; nothing was registered")
        return exc.exit_code
    _summary(result)
    return ExitCode.OK


def _summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    blank = {"accuracy": float("nan"), "f1_macro": float("nan")}
    rf, tfl = result.rf_metrics or blank, result.tflite_metrics or blank
    par = result.parity or {"argmax_agreement": float("nan"), "max_abs_diff": float("nan")}
    table = Table(title="Registered models")
    table.add_column("")
    table.add_column("RandomForest")
    table.add_column("TFLite")
    table.add_row("tag", result.rf_tag or "(not trained)", result.tflite_tag or "(not trained)")
    table.add_row("hold-out accuracy", f"{rf['accuracy']:.4f}", f"{tfl['accuracy']:.4f}")
    table.add_row("macro F1", f"{rf['f1_macro']:.4f}", f"{tfl['f1_macro']:.4f}")
    table.add_row(
        "size",
        f"{result.rf_size / 1024:.1f} KiB",
        f"{result.tflite_size / 1024:.1f} KiB (float32: {result.float32_size / 1024:.1f} KiB)",
    )
    agrees = []
    for form, info in (("packed", result.rf_packed),):
        p = (info or {}).get("parity", {})
        if p.get("labels_identical"):
            agrees.append(f"{form}: same labels, max diff {p['max_abs_diff']:.1e}")
    table.add_row(
        "agrees with",
        "; ".join(agrees),
        f"Keras: {par['argmax_agreement']:.2%} of rows",
    )
    table.add_row("max prob. difference", "", f"{par['max_abs_diff']:.1e}")
    Console().print(table)


def _export_edge(args: argparse.Namespace) -> int:
    from bentos.edge import export_edge

    try:
        model = args.model
        if args.registry:
            from bentos.registry import Registry

            model = Registry(args.registry).pull(TFLITE_NAME)
        manifest = export_edge(args.out, model)
    except BentosError as exc:
        _console().print(f"[red]error:[/red] {exc}")
        return exc.exit_code
    print(f"exported {manifest['model']} to {args.out} (model.tflite, model.json)")
    return ExitCode.OK


def _models(args: argparse.Namespace) -> int:
    import json

    from bentos.registry import Registry

    if not args.registry:
        _console().print("error: --registry (or BENTOS_REGISTRY) is required")
        return ExitCode.USAGE
    try:
        registry = Registry(args.registry)
        if args.verb == "pull":
            for name in MODEL_FILES:
                if registry.champion(name) is None:
                    # A first install, before the first retrain: the Bento's own model serves.
                    print(f"{name}: no champion in {args.registry} yet; the Bento's own serves")
                    continue
                print(f"pulled {registry.pull(name)}")
        elif args.verb == "list":
            for name in MODEL_FILES:
                champion = (registry.champion(name) or {}).get("version")
                for record in registry.versions(name):
                    mark = "*" if record["version"] == champion else " "
                    print(f"{mark} {name}:{record['version']}  {json.dumps(record['metrics'])}")
        elif args.verb == "promote":
            pointer = registry.set_champion(args.name, args.version, "promoted by hand")
            print(f"{args.name}: champion {pointer['version']}")
        else:
            pointer = registry.rollback(args.name, args.version)
            print(f"{args.name}: champion {pointer['version']} ({pointer['reason']})")
    except BentosError as exc:
        _console().print(f"[red]error:[/red] {exc}")
        return exc.exit_code
    except OSError as exc:
        _console().print(f"[red]error:[/red] registry {args.registry}: {exc}")
        return ExitCode.IO
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SettingsError as exc:
        _console().print(f"error: {exc}")
        return exc.exit_code
    handler = {"train": _train, "export-edge": _export_edge, "models": _models}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
