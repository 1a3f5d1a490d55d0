"""Should the gRPC server run the models itself, or forward to the HTTP service over loopback?

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.probe_grpc_placement

Starts the HTTP service, `python -m bentos.grpc` (models in-process) and a forwarding variant
(benchmarks/variants/grpc_forward.py), and loads each gRPC server with single-row ModelInfer
calls on the RandomForest at 1 and 16 clients.
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc
import numpy as np

from benchmarks import loadgen
from benchmarks.servers import Process, bentoml_serve, free_port


def grpc_process(args: list[str], port: int) -> Process:
    proc = Process([sys.executable, *args], ready_path="", port=port)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=1)
            time.sleep(2)  # the port opens after the models load in bentos.grpc; settle anyway
            return proc
        except grpc.FutureTimeoutError:
            time.sleep(0.2)
    raise RuntimeError(f"{args} not ready")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=8)
    args = parser.parse_args()
    from bentos.models import open_model

    n = len(open_model("rf-classifier:latest").schema.features)
    x = np.random.default_rng(0).normal(size=(1, n)).astype(np.float32)
    print(f"{'variant':28} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    with bentoml_serve(".") as http:
        p1, p2 = free_port(), free_port()
        inproc = grpc_process(["-m", "bentos.grpc", "--host", "127.0.0.1", "--port", str(p1)], p1)
        forward = grpc_process(
            ["-m", "benchmarks.variants.grpc_forward", "--port", str(p2), "--http", http.url], p2
        )
        try:
            for name, port in (("in-process (bentos.grpc)", p1), ("forward to HTTP", p2)):
                for clients in (1, 16):
                    r = loadgen.run_grpc(
                        f"127.0.0.1:{port}", "rf", x, concurrency=clients, duration=args.duration
                    )
                    print(
                        f"{name:28} {clients:>7} {r.rps:>8.1f} {r.pct(50):>8.2f} {r.pct(99):>8.2f} {r.errors:>6}"
                    )
        finally:
            inproc.stop()
            forward.stop()


if __name__ == "__main__":
    main()
