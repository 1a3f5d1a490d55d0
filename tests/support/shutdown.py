"""Load a server while it shuts down, and read what it counted: the check that a shutdown loses
no accepted request, shared by the source-tree test and the image test."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

# What a client may see besides a 200 without a request being lost: refused at connect (never
# accepted), or reset before the server read it (queued in the kernel when the socket closed);
# the server's own count, compared with the 200s, shows none of those was taken in.
HARMLESS = {"refused", "reset before read"}


@contextmanager
def load(url: str, body: dict, clients: int = 8) -> Iterator[Counter]:
    """Clients posting `body` to `url` until the block ends, a new connection each time (as
    after a load balancer dropped the pod); yields the outcomes, counted as they come."""
    outcomes: Counter = Counter()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                resp = httpx.post(url, json=body, headers={"connection": "close"}, timeout=60)
                outcomes[resp.status_code] += 1
            except httpx.ConnectError:
                outcomes["refused"] += 1
                time.sleep(0.01)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                outcomes["reset before read"] += 1
            except httpx.TransportError as exc:
                outcomes[f"lost: {type(exc).__name__}"] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield outcomes
    finally:
        time.sleep(0.5)  # the last requests meet the closed port
        stop.set()
        for t in threads:
            t.join()


def handled(prometheus_dir: Path, route: str = "/predict") -> Counter:
    """Responses by status that the service counted for `route` (bentos.serving.metrics), from
    the Prometheus multiprocess files it leaves behind (they outlive the server)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(prometheus_dir))
    counted: Counter = Counter()
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "bentos_requests_total" and sample.labels["route"] == route:
                counted[int(sample.labels["status"])] += int(sample.value)
    return counted
