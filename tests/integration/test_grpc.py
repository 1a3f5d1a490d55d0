"""The gRPC server's processes (bentos.serving.grpc), for real: workers sharing one port, their
metrics added up on the supervisor's port, the per-worker concurrency limit, and how the
supervisor ends: with its workers on SIGTERM, and with an error when a worker dies. (The
protocol itself, over both transports: test_v2.py.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from benchmarks.servers import ROOT, Process, free_port
from tests.support import SERVER_ENV
from tests.support.monitoring import scrape

REQUESTS = 'bentos_requests_total{route="ModelInfer",status="200",transport="grpc"}'
REFUSED = 'bentos_rejected_requests_total{reason="too_many_in_flight",route="ModelInfer",transport="grpc"}'


def _metrics_folder(srv: Process) -> Path:
    """The workers' prometheus_client folder: its files are mapped into each worker."""
    maps = Path(f"/proc/{srv.children()[0]}/maps").read_text().split()
    return next(Path(p).parent for p in maps if "/bentos-grpc-metrics-" in p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _infer(address: str, rows: int = 1) -> None:
    """One call on a channel (a TCP connection) of its own."""
    client = tgrpc.InferenceServerClient(address)
    try:
        inp = tgrpc.InferInput("features", [rows, 4], "FP32")
        inp.set_data_from_numpy(np.full((rows, 4), 1.5, dtype=np.float32))
        client.infer("rf", [inp])
    finally:
        client.close()


def test_calls_over_many_connections_are_answered_by_every_worker_and_counted_once(grpc_start):
    srv = grpc_start(BENTOS_GRPC_WORKERS="2")
    workers = srv.children()
    assert len(workers) == 2
    for _ in range(30):
        _infer(srv.address)
    # The supervisor's /metrics adds up the workers' series: every call once, no more.
    assert scrape(srv.metrics_url)[REQUESTS] == 30
    # A worker writes its request counter once it has answered a request: both did (the
    # kernel spreads new connections over the port's listeners; all 30 on one is 2**-29).
    folder = _metrics_folder(srv)
    assert {p for p in workers if (folder / f"counter_{p}.db").exists()} == set(workers)


def test_calls_past_the_concurrency_limit_are_refused_with_resource_exhausted(grpc_start):
    srv = grpc_start(
        BENTOS_GRPC_WORKERS="1",
        BENTOS_MAX_CONCURRENCY="1",
        BENTOS_MAX_ROWS="1000",
        BENTOS_MAX_BODY_BYTES="100000",
    )

    def call(_: int) -> str:
        try:
            _infer(srv.address, rows=1000)
        except InferenceServerException as exc:
            return exc.status()
        return "OK"

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(64)))
    # Each call is answered: OK, or refused at once; nothing else (no timeout, no INTERNAL).
    assert set(answers) == {"OK", "StatusCode.RESOURCE_EXHAUSTED"}, answers
    # The refusals are the server's own, after the message arrived, and say why in /metrics.
    rejected = scrape(srv.metrics_url)[REFUSED]
    assert rejected == answers.count("StatusCode.RESOURCE_EXHAUSTED")


def test_sigterm_to_the_supervisor_stops_every_worker_and_exits_0(grpc_start):
    srv = grpc_start(BENTOS_GRPC_WORKERS="2")
    workers, folder = srv.children(), _metrics_folder(srv)
    _infer(srv.address)
    os.kill(srv.proc.pid, signal.SIGTERM)  # the container's main process only, as the kubelet does
    assert srv.proc.wait(30) == 0, srv.output()
    assert not any(_alive(p) for p in workers)
    assert not folder.exists()


def test_a_worker_that_dies_stops_the_others_and_the_server_exits_with_an_error(grpc_start):
    srv = grpc_start(BENTOS_GRPC_WORKERS="2")
    dead, other = srv.children()
    os.kill(dead, signal.SIGKILL)
    assert srv.proc.wait(30) == 1
    assert f"gRPC worker {dead} exited with -9; stopping the others" in srv.output()
    assert not _alive(other)


def test_workers_below_one_is_a_usage_error_naming_the_flag():
    proc = subprocess.run(
        [sys.executable, "-m", "bentos.serving.grpc", "--workers", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--workers must be at least 1, got 0" in proc.stderr


def test_a_metrics_port_in_use_stops_the_server_with_a_message(pinned):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", str(port)]
        proc = subprocess.run(
            [sys.executable, "-m", "bentos.serving.grpc", *args],
            cwd=ROOT,
            env={**os.environ, **SERVER_ENV, **pinned},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
