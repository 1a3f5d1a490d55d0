"""The drift check: `python -m jobs.monitor --log URL --since 24h` (`bentos monitor`).

Reads the window of the prediction log (BENTOS_PREDICTION_LOG), compares each model's logged
rows and answers with the reference profile it was registered with (docs/monitoring.md), and
writes a report (HTML, a picture per feature, drift.json) to --reports (default: LOG/_reports/),
one folder per run. Prints one JSON summary naming each drifted feature, and pushes gauges to
the Pushgateway (BENTOS_PUSHGATEWAY) for the alerts.

With --retrain-on-drift (BENTOS_MONITOR_RETRAIN_ON_DRIFT), a finding also starts the retrain
CronJob (--retrain-cronjob, in --namespace) now as a Job, unless one of its Jobs is running;
the retrain job's champion/challenger gate still decides what is served.

Example:
  bentos monitor --log s3://bucket/prediction-log --since 6h

Exit codes (bentos.errors.ExitCode, the same for every command):
  0  nothing drifted (or the window is empty)
  1  the log could not be read or the report written
     (or, with --retrain-on-drift, the retrain CronJob could not be started)
  2  bad arguments or settings
  3  a feature or the predictions drifted (the summary names them)
  4  a model of the window is not in the store, or fails its integrity check
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bentos import logs
from bentos.errors import BentosError, ExitCode, SettingsError, exit_code
from bentos.settings import MonitorSettings, load

log = logging.getLogger("bentos.monitor")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> timedelta:
    """`90m`, `24h`, `7d`, `30s` to a timedelta; argparse shows the ValueError's words."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a positive number and s, m, h or d, such as 24h"
        )
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def _parser(settings: MonitorSettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.monitor",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--log", default=settings.log, metavar="URL", help="the prediction log")
    p.add_argument("--since", type=duration, default=duration(settings.since), metavar="DURATION")
    p.add_argument("--reports", default=settings.reports, metavar="URL", help="where reports go")
    p.add_argument(
        "--registry",
        default=settings.registry,
        metavar="URL",
        help="where logged model versions missing from the store are pulled from",
    )
    retrain_arguments(p, settings)
    return p


def retrain_arguments(p: argparse.ArgumentParser, settings: MonitorSettings) -> None:
    p.add_argument(
        "--retrain-on-drift",
        action=argparse.BooleanOptionalAction,
        default=settings.retrain_on_drift,
        help="on a finding (exit 3), start the retrain CronJob now as a Job",
    )
    p.add_argument("--retrain-cronjob", default=settings.retrain_cronjob, metavar="NAME")
    p.add_argument("--namespace", default=settings.namespace, metavar="NS")


def retrain(args: argparse.Namespace, reason: str, when: datetime, summary: dict) -> int | None:
    """On a finding, with --retrain-on-drift: start the retrain CronJob as a Job (bentos.rollout)
    and say so in the summary. None when that went well or was not asked; 1 when the API server
    refused or could not be reached, so that the pod is retried (the Job's name is the same for
    the same minute, and one running retrain is not doubled)."""
    if not args.retrain_on_drift:
        return None
    from bentos.rollout import start_from_cronjob

    try:
        summary["retrain"] = start_from_cronjob(args.retrain_cronjob, args.namespace, reason, when)
    except Exception as exc:  # the client's ApiException, urllib3's errors, no in-cluster config
        error = f"starting cronjob/{args.retrain_cronjob} in {args.namespace}: {exc}"
        summary["retrain"] = {"cronjob": args.retrain_cronjob, "started": False, "error": error}
        logs.event(log, "error", error=error)
        return ExitCode.IO
    return None


def parse(
    make: Callable[[MonitorSettings], argparse.ArgumentParser], argv: Sequence[str] | None
) -> tuple[MonitorSettings, argparse.Namespace] | int:
    """The settings and the arguments of the monitor's commands, or the exit code of a bad one."""
    try:
        settings = load(MonitorSettings)
        return settings, make(settings).parse_args(argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except argparse.ArgumentTypeError as exc:  # a bad BENTOS_MONITOR_SINCE
        print(f"error: BENTOS_MONITOR_SINCE: {exc}", file=sys.stderr)
        return ExitCode.USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parsed = parse(_parser, argv)
    if isinstance(parsed, int):
        return parsed
    settings, args = parsed
    if not args.log:
        print("error: --log is required (or BENTOS_PREDICTION_LOG)", file=sys.stderr)
        return ExitCode.USAGE
    logs.configure("monitor", stream=sys.stdout)
    until = datetime.now(UTC)
    since = until - args.since
    t0 = time.perf_counter()
    try:
        from bentos.monitoring.monitor import check, report_files

        summary, details = check(args.log, since, until, args.registry)
        folder = (args.reports or f"{args.log.rstrip('/')}/_reports").rstrip("/")
        folder = f"{folder}/{until.strftime('%Y%m%dT%H%M%SZ')}"
        write_files(folder, {**report_files(details), "drift.json": json_bytes(summary)})
    except (BentosError, OSError) as exc:
        logs.event(log, "error", error=getattr(exc, "message", None) or str(exc))
        return exit_code(exc)
    summary["report"] = f"{folder}/index.html"
    summary["duration_s"] = round(time.perf_counter() - t0, 3)
    if settings.pushgateway:
        try:
            _push(settings.pushgateway, summary, until)
        except OSError as exc:  # the figures are in the summary; the verdict stands
            logs.event(log, "push_failed", f"pushgateway {settings.pushgateway}: {exc}")
    failed = retrain(args, "drift", until, summary) if summary["drifted"] else None
    logs.event(log, "summary", **_brief(summary))
    return failed or (ExitCode.GATE if summary["drifted"] else ExitCode.OK)


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """The printed summary: per model its rows and what drifted, with the reasons."""
    models = {}
    for tag, m in summary["models"].items():
        features = m["result"]["features"]
        models[tag] = {
            "rows": m["rows"],
            "drifted_features": {name: features[name]["reason"] for name in m["drifted_features"]},
            "prediction_drifted": m["prediction_drifted"],
        }
    keep = ("log", "since", "until", "rows", "drifted", "report", "duration_s", "retrain")
    return {**{k: summary[k] for k in keep if k in summary}, "models": models}


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, allow_nan=False) + "\n").encode()


def write_files(folder: str, files: dict[str, bytes]) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(folder)
    for name, content in files.items():
        path = f"{root}/{name}"
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "wb") as fh:
            fh.write(content)


def gauges(summary: dict[str, Any], until: datetime) -> Any:
    """The gauges the alerts read (k8s/components/monitoring): per model, drifted features
    and predictions, and per feature whether it drifted and its missing and unseen shares."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    labels = ["model", "version"]
    rows = Gauge(
        "bentos_drift_window_rows", "Rows in the checked window", labels, registry=registry
    )
    drifted = Gauge(
        "bentos_drift_features_drifted", "Features that drifted", labels, registry=registry
    )
    prediction = Gauge(
        "bentos_drift_prediction_drifted", "1 if the predictions drifted", labels, registry=registry
    )
    feature = Gauge(
        "bentos_drift_feature_drifted",
        "1 if the feature drifted",
        [*labels, "feature"],
        registry=registry,
    )
    shares = Gauge(
        "bentos_drift_share",
        "A feature's share of missing values or of categories training never saw, in the window",
        [*labels, "feature", "what"],
        registry=registry,
    )
    last = Gauge("bentos_drift_last_run_timestamp_seconds", "When the check ran", registry=registry)
    for tag, m in summary["models"].items():
        name, _, version = tag.partition(":")
        rows.labels(name, version).set(m["rows"])
        drifted.labels(name, version).set(len(m["drifted_features"]))
        prediction.labels(name, version).set(int(m["prediction_drifted"]))
        for fname, f in m["result"]["features"].items():
            feature.labels(name, version, fname).set(int(f["drifted"]))
            for what in ("missing", "unseen"):
                if f.get(what) and f[what].get("current") is not None:
                    shares.labels(name, version, fname, what).set(f[what]["current"])
    last.set(until.timestamp())
    return registry


def _push(gateway: str, summary: dict[str, Any], until: datetime) -> None:
    from prometheus_client import push_to_gateway

    push_to_gateway(gateway, job="bentos-monitor", registry=gauges(summary, until))


if __name__ == "__main__":
    sys.exit(main())
