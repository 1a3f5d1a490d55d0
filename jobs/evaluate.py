"""Accuracy on delayed labels: `python -m jobs.evaluate --labels URL [--key request_id]`
(`bentos evaluate`).

Joins the window of the prediction log (BENTOS_PREDICTION_LOG) with the true labels when they
arrive (a CSV or Parquet table with the key and the label), by the request id the answer
carried (and a `row` column for requests of several rows) or by a column of the logged rows
(--key: an order id, a batch input's identifier), computes each served model's accuracy and
macro F1 over the window and per period, and compares them with the model's hold-out metrics
from training. Writes a report (HTML, a picture per model, evaluation.json) to --reports
(default: LOG/_reports/), prints one JSON summary, pushes gauges to the Pushgateway.

Example:
  bentos evaluate --log s3://bucket/prediction-log --labels s3://bucket/labels.parquet --since 7d

Exit codes (bentos.errors.ExitCode, the same for every command):
  0  every model with enough labelled rows is within --margin of its hold-out metrics
  1  the log or the labels could not be read, or the report written
     (or, with --retrain-on-drift, the retrain CronJob could not be started)
  2  bad arguments, settings, or labels without the key or label column
  3  a metric fell by more than --margin (the summary names the model and the metric)
  4  a model of the window is not in the store, or fails its integrity check
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bentos import logs
from bentos.errors import BentosError, ExitCode, exit_code
from bentos.settings import MonitorSettings
from jobs.monitor import duration, json_bytes, parse, retrain, retrain_arguments, write_files

log = logging.getLogger("bentos.evaluate")


def _parser(settings: MonitorSettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.evaluate",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--log", default=settings.log, metavar="URL", help="the prediction log")
    p.add_argument("--labels", default=settings.labels, metavar="URL", help="the true labels")
    p.add_argument("--key", default=settings.key, help="request_id, or a column of the rows")
    p.add_argument(
        "--label-column", default=settings.label_column, help="default: the model's target"
    )
    p.add_argument("--since", type=duration, default=duration(settings.since), metavar="DURATION")
    p.add_argument("--every", default=settings.every, help="the report's periods (1h, 1D, 7D)")
    p.add_argument("--margin", type=float, default=settings.margin)
    p.add_argument("--reports", default=settings.reports, metavar="URL")
    p.add_argument("--registry", default=settings.registry, metavar="URL")
    retrain_arguments(p, settings)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parsed = parse(_parser, argv)
    if isinstance(parsed, int):
        return parsed
    settings, args = parsed
    if not args.log or not args.labels:
        print("error: --log and --labels are required (or their settings)", file=sys.stderr)
        return ExitCode.USAGE
    if not 0 <= args.margin <= 1:
        print(f"error: --margin must be in [0, 1], got {args.margin}", file=sys.stderr)
        return ExitCode.USAGE
    logs.configure("evaluate", stream=sys.stdout)
    until = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        summary = _evaluate(args, until)
        folder = (args.reports or f"{args.log.rstrip('/')}/_reports").rstrip("/")
        folder = f"{folder}/evaluation-{until.strftime('%Y%m%dT%H%M%SZ')}"
        from bentos.monitoring.evaluate import report_files

        write_files(folder, {**report_files(summary), "evaluation.json": json_bytes(summary)})
    except (BentosError, OSError) as exc:
        logs.event(log, "error", error=getattr(exc, "message", None) or str(exc))
        return exit_code(exc)
    except ValueError as exc:  # pandas: an --every that is not a frequency
        logs.event(log, "error", error=f"--every {args.every!r}: {exc}")
        return ExitCode.USAGE
    summary["report"] = f"{folder}/index.html"
    summary["duration_s"] = round(time.perf_counter() - t0, 3)
    if settings.pushgateway:
        try:
            _push(settings.pushgateway, summary, until)
        except OSError as exc:
            logs.event(log, "push_failed", f"pushgateway {settings.pushgateway}: {exc}")
    brief = {k: v for k, v in summary.items() if k != "models"}
    brief["models"] = {
        tag: {k: m[k] for k in ("rows", *m["metrics"], "holdout", "judged", "fell")}
        for tag, m in summary["models"].items()
    }
    failed = retrain(args, "accuracy", until, brief) if summary["fell"] else None
    logs.event(log, "summary", **brief)
    return failed or (ExitCode.GATE if summary["fell"] else ExitCode.OK)


def _evaluate(args: argparse.Namespace, until: datetime) -> dict[str, Any]:
    from bentos.monitoring.evaluate import evaluate, joined
    from bentos.monitoring.monitor import references
    from bentos.monitoring.predlog import inputs, read_window
    from bentos.training.data import read_table

    since = until - args.since
    labels, _ = read_table(args.labels)
    table = read_window(args.log, since, until)  # read once: it may be large
    logged = table.drop_columns(["input", "body"]).to_pandas()
    logged["input"] = inputs(table)  # each row's fields, for a --key column of the rows
    # Each logged version (pulled if need be), opened once for its target and hold-out metrics.
    found = references(sorted(set(logged["model"])), args.registry)
    label = args.label_column
    if label is None:  # the models' target, which the labels table is expected to name
        targets = sorted({r.schema.target for r in found.values()})
        label = targets[0] if len(targets) == 1 else "label"
    frame = joined(logged, labels, args.key, label)
    holdout = {tag: found[tag].holdout for tag in sorted(set(frame["model"]))}
    result = evaluate(frame, holdout, args.margin, args.every)
    return {
        "log": args.log,
        "labels": args.labels,
        "key": args.key,
        "label_column": label,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "labelled_rows": len(frame),
        "margin": args.margin,
        **result,
    }


def gauges(summary: dict[str, Any], until: datetime) -> Any:
    """The gauges the accuracy alert reads (k8s/components/monitoring)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    labels = ["model", "version"]
    served = Gauge(
        "bentos_evaluation_metric",
        "The served model's metric on delayed labels",
        [*labels, "metric"],
        registry=registry,
    )
    holdout = Gauge(
        "bentos_evaluation_holdout_metric",
        "The same metric on the model's hold-out rows at training",
        [*labels, "metric"],
        registry=registry,
    )
    rows = Gauge(
        "bentos_evaluation_labelled_rows", "Logged rows with a label", labels, registry=registry
    )
    fell = Gauge(
        "bentos_evaluation_fell", "1 if a metric fell beyond the margin", labels, registry=registry
    )
    last = Gauge(
        "bentos_evaluation_last_run_timestamp_seconds", "When the evaluation ran", registry=registry
    )
    for tag, m in summary["models"].items():
        name, _, version = tag.partition(":")
        rows.labels(name, version).set(m["rows"])
        fell.labels(name, version).set(int(bool(m["fell"])))
        for metric in m["metrics"]:
            if m[metric] is not None:
                served.labels(name, version, metric).set(m[metric])
            if m["holdout"][metric] is not None:
                holdout.labels(name, version, metric).set(m["holdout"][metric])
    last.set(until.timestamp())
    return registry


def _push(gateway: str, summary: dict[str, Any], until: datetime) -> None:
    from prometheus_client import push_to_gateway

    push_to_gateway(gateway, job="bentos-evaluate", registry=gauges(summary, until))


if __name__ == "__main__":
    sys.exit(main())
