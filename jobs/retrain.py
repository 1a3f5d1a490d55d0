"""Scheduled retraining: `python -m jobs.retrain --data URL --target COLUMN [--registry URL]`.

Runs the training pipeline of `bentos train` on a data URL and registers new model versions
only when they pass its gates. With --registry (bentos.registry), each new version is the
challenger: it and the registry's champion are judged on the same labelled rows (--eval-data,
or the held-out split of --data), and the challenger is pushed, then promoted only when it is
at least as good on --metric plus --margin; one `{"event": "decision", ...}` line per model,
a report beside it in the registry, and, after a promotion, the serving Deployment rolled
(--rollout-deployment) so that its pods pull the new champion. A decision not to promote is a
success (exit 0). With --export-to, each new version is also written as a `.bentomodel`
archive to that folder (any fsspec URL).

The training image (bentofile-train.yaml) has TensorFlow and retrains both models; the serving
image has none, so inside it use `--models rf`.

Every flag defaults to its setting (bentos.settings.RetrainSettings): BENTOS_RETRAIN_DATA,
BENTOS_RETRAIN_TARGET, BENTOS_RETRAIN_EXPORT, BENTOS_RETRAIN_MODELS,
BENTOS_RETRAIN_MIN_ACCURACY, BENTOS_REGISTRY, BENTOS_RETRAIN_EVAL_DATA, BENTOS_RETRAIN_METRIC,
BENTOS_RETRAIN_MARGIN, BENTOS_RETRAIN_ROLLOUT_DEPLOYMENT, BENTOS_RETRAIN_ROLLOUT_NAMESPACE.

Exit codes (bentos.errors.ExitCode, the same for every command): 0 registered (and decided,
exported); 1 the registry, the export or the rollout failed; 2 bad arguments, settings or data;
3 a gate failed (nothing registered); 4 the champion's archive fails its sha256.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from bentos import jobmetrics, logs
from bentos.errors import BentosError, ExitCode, SettingsError
from bentos.settings import RetrainSettings, load
from bentos.training.flags import (
    KIND_FLAGS,
    add_balance_flags,
    add_kind_flags,
    add_task_flags,
    overrides,
)

log = logging.getLogger("bentos.retrain")


def _parser(settings: RetrainSettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.retrain",
        description=__doc__.splitlines()[0],
        epilog="example (`bentos retrain` is the same command):\n  bentos retrain --data "
        "s3://bucket/table.parquet --target label --registry s3://bucket/registry/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default=settings.data, help="CSV/Parquet, any fsspec URL")
    p.add_argument("--target", default=settings.target, help="the label column")
    p.add_argument("--export-to", default=settings.export, metavar="URL")
    p.add_argument("--models", default=settings.models, help="rf, tflite or rf,tflite")
    p.add_argument("--min-accuracy", type=float, default=settings.min_accuracy)
    p.add_argument("--registry", default=settings.registry, metavar="URL")
    p.add_argument("--eval-data", default=settings.eval_data, metavar="URL")
    p.add_argument(
        "--metric",
        default=settings.metric,
        choices=("f1_macro", "accuracy", "rmse", "mae", "r2"),
        help="what champion and challenger are judged on (default: f1_macro; a regression: "
        "rmse, where lower is better)",
    )
    p.add_argument("--margin", type=float, default=settings.margin)
    p.add_argument("--rollout-deployment", default=settings.rollout_deployment, metavar="NAME")
    p.add_argument("--rollout-namespace", default=settings.rollout_namespace, metavar="NS")
    p.add_argument("--quantize", default="dynamic", choices=("dynamic", "float16", "int8"))
    p.add_argument("--seed", type=int, default=42)
    add_kind_flags(p, {flag: getattr(settings, flag) for flag in KIND_FLAGS})
    p.set_defaults(max_levels=settings.max_levels, min_level_count=settings.min_level_count)
    add_balance_flags(p, settings.class_weight, settings.min_lift)
    add_task_flags(p, settings.task, settings.min_r2)
    p.add_argument(
        "--allow-schema-change",
        action="store_true",
        default=settings.allow_schema_change,
        help="promote a challenger whose columns differ from the champion's (clients must "
        "then send the new ones)",
    )
    return p


def _log(event: str, **fields: object) -> None:
    logs.event(log, event, **fields)


def main(argv: Sequence[str] | None = None) -> int:
    logs.configure("retrain", stream=sys.stdout)
    try:
        settings = load(RetrainSettings)
        args = _parser(settings).parse_args(argv)
    except SettingsError as exc:
        _log(event="error", error=str(exc))
        return exc.exit_code
    t0, run = time.perf_counter(), _Run()
    code = _run(args, run)
    figures = jobmetrics.figures(
        rows={"read": run.rows},
        duration_s=time.perf_counter() - t0,
        success=code == ExitCode.OK,
        models=jobmetrics.model_versions(run.tags),
    )
    status = "complete" if code == ExitCode.OK else "failed"
    _log(event="summary", status=status, exit_code=int(code), metrics=figures)
    if settings.pushgateway:
        try:
            jobmetrics.push(settings.pushgateway, "retrain", figures)
        except OSError as exc:  # the figures are in the summary; the run's result stands
            _log(event="push_failed", error=f"pushgateway {settings.pushgateway}: {exc}")
    return code


@contextmanager
def _step(title: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """Training's steps as JSON lines: each one's start and end, and for a step of `total`
    parts (Keras epochs) a progress line at most every 5 seconds, and at the last part."""
    t0, last = time.perf_counter(), [0.0]
    _log(event="step", step=title, status="started")

    def advance(done: int, info: dict[str, float] | None = None) -> None:
        now = time.perf_counter()
        if now - last[0] >= 5.0 or done == total:
            last[0] = now
            _log(event="progress", step=title, done=done, total=total, **(info or {}))

    yield advance
    _log(event="step", step=title, status="done", seconds=round(time.perf_counter() - t0, 3))


@dataclass
class _Run:
    """What a run got to, for its figures whatever the outcome."""

    tags: list[str] = field(default_factory=list)
    rows: int = 0


def _run(args: argparse.Namespace, run: _Run) -> int:
    if not args.data or not args.target:
        _log(
            event="error", error="--data and --target are required (or BENTOS_RETRAIN_DATA/TARGET)"
        )
        return ExitCode.USAGE

    from bentos.training.pipeline import TrainConfig, train

    try:
        kinds = overrides(args)
    except BentosError as exc:
        _log(event="error", error=str(exc))
        return ExitCode.USAGE
    config = TrainConfig(
        kinds=kinds,
        class_weight=args.class_weight,
        min_lift=args.min_lift,
        task=args.task,
        min_r2=args.min_r2,
        data=args.data,
        target=args.target,
        quantize=args.quantize,
        min_accuracy=args.min_accuracy,
        seed=args.seed,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
    )
    try:
        result = train(config, _step)
    except BentosError as exc:
        if exc.exit_code == ExitCode.GATE:
            _log(event="gate_failed", error=str(exc))
        else:
            _log(event="error", error=f"{exc}; nothing was registered")
        return exc.exit_code
    tags = run.tags = [t for t in (result.rf_tag, result.tflite_tag) if t]
    run.rows = _training_rows(tags)
    metrics = {"rf": result.rf_metrics, "tflite": result.tflite_metrics}
    _log(
        event="registered",
        models=tags,
        # A classifier's accuracy, a regression's R².
        accuracy={k: v["accuracy"] for k, v in metrics.items() if v and "accuracy" in v},
        r2={k: v["r2"] for k, v in metrics.items() if v and "r2" in v},
    )
    if args.registry:
        code = _decide(args, config, result)
        if code != ExitCode.OK:
            return code
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


def _training_rows(tags: list[str]) -> int:
    import bentoml

    meta = bentoml.models.get(tags[0]).info.metadata if tags else {}
    return int(meta.get("training_data", {}).get("rows", 0))


def _decide(args: argparse.Namespace, config: object, result: object) -> int:
    from bentos.registry import Registry
    from bentos.training.promote import promote

    try:
        decisions = promote(
            result,
            config,
            Registry(args.registry),
            eval_data=args.eval_data,
            metric=args.metric,
            margin=args.margin,
            log=_log,
            allow_schema_change=args.allow_schema_change,
        )
    except BentosError as exc:
        _log(event="error", error=str(exc))
        return exc.exit_code
    except OSError as exc:
        _log(event="error", error=f"registry {args.registry}: {exc}")
        return ExitCode.IO
    champions = {n: d["challenger"]["version"] for n, d in decisions.items() if d["promoted"]}
    if champions and args.rollout_deployment:
        from bentos.rollout import roll

        try:
            roll(args.rollout_deployment, args.rollout_namespace or "default", champions)
        except Exception as exc:  # the API server's refusal, or no in-cluster credentials
            _log(event="error", error=f"rollout of {args.rollout_deployment} failed: {exc}")
            return ExitCode.IO
        _log(event="rolled", deployment=args.rollout_deployment, champions=champions)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
