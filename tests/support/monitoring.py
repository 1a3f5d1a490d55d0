"""The monitoring component (k8s/components/monitoring) as the tests read it: its rule file,
promtool's test file and the Grafana dashboard, the PromQL they hold and the metric names in it,
and Debian's Prometheus binaries (tests/support/apt.sh installs them for `make test`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from benchmarks.servers import Process, free_port, http_ready
from tests.support.k8s import K8S

MONITORING = K8S / "components" / "monitoring"
RULES = MONITORING / "rules.yaml"
RULES_TEST = MONITORING / "rules_test.yaml"
DASHBOARD_JSON = MONITORING / "dashboard.json"

# What a Grafana variable of the dashboard stands for when its query is sent to Prometheus
# directly: every namespace, and a rate window of a few scrapes.
GRAFANA_VARIABLES = {"$namespace": ".*", "$__rate_interval": "30s"}

# A PromQL identifier that is not a metric name: a keyword, an operator word, a literal.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def debian_tool(name: str) -> str:
    """A binary of Debian's prometheus or prometheus-pushgateway package; an AssertionError
    (a failure, never a skip) when it is missing."""
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs it (tests/support/apt.sh, as root)"
    return path


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [debian_tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_JSON.read_text())


def panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard but its rows."""
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[str]:
    """Every panel query, as written for Grafana (with its variables)."""
    return [t["expr"] for p in panels() for t in p["targets"]]


def as_promql(grafana_expr: str) -> str:
    """A dashboard query with its Grafana variables replaced (GRAFANA_VARIABLES)."""
    expr = grafana_expr
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {grafana_expr}"
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers standing alone or followed by
    `{` or `[`, not by `(` (functions, aggregations), once label matchers, range and label lists
    (by, without, on, ignoring, group_left, group_right) and strings are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    # Not after a word character, a dot or `$`: 1e3, 0.5 and variables are not names.
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)\s*(\()?", text):
        name, call = match.groups()
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def sample_names(exposition: str) -> set[str]:
    """The sample names of a Prometheus text exposition (a histogram's _bucket, _sum, _count)."""
    return {
        re.split(r"[{\s]", line, maxsplit=1)[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


def scrape(url: str) -> dict[str, float]:
    """A server's /metrics as {sample with its labels, as exposed: value}."""
    import httpx

    text = httpx.get(url, timeout=30).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@contextmanager
def pushgateway_server(folder: Path) -> Iterator[Process]:
    """Debian's Prometheus Pushgateway on loopback, its data in `folder`."""
    port = free_port()
    args = [
        debian_tool("prometheus-pushgateway"),
        f"--web.listen-address=127.0.0.1:{port}",
        f"--persistence.file={folder / 'pushgateway.data'}",
    ]
    with Process(args, ready=http_ready(f"http://127.0.0.1:{port}/-/ready"), port=port) as gw:
        yield gw
