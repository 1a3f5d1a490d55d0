"""The jobs' figures where Prometheus can see them: rows read, written and rejected, duration,
success, the model versions used, and the last success time.

A job lives for minutes, too short to be scraped, so when BENTOS_PUSHGATEWAY is set it pushes
its figures once, at its end, to a Prometheus Pushgateway, grouped by job (`bentos-batch`,
`bentos-retrain`) and, for batch, by shard: each shard's last run replaces its own group only.
The same figures are always in the job's JSON summary line (`"metrics": {...}`), so a run is
described even where no Pushgateway runs.

    bentos_job_rows{kind="read"|"written"|"rejected"}   rows of the last run
    bentos_job_duration_seconds                         its duration
    bentos_job_success                                  1, or 0 when it failed
    bentos_job_last_success_timestamp_seconds           when it last succeeded (unix seconds)
    bentos_job_model_info{model, version}               1 for each model it used or registered

A successful run replaces its group (a PUT); a failed one replaces every series but the
last-success time (a POST), so that the time of the last success outlives a failure: alert on
`bentos_job_success == 0` for a failed run, and on the age of
`bentos_job_last_success_timestamp_seconds` for runs that stopped succeeding.
"""

from __future__ import annotations

import time
from typing import Any

JOBS = {"batch": "bentos-batch", "retrain": "bentos-retrain"}


def figures(
    *,
    rows: dict[str, int],
    duration_s: float,
    success: bool,
    models: dict[str, str],
    finished_at: float | None = None,
) -> dict[str, Any]:
    """The figures of one run, as the JSON summary carries them."""
    finished_at = time.time() if finished_at is None else finished_at
    out: dict[str, Any] = {
        "rows": {k: int(v) for k, v in rows.items()},
        "duration_seconds": round(float(duration_s), 3),
        "success": bool(success),
        "models": dict(models),
    }
    if success:
        out["last_success_timestamp_seconds"] = round(finished_at, 3)
    return out


def _registry(fig: dict[str, Any]) -> Any:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    rows = Gauge("bentos_job_rows", "Rows of the job's last run", ["kind"], registry=registry)
    for kind, n in fig["rows"].items():
        rows.labels(kind).set(n)
    Gauge("bentos_job_duration_seconds", "Duration of the last run", registry=registry).set(
        fig["duration_seconds"]
    )
    Gauge("bentos_job_success", "1 when the last run succeeded, else 0", registry=registry).set(
        1 if fig["success"] else 0
    )
    if "last_success_timestamp_seconds" in fig:
        Gauge(
            "bentos_job_last_success_timestamp_seconds",
            "When the job last succeeded (unix seconds)",
            registry=registry,
        ).set(fig["last_success_timestamp_seconds"])
    info = Gauge(
        "bentos_job_model_info",
        "1 for each model the run used",
        ["model", "version"],
        registry=registry,
    )
    for name, version in fig["models"].items():
        info.labels(name, version).set(1)
    return registry


def exposition(fig: dict[str, Any]) -> bytes:
    """The figures in Prometheus' text format (what a push sends)."""
    from prometheus_client import generate_latest

    return generate_latest(_registry(fig))


def push(
    gateway: str, job: str, fig: dict[str, Any], grouping: dict[str, str] | None = None
) -> None:
    """Send the figures to the Pushgateway. Raises OSError when it cannot be reached: the job
    logs it and keeps its own exit code (the figures are in its summary anyway)."""
    from prometheus_client import push_to_gateway, pushadd_to_gateway

    send = push_to_gateway if fig["success"] else pushadd_to_gateway
    send(
        gateway,
        job=JOBS.get(job, job),
        registry=_registry(fig),
        grouping_key=grouping or {},
        timeout=10,
    )


def model_versions(tags: list[str]) -> dict[str, str]:
    """`name:version` tags -> {name: version}."""
    return dict(tag.split(":", 1) for tag in tags if ":" in tag)
