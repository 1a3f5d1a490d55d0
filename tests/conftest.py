"""Shared fixtures: one real model store for the whole session, trained once, small, and real
servers over it (benchmarks.servers, the one launcher). Helpers live in tests/support."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# BentoML reads its home when first imported: point it at a throwaway store before that.
_HOME = Path(tempfile.mkdtemp(prefix="bentos-test-home-"))
os.environ["BENTOML_HOME"] = str(_HOME)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from benchmarks.servers import Process, bentoml_serve, grpc_serve  # noqa: E402
from bentos.training.pipeline import TrainConfig, TrainResult, train  # noqa: E402
from tests.support import FAST, SERVER_ENV  # noqa: E402

# Generated input (tests/unit/test_fuzz.py and others): a bounded sample in the suite; `long`
# for a recorded run (pytest --hypothesis-profile=long, docs/reliability.md).
settings.register_profile("ci", max_examples=300, deadline=None, database=None)
settings.register_profile(
    "long",
    max_examples=25_000,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def trained(bentoml_home: Path) -> TrainResult:
    """The default models (iris, dynamic quantization), registered in the session's store."""
    return train(TrainConfig(**FAST))


_SERVE_HOMES: list[Path] = []


def pytest_sessionfinish(session, exitstatus):
    for home in [_HOME, *_SERVE_HOMES]:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def serve() -> Callable[..., Process]:
    """Start `bentoml serve` of this checkout with `env`: `serve(env).wait_ready()`.

    Unless env names a BENTOML_HOME, each server gets a home of its own that shares the
    session's models: each `bentoml serve` empties its home's Prometheus directory at start,
    which would reset another server's metrics."""

    def start(env: dict[str, str] | None = None, **kw) -> Process:
        env = dict(env or {})
        if "BENTOML_HOME" not in env:
            home = Path(tempfile.mkdtemp(prefix="bentoml-serve-home-"))
            _SERVE_HOMES.append(home)
            (home / "models").symlink_to(_HOME / "models", target_is_directory=True)
            env["BENTOML_HOME"] = str(home)
        srv = bentoml_serve(".", env, **kw)
        srv.home = Path(env["BENTOML_HOME"])
        return srv

    return start


@pytest.fixture(scope="session")
def pinned(trained) -> dict[str, str]:
    """The session's model tags: other tests register newer versions, which :latest follows."""
    return {"BENTOS_RF_MODEL": trained.rf_tag, "BENTOS_TFLITE_MODEL": trained.tflite_tag}


@pytest.fixture(scope="session")
def job_env(trained, bentoml_home) -> dict[str, str]:
    """The environment of a job run on the session's store, its models pinned."""
    return {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home),
        "BENTOS_RF_MODEL": trained.rf_tag,
        "BENTOS_TFLITE_MODEL": trained.tflite_tag,
    }


@pytest.fixture(scope="session")
def server(serve, pinned) -> Process:
    srv = serve({**SERVER_ENV, **pinned}).wait_ready()
    yield srv
    srv.stop()


@pytest.fixture
def grpc_start(pinned) -> Callable[..., Process]:
    """Start gRPC servers (bentos.serving.grpc) of the session's models with `env` added:
    `grpc_start(**env)`, ready; each is stopped at the test's end. Held-call tests open a
    thousand connections, a descriptor each here and in the server's workers (which inherit
    the limit): the soft limit is raised for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))
    started: list[Process] = []

    def start(**env: str) -> Process:
        srv = grpc_serve({**SERVER_ENV, **pinned, **env}).wait_ready()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="session")
def grpc_server(pinned) -> Process:
    srv = grpc_serve({**SERVER_ENV, **pinned}).wait_ready()
    yield srv
    srv.stop()
