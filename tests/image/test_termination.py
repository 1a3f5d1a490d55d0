"""Ending the server container as the kubelet ends it, under load: no accepted request lost.

A module of its own: the container binds the manifest's port on the host's loopback, which the
online module's pod holds while its tests run."""

from __future__ import annotations

import time

from tests.support.k8s import container_port, one
from tests.support.shutdown import HARMLESS, handled, load
from tests.support.strategies import ROW

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
    try:
        server = pod.start("server")
        server.wait_started()
        url = f"http://127.0.0.1:{container_port(server.spec, 'http')}/predict"
        with load(url, {"instances": [ROW] * 20}) as outcomes:
            time.sleep(2)
            t0 = time.monotonic()
            code = server.terminate()
            took = time.monotonic() - t0
        logs = server.logs()
        counted = handled(pod.volume("bentoml-home") / "prometheus_multiproc_dir")
    finally:
        pod.remove()
    grace = pod.spec["terminationGracePeriodSeconds"]
    print(
        f"termination: {dict(outcomes)}, server handled {dict(counted)}, {took:.1f} s, exit {code}"
    )
    assert outcomes[200] > 0
    assert counted == {200: outcomes[200]}, (counted, outcomes)
    assert set(outcomes) <= {200, *HARMLESS}, outcomes
    assert took < grace, f"the kubelet would have killed it after {grace} s:\n{logs[-3000:]}"
