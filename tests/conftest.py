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


# Small limits, so the tests can cross them cheaply.
SERVER_ENV = {"BENTOS_MAX_ROWS": "50", "BENTOS_MAX_BODY_BYTES": "20000"}


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
