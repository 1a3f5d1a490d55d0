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
