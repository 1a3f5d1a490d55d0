"""Start and stop the servers a benchmark compares, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A server process; `ready_path` answers 200 once it can serve."""

    def __init__(self, args: list[str], *, ready_path: str, port: int, env: dict | None = None):
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.log = open(os.devnull, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.cold_start_s: float | None = None

    def wait_ready(self, timeout: float = 180) -> Process:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args} exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    self.cold_start_s = time.perf_counter() - self.started
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.proc.args} not ready in {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Process:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def bentoml_serve(target: str = ".", env: dict | None = None) -> Process:
    port = free_port()
    return Process(
        [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        ready_path="/readyz",
        port=port,
        env=env,
    )
