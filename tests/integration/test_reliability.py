"""Reliability under bad input, overload and shutdown, against real servers.

The long load test (64 clients for 60 s) is marked `slow` and runs with `make test-slow`;
everything here runs in the default suite and asserts real behaviour.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.shutdown import HARMLESS, handled, load
from tests.support.strategies import ROW, json_values, rows

# -- generated requests against the real server -----------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.dictionaries(
        st.sampled_from(["instances", "x"]), st.lists(rows, max_size=4) | json_values, max_size=2
    )
    | json_values,
    route=st.sampled_from(["/predict", "/predict_edge"]),
)
def test_generated_bodies_never_get_a_5xx(server, body, route):
    resp = httpx.post(
        server.url + route,
        content=json.dumps(body, allow_nan=True),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code in (200, 400), resp.text
    if resp.status_code == 400:
        assert resp.json()["error"]


def test_schema_driven_requests_never_get_a_5xx(server):
    """schemathesis, from the service's own /openapi.json: valid and invalid requests to every
    operation (/predict, /predict_edge, the V2 infer route), well over a thousand in all."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    calls: Counter[str] = Counter()

    def check_all(label: str, strategy) -> None:
        @settings(
            max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(case=strategy)
        def check(case):
            response = case.call()
            calls[label] += 1
            calls[f"{response.status_code // 100}xx"] += 1
            assert response.status_code < 500, (case.as_curl_command(), response.text)
            if response.status_code >= 400:
                content_type = response.headers.get("content-type") or [""]
                assert content_type[0].startswith("application/json"), case.as_curl_command()
                assert response.json()["error"], response.text

        check()

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                check_all(operation.label, operation.as_strategy(generation_mode=mode))
            except Unsatisfiable:
                # An operation that takes no input (a probe, /metrics) has no invalid case.
                assert mode is GenerationMode.NEGATIVE, operation.label
    print("schemathesis calls:", dict(calls))
    total = sum(v for k, v in calls.items() if " " in k)
    assert total >= 1000, dict(calls)
    assert calls["5xx"] == 0
    assert calls["2xx"] > 0 and calls["4xx"] > 0  # both valid and invalid input were sent


# -- overload ------------------------------------------------------------------------------------


def _hammer(url: str, body: dict, clients: int, seconds: float) -> tuple[Counter, list[float]]:
    statuses: Counter = Counter()
    slowest: list[float] = []
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            worst = 0.0
            while time.monotonic() < stop:
                t0 = time.monotonic()
                try:
                    resp = http.post(url, json=body)
                    statuses[resp.status_code] += 1
                    if resp.status_code != 200:
                        assert resp.json()["error"]
                except httpx.TransportError as exc:
                    statuses[type(exc).__name__] += 1
                worst = max(worst, time.monotonic() - t0)
            slowest.append(worst)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, slowest


@pytest.fixture(scope="module")
def small_server(serve, pinned, tmp_path_factory):
    """A server that takes 4 requests at a time (2 per worker) and times out after 5 s."""
    config = tmp_path_factory.mktemp("cfg") / "bentoml.yaml"
    config.write_text("services:\n  tabular-classifier:\n    traffic:\n      timeout: 5\n")
    env = {"BENTOML_CONFIG": str(config), "BENTOS_MAX_CONCURRENCY": "2", **pinned}
    srv = serve(env).wait_ready()
    yield srv
    srv.stop()


def test_overload_is_refused_fast_and_accepted_requests_succeed(small_server):
    body = {"instances": [ROW] * 50}
    statuses, slowest = _hammer(small_server.url + "/predict", body, clients=32, seconds=4)
    assert statuses[429] > 0, statuses  # excess refused...
    assert statuses[200] > 0, statuses  # ...while accepted requests succeed
    assert set(statuses) <= {200, 429}, statuses  # nothing else: no 5xx, no dropped connection
    assert max(slowest) < 5, slowest  # no request waited past the timeout
    # And it recovers once the load stops.
    assert httpx.post(small_server.url + "/predict", json={"instances": [ROW]}).status_code == 200


@pytest.mark.slow
def test_64_clients_for_60_seconds_lose_no_accepted_request(server):
    statuses, slowest = _hammer(
        server.url + "/predict", {"instances": [ROW]}, clients=64, seconds=60
    )
    print("64 clients, 60 s:", dict(statuses), "slowest", max(slowest))
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] > 0


# -- graceful shutdown ---------------------------------------------------------------------------


def test_sigterm_under_load_finishes_every_accepted_request(serve, pinned):
    srv = serve(pinned).wait_ready()
    with load(srv.url + "/predict", {"instances": [ROW] * 20}) as outcomes:
        time.sleep(2)
        t0 = time.monotonic()
        os.killpg(srv.proc.pid, signal.SIGTERM)
        srv.proc.wait(60)
        exit_s = time.monotonic() - t0
    srv.stop()
    counted = handled(srv.home / "prometheus_multiproc_dir")
    print(
        "shutdown:", dict(outcomes), "server handled:", dict(counted), f"exit after {exit_s:.1f}s"
    )
    assert outcomes[200] > 0
    # Every request the server took in was answered, and every answer reached its client (the
    # preStop pause keeps the harmless outcomes away in a cluster).
    assert counted == {200: outcomes[200]}, (counted, outcomes)
    assert set(outcomes) <= {200, *HARMLESS}, outcomes
    assert exit_s < 30  # within the pod's grace period after preStop (60 s - 10 s)
