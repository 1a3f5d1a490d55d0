"""Start and stop servers on loopback: the one launcher of the benchmarks and the tests.

`bentoml_serve` runs `bentoml serve` of this checkout (or of any target), `grpc_serve` the gRPC
server; each is a `Process`, ready once its readiness check passes, with its output kept in a
log file for a failure message.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
_PORTS = random.SystemRandom()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range. A port the kernel picks for a
    bind to port 0 is one it may hand out again, before the server binds it, to anything else
    that binds to port 0 (BentoML's process manager and its ZeroMQ sockets do): a test once
    failed on exactly that. Ports below the range are never picked so."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(1000):
        # From the OS, not the module's generator: tests seed that one (hypothesis does), and
        # two of the suite's workers (pytest -n 2) then drew the same ports in the same order.
        port = _PORTS.randrange(low // 2, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port found in {low // 2}-{low - 1}")


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    return check


def grpc_ready(address: str) -> Callable[[], bool]:
    """The standard health service answers SERVING (what Kubernetes gRPC probes ask)."""

    def check() -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

    return check


class Process:
    """A server process, in a session of its own (so that stop() reaches its workers too)."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        ready: Callable[[], bool],
        port: int,
        env: dict[str, str] | None = None,
        inherit: bool = True,
        cwd: Path = ROOT,
    ):
        """`env` adds to this process's environment, or with inherit=False replaces it."""
        self.args = list(args)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.address = f"127.0.0.1:{port}"
        self._ready = ready
        fd, log = tempfile.mkstemp(prefix="bentos-server-", suffix=".log")
        os.close(fd)
        self.log = Path(log)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.args,
            cwd=cwd,
            env={**os.environ, **(env or {})} if inherit else dict(env or {}),
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.cold_start_s: float | None = None

    def wait_ready(self, timeout: float = 180) -> Process:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited ({self.proc.returncode}):\n{self.output()}")
            if self._ready():
                self.cold_start_s = time.perf_counter() - self.started
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.args} not ready in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:] if self.log.exists() else ""

    def children(self) -> list[int]:
        """The process ids it started itself (the gRPC supervisor's workers)."""
        pid = self.proc.pid
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> Process:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def bentoml_serve(
    target: str = ".",
    env: dict[str, str] | None = None,
    *,
    port: int | None = None,
    pass_port: bool = True,
    inherit: bool = True,
    cwd: Path = ROOT,
) -> Process:
    """`bentoml serve target` on loopback: on `port` (a free one by default), or, with
    pass_port=False, on the port its configuration gives, which `port` must then name."""
    port = port or free_port()
    args = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1"]
    if pass_port:
        args += ["--port", str(port)]
    ready = http_ready(f"http://127.0.0.1:{port}/readyz")
    return Process(args, ready=ready, port=port, env=env, inherit=inherit, cwd=cwd)


def gunicorn_serve(env: dict[str, str]) -> Process:
    """The Flask baseline (benchmarks/baseline/flask_app.py) under gunicorn, 2 sync workers, as
    the tutorial deploys it; `env` names its model (BASELINE_MODEL, _FEATURES, _LABELS)."""
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
    return Process(
        [*args, "benchmarks.baseline.flask_app:app"],
        ready=http_ready(f"http://127.0.0.1:{port}/health"),
        port=port,
        env=env,
    )


def uvicorn_serve(app: str, workers: int = 2) -> Process:
    """An ASGI app under bare uvicorn on loopback: uvloop and httptools, `workers` processes,
    no access log (the floor, benchmarks/variants/floor.py)."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", str(workers), "--loop", "uvloop", "--http", "httptools"]
    args += ["--no-access-log", "--log-level", "warning"]
    return Process(args, ready=http_ready(f"http://127.0.0.1:{port}/"), port=port)


def grpc_serve(env: dict[str, str] | None = None, *, port: int | None = None) -> Process:
    """The gRPC server (bentos.serving.grpc) on loopback, ready once its health says SERVING
    and every worker has said it listens (until then the first one gets every connection)."""
    from bentos.settings import GrpcSettings

    port = port or free_port()
    metrics_port = free_port()
    args = [sys.executable, "-m", "bentos.serving.grpc", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--metrics-port", str(metrics_port)]
    workers = int(
        {**os.environ, **(env or {})}.get(
            "BENTOS_GRPC_WORKERS", GrpcSettings.model_fields["workers"].default
        )
    )
    serving = grpc_ready(f"127.0.0.1:{port}")

    def ready() -> bool:
        return process.output().count("gRPC listening") >= workers and serving()

    process = Process(args, ready=ready, port=port, env=env)
    process.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    return process
