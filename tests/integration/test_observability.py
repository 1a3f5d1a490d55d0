"""The monitoring component against the real thing: every metric its rules and dashboard query
is one that a running `bentoml serve` (HTTP), the gRPC server or a job's pushed figures
(bentos.jobmetrics) expose, or a kube-state-metrics name listed here; and a real Prometheus
(Debian's, as installed by tests/support/apt.sh) that scrapes both servers and a real Pushgateway
the jobs' figures were pushed to (with honor_labels, as docs/observability.md asks) loads the
very rule file that ships, evaluates every rule with health "ok", answers every rule expression
and every dashboard query without an error (each dashboard query with data), and fires the job
alerts for the failed push and only those.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import yaml

from benchmarks.servers import Process, free_port, http_ready
from bentos.jobmetrics import exposition, figures, push
from tests.support.monitoring import (
    RULES,
    as_promql,
    dashboard_queries,
    debian_tool,
    metric_names,
    panels,
    pushgateway_server,
    rules,
    sample_names,
)
from tests.support.strategies import ROW

# Names no process of this project exposes, each with where it comes from.
EXTERNAL = {
    "kube_job_status_failed": "kube-state-metrics: a Job's failed pods",
    "kube_job_owner": "kube-state-metrics: the CronJob that owns a Job",
    "kube_job_complete": "kube-state-metrics: a Job's Complete condition",
}
# Labels the PodMonitor's scrape adds to the servers' series (the rules and panels use them).
SCRAPE_LABELS = {"namespace": "bentos-test", "pod": "tabular-classifier-0"}


def _traffic(server, grpc_server) -> None:
    """Requests that every service series needs to exist: answers, a refusal, model calls."""
    for route in ("/predict", "/predict_edge"):
        assert httpx.post(server.url + route, json={"instances": [ROW]}).status_code == 200
    assert httpx.post(server.url + "/predict", json={"instances": [{"x": 1}]}).status_code == 400
    client = tgrpc.InferenceServerClient(grpc_server.address)
    inp = tgrpc.InferInput("features", [1, 4], "FP32")
    inp.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    client.infer("rf", [inp])
    with pytest.raises(tgrpc.InferenceServerException):
        client.infer("no-such-model", [inp])


def _job_figures(success: bool, rejected: int = 2) -> dict[str, Any]:
    return figures(
        rows={"read": 1000, "written": 1000 - rejected, "rejected": rejected},
        duration_s=12.5,
        success=success,
        models={"rf-classifier": "v1"},
    )


def _model_checks(trained) -> tuple[Any, Any]:
    """The drift check's and the evaluation's gauges, as their jobs push them, from the real
    computations: the session's forest on iris rows with longer, wider petals (its features and
    answers drift), and its answers judged on labels a degraded world would give."""
    from datetime import UTC, datetime

    import pandas as pd

    from bentos.monitoring.drift import check_drift
    from bentos.monitoring.evaluate import evaluate
    from bentos.monitoring.monitor import reference_of
    from bentos.runners import RandomForestRunner
    from bentos.training.data import load_builtin
    from jobs import evaluate as evaluate_job
    from jobs import monitor as monitor_job

    tag, now = trained.rf_tag, datetime.now(UTC)
    schema, reference, _ = reference_of(tag)
    iris = load_builtin("iris")
    rows = iris.features.sample(600, replace=True, random_state=0).reset_index(drop=True)
    rows["petal_length"] += 4.0  # every flower now looks like a virginica to the forest
    rows["petal_width"] += 2.0
    x, _ = schema.validate_frame(rows)
    runner = RandomForestRunner(tag)
    proba = runner.predict_proba(x)
    result = check_drift(reference, schema, x, proba.argmax(1))
    drift = {
        tag: {
            "rows": len(x),
            "drifted_features": result["drifted"],
            "prediction_drifted": result["prediction_drifted"],
            "result": result,
        }
    }
    truth = iris.target.sample(600, replace=True, random_state=1).astype(str).to_numpy()
    served = pd.DataFrame(
        {
            "model": tag,
            "time": pd.Timestamp(now),
            "truth": truth,
            "prediction": [str(v) for v in runner.labels_for(proba)],
        }
    )
    judged = evaluate(served, {tag: runner.metadata["metrics"]}, 0.05, "1D")
    return (
        monitor_job.gauges({"models": drift}, now),
        evaluate_job.gauges(judged, now),
    )


def _queries() -> list[str]:
    """Every rule expression and every dashboard query."""
    return [r["expr"] for r in rules()] + dashboard_queries()


def test_every_metric_the_rules_and_the_dashboard_query_is_exposed(server, grpc_server, trained):
    from prometheus_client import generate_latest

    _traffic(server, grpc_server)
    drift, evaluation = _model_checks(trained)
    exposed = {
        "HTTP /metrics": sample_names(httpx.get(server.url + "/metrics", timeout=30).text),
        "gRPC /metrics": sample_names(httpx.get(grpc_server.metrics_url, timeout=30).text),
        "job push": sample_names(exposition(_job_figures(success=True)).decode()),
        "drift push": sample_names(generate_latest(drift).decode()),
        "evaluation push": sample_names(generate_latest(evaluation).decode()),
    }
    known = set().union(*exposed.values()) | set(EXTERNAL)
    used = set().union(*(metric_names(q) for q in _queries()))
    assert used - known == set(), "queried, but exposed by nothing"
    assert set(EXTERNAL) <= used, "listed as external, but no longer queried"
    # The service's series are on both servers alike (the dashboard shows both containers).
    pushed = ("bentos_job_", "bentos_drift_", "bentos_evaluation_")
    service = {n for n in used if n.startswith("bentos_") and not n.startswith(pushed)}
    assert service <= exposed["HTTP /metrics"] & exposed["gRPC /metrics"]


def _start(args: list[str], port: int, ready_path: str) -> Process:
    return Process(args, ready=http_ready(f"http://127.0.0.1:{port}{ready_path}"), port=port)


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory) -> Iterator[Process]:
    with pushgateway_server(tmp_path_factory.mktemp("pushgateway")) as gateway:
        yield gateway


def _scrape_config(server, grpc_server, pushgateway) -> dict[str, Any]:
    """A stand-in for the configuration the operator generates from the PodMonitor (its two
    endpoints, with the namespace, pod and container labels its scrape adds), and the
    Pushgateway's scrape with honor_labels, as docs/observability.md asks."""

    def target(address: str, **labels: str) -> dict[str, Any]:
        return {"targets": [address], "labels": {**SCRAPE_LABELS, **labels}}

    grpc_metrics = grpc_server.metrics_url.removeprefix("http://").removesuffix("/metrics")
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "bentos-test/tabular-classifier/http",
                "metrics_path": "/metrics",
                "static_configs": [target(server.address, container="server")],
            },
            {
                "job_name": "bentos-test/tabular-classifier/grpc-metrics",
                "metrics_path": "/metrics",
                "static_configs": [target(grpc_metrics, container="grpc")],
            },
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [pushgateway.address]}],
            },
        ],
    }


@pytest.fixture(scope="module")
def prometheus(server, grpc_server, pushgateway, tmp_path_factory) -> Iterator[Process]:
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(_scrape_config(server, grpc_server, pushgateway)))
    port = free_port()
    args = [
        debian_tool("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _start(args, port, "/-/ready") as prom:
        yield prom


def _api(prom: Process, path: str, **params: str) -> Any:
    body = httpx.get(f"{prom.url}/api/v1/{path}", params=params, timeout=30).json()
    assert body["status"] == "success", (path, params, body)
    return body["data"]


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Poll until `check()` holds; a readiness wait, not a measurement (a generous bound)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def scraped(server, grpc_server, pushgateway, prometheus, trained) -> Process:
    """Prometheus after traffic, the jobs' pushes and a few scrapes and rule evaluations: the
    batch's shard 0 succeeded, its shard 1 failed with 10% of its rows rejected, the retrain
    succeeded (pushed as the jobs push, bentos.jobmetrics.push)."""
    _traffic(server, grpc_server)
    push(pushgateway.address, "batch", _job_figures(success=True), {"shard": "0"})
    push(pushgateway.address, "batch", _job_figures(success=False, rejected=100), {"shard": "1"})
    push(pushgateway.address, "retrain", _job_figures(success=True))
    from prometheus_client import push_to_gateway

    drift, evaluation = _model_checks(trained)
    push_to_gateway(pushgateway.address, job="bentos-monitor", registry=drift)
    push_to_gateway(pushgateway.address, job="bentos-evaluate", registry=evaluation)

    def ready() -> bool:
        targets = _api(prometheus, "targets")["activeTargets"]
        scrapes = _api(prometheus, "query", query="min(count_over_time(up[1m]))")["result"]
        groups = _api(prometheus, "rules")["groups"]
        evaluated = [r for g in groups for r in g["rules"] if r["health"] != "unknown"]
        return (
            len(targets) == 3
            and all(t["health"] == "up" for t in targets)
            and bool(scrapes)
            and float(scrapes[0]["value"][1]) >= 5
            and len(evaluated) == len(rules())
        )

    _wait_for(ready, "3 targets up, scraped 5 times, every rule evaluated")
    # Traffic between scrapes, so that the counters' rates have something to show.
    _traffic(server, grpc_server)
    _wait_for(
        lambda: bool(
            _api(
                prometheus,
                "query",
                query='increase(bentos_requests_total{container="grpc"}[5s]) > 0',
            )["result"]
        ),
        "the second round of traffic scraped",
    )
    return prometheus


def test_prometheus_loads_the_shipped_rules_and_every_one_evaluates_ok(scraped):
    groups = _api(scraped, "rules")["groups"]
    assert {g["file"] for g in groups} == {str(RULES)}
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {r["alert"] for r in rules()}
    for name, rule in loaded.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
        assert not rule.get("lastError"), name


@pytest.mark.parametrize("expr", [r["expr"] for r in rules()], ids=[r["alert"] for r in rules()])
def test_every_rule_expression_is_answered_without_an_error(scraped, expr):
    body = httpx.get(f"{scraped.url}/api/v1/query", params={"query": expr}, timeout=30).json()
    assert body["status"] == "success" and "error" not in body, body
    assert not body.get("warnings"), body["warnings"]


@pytest.mark.parametrize(
    "query",
    dashboard_queries(),
    ids=[f"{p['title']} {t['refId']}" for p in panels() for t in p["targets"]],
)
def test_every_dashboard_query_is_answered_with_data(scraped, query):
    """With every Grafana variable replaced (tests/support/monitoring.py): no error, and at
    least one series, so no label name or value in a panel is misspelt."""
    body = httpx.get(
        f"{scraped.url}/api/v1/query", params={"query": as_promql(query)}, timeout=30
    ).json()
    assert body["status"] == "success" and "error" not in body, body
    assert not body.get("warnings"), body["warnings"]
    assert body["data"]["result"], f"no data for {query}"


def test_the_pushed_failure_fires_the_job_alerts_and_nothing_else_fires(scraped):
    """honor_labels keeps the pushed job and shard labels, which the job alerts select: the
    failed shard fires BentosJobFailed and BentosBatchRejectedRows (10% rejected), the shard
    and the retrain that succeeded fire nothing, and a fresh, healthy service fires nothing."""

    def firing() -> set[tuple[str, str, str]]:
        return {
            (a["labels"]["alertname"], a["labels"].get("job", ""), a["labels"].get("shard", ""))
            for a in _api(scraped, "alerts")["alerts"]
            if a["state"] == "firing"
        }

    expected = {
        ("BentosJobFailed", "bentos-batch", "1"),
        ("BentosBatchRejectedRows", "bentos-batch", "1"),
        # The shifted window's features and answers, and the degraded labels' accuracy.
        ("BentosFeatureDrift", "bentos-monitor", ""),
        ("BentosPredictionDrift", "bentos-monitor", ""),
        ("BentosAccuracyDrop", "bentos-evaluate", ""),
    }
    try:
        _wait_for(lambda: expected <= firing(), "the job alerts firing")
    finally:
        assert firing() == expected  # on a timeout too: which fired, which did not
    # The models were just trained: their age is minutes, not the 45 days of BentosModelTooOld.
    ages = _api(
        scraped,
        "query",
        query="time() - max by (model, version) (bentos_model_created_timestamp_seconds)",
    )["result"]
    assert {r["metric"]["model"] for r in ages} == {"rf", "tflite"}
    assert all(0 <= float(r["value"][1]) < 86400 for r in ages)
