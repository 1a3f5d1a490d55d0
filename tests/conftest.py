"""Shared fixtures: one real model store for the whole session, trained once, small."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# BentoML reads its home when first imported: point it at a throwaway store before that.
_HOME = Path(tempfile.mkdtemp(prefix="bentos-test-home-"))
os.environ["BENTOML_HOME"] = str(_HOME)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

import pytest  # noqa: E402

from bentos.training import TrainConfig, TrainResult, train  # noqa: E402

# Small but real: enough trees and epochs to pass the default gates on iris.
FAST = {"n_estimators": 30, "epochs": 60}


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def trained(bentoml_home: Path) -> TrainResult:
    """The default models (iris, dynamic quantization), registered in the session's store."""
    return train(TrainConfig(**FAST))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HOME, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `bentoml serve` of this repo's service.py, in a subprocess."""

    def __init__(self, env: dict[str, str] | None = None, cwd: Path = ROOT, args: tuple = ()):
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(env or {})
        if "BENTOML_HOME" not in env:
            # A home of its own, sharing the session's models: each `bentoml serve` empties its
            # home's Prometheus directory at start, which would reset another server's metrics.
            home = Path(tempfile.mkdtemp(prefix="bentoml-serve-home-"))
            (home / "models").symlink_to(_HOME / "models", target_is_directory=True)
            env["BENTOML_HOME"] = str(home)
        self.home = Path(env["BENTOML_HOME"])
        fd, log = tempfile.mkstemp(prefix="bentoml-serve-", suffix=".log")
        os.close(fd)
        self.log = Path(log)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                ".",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *args,
            ],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120) -> Server:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except Exception:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.unlink(missing_ok=True)


# Small limits, so the tests can cross them cheaply (and every client in the suite sees its
# keep-alive connections closed every few responses).
SERVER_ENV = {
    "BENTOS_MAX_ROWS": "50",
    "BENTOS_MAX_BODY_BYTES": "20000",
    "BENTOS_KEEPALIVE_REQUESTS": "5",
}


@pytest.fixture(scope="session")
def server(trained) -> Server:
    # Pinned: other tests register newer versions, and :latest would follow them.
    env = {
        **SERVER_ENV,
        "BENTOS_RF_MODEL": trained.rf_tag,
        "BENTOS_TFLITE_MODEL": trained.tflite_tag,
    }
    srv = Server(env).wait_ready()
    yield srv
    srv.stop()


class GrpcServer:
    """A real `python -m bentos.grpc`, in a subprocess."""

    def __init__(self, env: dict[str, str] | None = None):
        import subprocess
        import sys

        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        fd, log = tempfile.mkstemp(prefix="bentos-grpc-", suffix=".log")
        os.close(fd)
        self.log = Path(log)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentos.grpc", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120) -> GrpcServer:
        import time

        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"gRPC server exited ({self.proc.returncode}):\n{self.output()}"
                    )
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.3)
        raise RuntimeError(f"gRPC server not ready in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        Server.stop(self)  # same process-group handling


@pytest.fixture(scope="session")
def grpc_server(trained) -> GrpcServer:
    env = {
        **SERVER_ENV,
        "BENTOS_RF_MODEL": trained.rf_tag,
        "BENTOS_TFLITE_MODEL": trained.tflite_tag,
    }
    srv = GrpcServer(env).wait_ready()
    yield srv
    srv.stop()
