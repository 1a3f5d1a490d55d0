"""The monitoring component (k8s/components/monitoring), rendered with prod: a PodMonitor that
scrapes both servers of the Deployment's pods, a PrometheusRule whose groups are the rule file's
(the one source, which promtool checks and tests: every alert fires in one case and stays quiet
in another), and the Grafana dashboard in a ConfigMap the sidecar picks up.

The Prometheus Operator's kinds are custom resources, which kubernetes-validate cannot know:
they are validated against the operator's CRD schemas as the PyPI package
cloudcoil-models-prometheus-operator (0.80.1) generates them, pydantic models with the CRDs'
types, enums, patterns and required fields. Those models ignore a field they do not know rather
than refuse it, so each object must also come back unchanged from the model: a misspelt field
would be dropped, and fail that. Whether a real Prometheus loads the rules and answers every
query: tests/integration/test_observability.py.
"""

from __future__ import annotations

import copy
import os
import re

import pydantic
import pytest
import yaml

from bentos.settings import GrpcSettings
from tests.support.k8s import (
    APP,
    DASHBOARD,
    K8S,
    OPERATOR_API,
    OPERATOR_KINDS,
    OVERLAYS,
    ROOT,
    config_map_data,
    container,
    container_port,
    deployment,
    find,
    includes_component,
    kustomization,
    one,
    pod_template,
    render,
    resolve_env,
)
from tests.support.monitoring import (
    DASHBOARD_JSON,
    RULES,
    RULES_TEST,
    alerts,
    dashboard,
    dashboard_queries,
    metric_names,
    panels,
    promtool,
    rule_groups,
    rules,
)

SEVERITIES = {"critical", "warning"}
WITH_MONITORING = [o for o in OVERLAYS if includes_component(o, "monitoring")]


@pytest.fixture
def monitored(rendered) -> list[dict]:
    """prod's objects, the overlay with the component."""
    return rendered["prod"]


def test_prod_lists_the_component_and_dev_does_not(rendered):
    assert WITH_MONITORING == ["prod"]
    for overlay in OVERLAYS:
        kinds = {o["kind"] for o in rendered[overlay] if o["apiVersion"] == OPERATOR_API}
        assert kinds == (set(OPERATOR_KINDS) if overlay in WITH_MONITORING else set()), overlay
        dashboards = [c for c in find(rendered[overlay], "ConfigMap", DASHBOARD)]
        assert len(dashboards) == (overlay in WITH_MONITORING), overlay


def test_the_prometheus_rule_carries_the_rule_file_s_groups_unchanged(monitored):
    """rules.yaml is the source that promtool checks and tests; the PrometheusRule that ships
    must hold exactly its groups (edit rules.yaml, then copy its groups into
    prometheusrule.yaml)."""
    rule = one(monitored, "PrometheusRule")
    assert rule["spec"]["groups"] == rule_groups()
    assert rule["metadata"]["namespace"] == kustomization("prod")["namespace"]


def _diff(want, got, at: str = "") -> list[str]:
    """The paths where `got` differs from `want`."""
    if isinstance(want, dict) and isinstance(got, dict):
        return [
            p for k in want.keys() | got.keys() for p in _diff(want.get(k), got.get(k), f"{at}.{k}")
        ]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [
            p
            for i, (w, g) in enumerate(zip(want, got, strict=True))
            for p in _diff(w, g, f"{at}[{i}]")
        ]
    return [] if want == got else [at]


def _schema_problems(obj: dict) -> list[str]:
    """What the operator's CRD schema (as cloudcoil's models) refuses in `obj`, or drops from it
    as unknown."""
    from cloudcoil.models.prometheus_operator import v1

    try:
        parsed = getattr(v1, obj["kind"]).model_validate(obj)
    except pydantic.ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return _diff(obj, parsed.model_dump(by_alias=True, exclude_unset=True, mode="json"))


@pytest.mark.parametrize("kind", OPERATOR_KINDS)
def test_the_operator_objects_validate_against_the_crd_schemas(monitored, kind):
    obj = one(monitored, kind)
    assert obj["apiVersion"] == OPERATOR_API
    assert _schema_problems(obj) == []


def test_the_crd_check_refuses_a_misspelt_field_and_a_wrong_type(monitored):
    """The check is not vacuous: an unknown field, a wrong type, a bad duration all fail it."""
    monitor = copy.deepcopy(one(monitored, "PodMonitor"))
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    assert _schema_problems(monitor) == [".spec.podMetricsEndpoints[0].intervall"]
    monitor = copy.deepcopy(one(monitored, "PodMonitor"))
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "30 seconds"
    assert _schema_problems(monitor) != []
    rule = copy.deepcopy(one(monitored, "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["labels"] = ["severity"]
    assert _schema_problems(rule) != []


def test_the_pod_monitor_scrapes_both_servers_of_every_server_pod(monitored):
    """Its selector matches the Deployment's pods (and no job's), and its two endpoints name the
    ports the server (HTTP, 3000) and the gRPC container (its metrics port, 3002) listen on,
    which the NetworkPolicy lets in."""
    monitor = one(monitored, "PodMonitor")
    dep = deployment(monitored)
    selector = monitor["spec"]["selector"]
    assert set(selector) == {"matchLabels"}
    for obj in [dep, *find(monitored, "CronJob")]:
        labels = pod_template(obj)["metadata"]["labels"]
        selects = selector["matchLabels"].items() <= labels.items()
        assert selects == (obj is dep), obj["metadata"]["name"]
    assert "namespaceSelector" not in monitor["spec"]  # its own namespace, the Deployment's
    assert monitor["metadata"]["namespace"] == dep["metadata"]["namespace"]
    endpoints = {e["port"]: e for e in monitor["spec"]["podMetricsEndpoints"]}
    assert set(endpoints) == {"http", "grpc-metrics"}
    assert all(e["path"] == "/metrics" for e in endpoints.values())
    assert container_port(container(dep, "server"), "http") == 3000
    grpc = container(dep, "grpc")
    assert container_port(grpc, "grpc-metrics") == 3002
    # The gRPC server serves /metrics on its default metrics port: nothing sets another.
    assert "--metrics-port" not in grpc["command"] + grpc.get("args", [])
    assert "BENTOS_GRPC_METRICS_PORT" not in resolve_env(monitored, grpc)
    assert GrpcSettings.model_fields["metrics_port"].default == 3002
    policy = one(monitored, "NetworkPolicy", APP)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
        pod_template(dep)["metadata"]["labels"].items()
    )
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert {3000, 3002} <= allowed


def test_promtool_checks_the_rule_file():
    proc = promtool("check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


def test_promtool_runs_every_alert_on_its_test_series():
    """rules_test.yaml loads rules.yaml itself (the file that ships), and every case passes:
    the alerts that should fire fire, with their labels and annotations, and no others."""
    spec = yaml.safe_load(RULES_TEST.read_text())
    assert spec["rule_files"] == [RULES.name]
    proc = promtool("test", "rules", RULES_TEST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_test_fails_when_an_alert_does_not_fire_as_expected(tmp_path):
    """The promtool tests are not vacuous: with a threshold raised, they fail."""
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 0.005", "> 0.05"))
    (tmp_path / RULES_TEST.name).write_text(RULES_TEST.read_text())
    proc = promtool("test", "rules", tmp_path / RULES_TEST.name)
    assert proc.returncode != 0
    assert "alertname: BentosBatchRejectedRows" in proc.stdout + proc.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not():
    """A new alert without its promtool cases fails here."""
    fires, quiet = set(), set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test") or []:
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fires == set(), "alerts without a case where they fire"
    assert names - quiet == set(), "alerts without a case where they do not fire"
    assert (fires | quiet) <= names, "cases of alerts that do not exist"


def test_every_alert_has_a_severity_a_summary_and_a_description():
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)) == len(rules())  # only alerts, each name once
    for rule in alerts():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert all(len(text) > 20 for text in rule["annotations"].values()), rule["alert"]
        assert re.fullmatch(r"Bentos[A-Z]\w+", rule["alert"])
    # The rates, the quantile and the age wait before they page; a pushed failure does not.
    waits = {rule["alert"] for rule in alerts() if "for" in rule}
    assert {"BentosHighErrorRate", "BentosHighLatency", "BentosOverloaded"} <= waits
    assert "BentosJobFailed" not in waits


def test_the_model_age_limit_is_the_one_the_rule_documents():
    """N, the age past which a served model alerts, is written once in the expression and said
    in its description (and in docs/observability.md)."""
    (rule,) = [r for r in alerts() if r["alert"] == "BentosModelTooOld"]
    (days,) = re.findall(r">\s*(\d+)\s*\*\s*86400", rule["expr"])
    assert f"more than {days} days ago" in rule["annotations"]["description"]
    assert f"{days} days" in (ROOT / "docs" / "observability.md").read_text()


def test_the_dashboard_configmap_is_the_dashboard_file_labelled_for_grafana_s_sidecar(monitored):
    cm = one(monitored, "ConfigMap", DASHBOARD)  # unhashed: a fixed name the sidecar replaces
    labels = cm["metadata"]["labels"]
    assert labels["grafana_dashboard"] == "1"
    data = config_map_data(monitored, DASHBOARD)
    assert list(data) == ["tabular-classifier.json"]
    assert data["tabular-classifier.json"] == DASHBOARD_JSON.read_text()
    # Well under the 1 MiB of a ConfigMap, and the 256 KiB of kubectl apply's annotation.
    assert len(data["tabular-classifier.json"].encode()) < 128 * 1024


def test_the_dashboard_has_the_panels_operators_look_for():
    board = dashboard()
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    assert {
        "bentos_requests_total",
        "bentos_request_duration_seconds_bucket",
        "bentos_model_inference_seconds_bucket",
        "bentos_model_batch_rows_sum",
        "bentos_model_batch_rows_count",
        "bentos_rejected_requests_total",
        "bentos_model_created_timestamp_seconds",
        "bentos_job_rows",
        "bentos_job_duration_seconds",
        "bentos_job_success",
        "bentos_job_last_success_timestamp_seconds",
        "bentos_drift_features_drifted",
        "bentos_evaluation_metric",
        "bentos_prediction_log_rows_total",
        "bentos_prediction_log_writer_cpu_seconds_total",
    } <= used
    queries = " ".join(dashboard_queries())
    assert "histogram_quantile(0.5," in queries and "histogram_quantile(0.99," in queries
    # The service's panels follow the namespace variable; the pushed jobs carry no namespace.
    for query in dashboard_queries():
        pushed = ("bentos_job_", "bentos_drift_", "bentos_evaluation_")
        service = any(
            n.startswith("bentos_") and not n.startswith(pushed) for n in metric_names(query)
        )
        assert ('namespace=~"$namespace"' in query) == service, query


def test_metric_names_are_read_out_of_promql():
    """The parser the name checks rely on (tests/integration/test_observability.py)."""
    assert metric_names(
        'sum by (namespace, le) (rate(a_bucket{route!="x", le=~"0.5|1"}[5m])) '
        "/ ignoring (kind) b > 0.5 * 86400 and on (job) group_left (owner) c:rec offset 1h"
    ) == {"a_bucket", "b", "c:rec"}
    assert metric_names("time() - max(d) by (model) > 1e3") == {"d"}
    assert metric_names("histogram_quantile(0.99, sum(rate(e[$__rate_interval])) by (le))") == {"e"}
    for expr in [r["expr"] for r in rules()] + dashboard_queries():
        assert metric_names(expr), expr


def test_an_overlay_of_prod_labels_both_operator_objects_for_its_prometheus(tmp_path):
    """docs/observability.md, "Installing": one JSON patch, targeted by group and name, adds
    the label a Prometheus' selectors ask for to the PodMonitor and the PrometheusRule, and to
    nothing else."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(K8S / "overlays" / "prod", tmp_path)],
                "patches": [
                    {
                        "target": {
                            "group": "monitoring.coreos.com",
                            "version": "v1",
                            "name": APP,
                        },
                        "patch": "- op: add\n  path: /metadata/labels/release\n"
                        "  value: kube-prometheus-stack\n",
                    }
                ],
            }
        )
    )
    labelled = {
        o["kind"]
        for o in render(tmp_path)
        if (o["metadata"].get("labels") or {}).get("release") == "kube-prometheus-stack"
    }
    assert labelled == set(OPERATOR_KINDS)
