"""Ending the server container as the kubelet ends it, under load: no accepted request lost.

A module of its own: the container binds the manifest's port on the host's loopback, which the
online module's pod holds while its tests run."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx

from tests.support.k8s import container_port, one

from .harness import render_overlay
from .pod import Pod


def test_termination_under_load_loses_no_accepted_request(image, tmp_path):
    """The kubelet's way: preStop (the manifest's pause), SIGTERM, and SIGKILL once the grace
    period is up; clients keep sending throughout, a new connection each time (as after a load
    balancer dropped the pod). The server's own count, from the Prometheus files it leaves in
    its emptyDir, must equal the 200s the clients received."""
    objects = render_overlay(tmp_path / "overlay", image.ref)
    deployment = one(objects, "Deployment", "tabular-classifier")
    pod = Pod(objects, deployment, name="terminating", root=tmp_path / "pod")
    stop = threading.Event()
    try:
        server = pod.start("server")
        server.wait_started()
        url = f"http://127.0.0.1:{container_port(server.spec, 'http')}/predict"
        row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        outcomes: Counter = Counter()

        def client() -> None:
            while not stop.is_set():
                try:
                    resp = httpx.post(
                        url,
                        json={"instances": [row] * 20},
                        headers={"connection": "close"},
                        timeout=60,
                    )
                    outcomes[resp.status_code] += 1
                except httpx.ConnectError:
                    outcomes["refused"] += 1
                    time.sleep(0.01)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    outcomes["reset before read"] += 1  # checked against the server's count
                except httpx.TransportError as exc:
                    outcomes[f"lost: {type(exc).__name__}"] += 1

        threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(2)
        t0 = time.monotonic()
        code = server.terminate()
        took = time.monotonic() - t0
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        logs = server.logs()
        handled = _handled(pod.volume("bentoml-home") / "prometheus_multiproc_dir")
    finally:
        stop.set()
        pod.remove()
    grace = pod.spec["terminationGracePeriodSeconds"]
    print(
        f"termination: {dict(outcomes)}, server handled {dict(handled)}, {took:.1f} s, exit {code}"
    )
    assert outcomes[200] > 0
    assert handled == {200: outcomes[200]}, (handled, outcomes)
    assert set(outcomes) <= {200, "refused", "reset before read"}, outcomes
    assert took < grace, f"the kubelet would have killed it after {grace} s:\n{logs[-3000:]}"


def _handled(folder) -> Counter:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    handled: Counter = Counter()
    for metric in registry.collect():
        for sample in metric.samples:
            if (
                sample.name == "bentoml_service_request_total"
                and sample.labels["endpoint"] == "/predict"
            ):
                handled[int(sample.labels["http_response_code"])] += int(sample.value)
    return handled
