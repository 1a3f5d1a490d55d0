"""The `bentos` command: one entry for everything this project does.

  bentos train        train, gate and register both models
  bentos serve        the online service over HTTP (`bentoml serve` of this service or Bento)
  bentos grpc         the Open Inference Protocol over gRPC
  bentos batch        batch prediction of one shard (the CronJob's `python -m jobs.batch_predict`)
  bentos retrain      retrain, judge and promote (the CronJob's `python -m jobs.retrain`)
  bentos monitor      the drift check of the prediction log (the CronJob's `python -m jobs.monitor`)
  bentos evaluate     the served model's accuracy on delayed labels (`python -m jobs.evaluate`)
  bentos models       the model registry: list, show, pull, promote, rollback
  bentos export-edge  the TFLite model and what a device needs
  bentos report       where a model's training report is (or a copy of it)

The manifests keep the `python -m` forms; `bentos COMMAND --help` shows each one's example.

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

from bentos import cli_models
from bentos.errors import BentosError, ExitCode, SettingsError
from bentos.models import MODEL_FILES, TFLITE_NAME, champions
from bentos.settings import ModelSettings, load

EXAMPLES = {
    "train": "bentos train --data s3://bucket/table.parquet --target label",
    "serve": "bentos serve --port 3000",
    "grpc": "bentos grpc --port 3001 --metrics-port 3002",
    "batch": "bentos batch --input s3://bucket/in/ --output s3://bucket/out/ "
    "--shard-count 4 --shard-index 0",
    "retrain": "bentos retrain --data s3://bucket/table.parquet --target label "
    "--registry s3://bucket/registry/",
    "monitor": "bentos monitor --log s3://bucket/prediction-log/ --since 24h",
    "evaluate": "bentos evaluate --log s3://bucket/prediction-log/ --labels s3://bucket/labels.csv",
    "models": "bentos models list --registry s3://bucket/registry/",
    "export-edge": "bentos export-edge --out edge/",
    "report": "bentos report rf-classifier",
}
# Commands whose own parser (the entry point the manifests run) takes every argument after them.
DELEGATED = {
    "grpc": "the Open Inference Protocol over gRPC (python -m bentos.serving.grpc)",
    "batch": "batch prediction of one shard (python -m jobs.batch_predict)",
    "retrain": "retrain, judge and promote (python -m jobs.retrain)",
    "monitor": "the drift check of the prediction log (python -m jobs.monitor)",
    "evaluate": "the served model's accuracy on delayed labels (python -m jobs.evaluate)",
}


def _example(command: str) -> str:
    return f"example:\n  {EXAMPLES[command]}"


def _parser() -> argparse.ArgumentParser:
    from bentos.training.data import DATASETS
    from bentos.training.flags import add_balance_flags, add_kind_flags, add_task_flags
    from bentos.training.tflite import QUANTIZE_MODES

    parser = argparse.ArgumentParser(
        prog="bentos",
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=_example(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,
        )

    train = command("train", "train, validate and register both models")
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
    add_kind_flags(train)
    add_balance_flags(train)
    add_task_flags(train)

    settings = load(ModelSettings)
    serve = command("serve", "the online service over HTTP: `bentoml serve` of this service")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument(
        "--registry",
        default=settings.registry,
        metavar="URL",
        help="pull its champions first and serve them (default: BENTOS_REGISTRY)",
    )
    serve.add_argument(
        "target",
        nargs="?",
        help="a Bento or project folder (default: the Bento in its image, else this project)",
    )
    for name, text in DELEGATED.items():
        # Parsed by the command itself (main() hands it the rest): listed here for --help.
        command(name, text, add_help=False).add_argument("args", nargs=argparse.REMAINDER)

    edge = command("export-edge", "write the TFLite model and its manifest for a device")
    edge.add_argument("--out", required=True, metavar="DIR")
    edge.add_argument("--model", default=settings.tflite_model, metavar="TAG")
    edge.add_argument(
        "--registry", default=settings.registry, metavar="URL", help="export its champion"
    )

    models = command("models", "the models: list, show, pull, promote, rollback")
    verbs = models.add_subparsers(dest="verb", required=True)
    for verb, text, example in (
        (
            "list",
            "each model's versions and dates: the local store's, or the registry's and its champion",
            "list --registry URL",
        ),
        (
            "show",
            "one model: its metrics, data, report; with --registry, its record",
            "show rf-classifier",
        ),
        (
            "pull",
            "import each champion into the local store (sha256-checked) and serve it here",
            "pull --registry URL",
        ),
        (
            "promote",
            "point NAME's champion at VERSION",
            "promote --registry URL rf-classifier VERSION",
        ),
        (
            "rollback",
            "point NAME's champion back at VERSION, an earlier champion",
            "rollback --registry URL rf-classifier VERSION",
        ),
    ):
        cmd = verbs.add_parser(
            verb,
            help=text,
            description=text,
            epilog=f"example:\n  bentos models {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_argument("--registry", default=settings.registry, metavar="URL")
        if verb in ("promote", "rollback"):
            cmd.add_argument("name", metavar="NAME[:VERSION]", help=", ".join(MODEL_FILES))
            cmd.add_argument("version", nargs="?", help="or give it as NAME:VERSION")
        if verb == "show":
            cmd.add_argument("model", metavar="NAME[:VERSION]")

    report = command("report", "where a model's training report is; --out copies it")
    report.add_argument(
        "model", metavar="NAME[:VERSION]", help="rf-classifier or tflite-classifier"
    )
    report.add_argument("--out", metavar="DIR", help="copy the report's folder here")
    return parser


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _train(args: argparse.Namespace) -> int:
    from bentos.training.flags import overrides
    from bentos.training.pipeline import TrainConfig, train

    console = _console()
    if args.data and not args.target:
        console.print("error: --data needs --target, the name of the label column")
        return ExitCode.USAGE
    if not 0.0 <= args.min_accuracy <= 1.0:
        console.print(f"error: --min-accuracy must be between 0 and 1, got {args.min_accuracy}")
        return ExitCode.USAGE

    @contextmanager
    def step(title: str, total: int | None = None):
        if total is None:
            with console.status(title + "..."):
                yield lambda *args: None
        else:
            with _bar(console, title, total) as advance:
                yield advance
        console.print(f"[green]done[/green] {title}")

    try:
        kinds = overrides(args)
    except BentosError as exc:
        console.print(f"error: {exc}")
        return ExitCode.USAGE
    config = TrainConfig(
        kinds=kinds,
        class_weight=args.class_weight,
        min_lift=args.min_lift,
        task=args.task,
        min_r2=args.min_r2,
        dataset=args.dataset,
        data=args.data,
        target=args.target,
        quantize=args.quantize,
        min_accuracy=args.min_accuracy,
        seed=args.seed,
        n_estimators=args.n_estimators,
        epochs=args.epochs,
    )
    pinned = champions()
    try:
        # Plain print: the table is for reading and copying, not for rich's markup.
        result = train(config, step, show=lambda text: print(text, flush=True))
    except BentosError as exc:
        if exc.exit_code == ExitCode.GATE:
            console.print(f"[red]gate failed:[/red] {exc}")
        else:
            console.print(f"[red]data error:[/red] {exc}; nothing was registered")
        return exc.exit_code
    _summary(result)
    for tag in (t for t in (result.rf_tag, result.tflite_tag) if t):
        pin = pinned.get(tag.split(":")[0])
        if pin:  # registering unpinned it (bentos.models): say what serves now
            print(
                f"{tag} is the newest and serves here now, not {pin['version']}, the champion "
                f"pulled from {pin['registry']}; `bentos models pull` serves the champion again"
            )
    # Plain print: rich would read a path's [...] as markup, and wrap a long one.
    print("\n".join(f"report of {tag}: {page}" for tag, page in result.reports.items()))
    return ExitCode.OK


@contextmanager
def _bar(console: Any, title: str, total: int):
    """A bar for a step of `total` parts (Keras epochs), with the latest loss and accuracy."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn(title),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=total, info="")

        def advance(done: int, info: dict[str, float] | None = None) -> None:
            shown = " ".join(f"{k} {v:.4f}" for k, v in (info or {}).items())
            bar.update(task, completed=done, info=shown)

        yield advance


def _summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Registered models")
    table.add_column("")
    table.add_column("RandomForest")
    table.add_column("TFLite")
    table.add_row("tag", result.rf_tag or "(not trained)", result.tflite_tag or "(not trained)")
    if "rmse" in (result.rf_metrics or result.tflite_metrics or {}):
        _regression_rows(table, result)
    else:
        _classification_rows(table, result)
    table.add_row(
        "size",
        f"{result.rf_size / 1024:.1f} KiB",
        f"{result.tflite_size / 1024:.1f} KiB (float32: {result.float32_size / 1024:.1f} KiB)",
    )
    Console().print(table)


def _classification_rows(table: Any, result: Any) -> None:
    blank = {"accuracy": float("nan"), "f1_macro": float("nan")}
    rf, tfl = result.rf_metrics or blank, result.tflite_metrics or blank
    par = result.parity or {"argmax_agreement": float("nan"), "max_abs_diff": float("nan")}
    table.add_row("hold-out accuracy", f"{rf['accuracy']:.4f}", f"{tfl['accuracy']:.4f}")
    table.add_row("macro F1", f"{rf['f1_macro']:.4f}", f"{tfl['f1_macro']:.4f}")
    base = (result.rf_metrics or result.tflite_metrics or {}).get("baseline")
    if base:  # the gate's other side (bentos.training.gates): always the majority class
        shown = f"{base['f1_macro']:.4f} (always {base['class']!r})"
        table.add_row("majority-class macro F1", shown, shown)
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


def _regression_rows(table: Any, result: Any) -> None:
    blank = {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan")}
    rf, tfl = result.rf_metrics or blank, result.tflite_metrics or blank
    for name, key in (("hold-out RMSE", "rmse"), ("MAE", "mae"), ("R²", "r2")):
        table.add_row(name, f"{rf[key]:.4g}", f"{tfl[key]:.4g}")
    base = (result.rf_metrics or result.tflite_metrics or {}).get("baseline")
    if base:  # the gate's other side (bentos.training.gates): always the training mean
        shown = f"{base['rmse']:.4g} (always {base['mean']:.4g})"
        table.add_row("mean predictor's RMSE", shown, shown)
    packed = ((result.rf_packed or {}).get("parity") or {}).get("max_abs_diff")
    par = result.parity or {}
    table.add_row(
        "max difference from",
        "" if packed is None else f"scikit-learn: {packed:.2g}",
        ""
        if not par
        else f"Keras: {par['max_abs_diff']:.2g} (mean {par['mean_diff_share']:.2%} "
        "of the target's std)",
    )


def _export_edge(args: argparse.Namespace) -> int:
    from bentos.edge import export_edge

    try:
        if args.registry:
            from bentos.registry import pull_champions

            pull_champions(args.registry, (TFLITE_NAME,))
        manifest = export_edge(args.out, args.model)
    except BentosError as exc:
        return cli_models.error(exc)
    print(f"exported {manifest['model']} to {args.out} (model.tflite, model.json)")
    return ExitCode.OK


def _serve(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from bentos.models import bento_path
    from bentos.registry import local_models
    from bentos.settings import ServingSettings

    root = Path(__file__).resolve().parents[1]
    target = args.target or bento_path() or (root if (root / "service.py").is_file() else ".")
    if (Path(target) / "service.py").is_file() or target == bento_path():
        # This project's service, or the Bento it was built into: its models must be there, or
        # the server would stop with a traceback as it imports the service.
        settings = load(ServingSettings)
        try:
            for line in local_models((settings.rf_model, settings.tflite_model), args.registry):
                print(line)
        except BentosError as exc:
            return cli_models.error(exc)
        except OSError as exc:
            return cli_models.error(f"registry {args.registry}: {exc}", ExitCode.IO)
    command = [sys.executable, "-m", "bentoml", "serve", str(target)]
    os.execv(sys.executable, [*command, "--port", str(args.port), "--host", args.host])
    return ExitCode.OK  # not reached: the server replaces this process


def _delegate(command: str, argv: list[str]) -> int:
    if command == "grpc":
        from bentos.serving.grpc import main as run
    elif command == "batch":
        from jobs.batch_predict import main as run
    elif command == "monitor":
        from jobs.monitor import main as run
    elif command == "evaluate":
        from jobs.evaluate import main as run
    else:
        from jobs.retrain import main as run
    return run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    try:
        args = _parser().parse_args(argv)
    except SettingsError as exc:
        _console().print(f"error: {exc}")
        return exc.exit_code
    handler = {
        "train": _train,
        "serve": _serve,
        "export-edge": _export_edge,
        "models": cli_models.run,
        "report": cli_models.report,
    }[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
