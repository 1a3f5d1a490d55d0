"""The image tests: the real Bento image, built by a real container engine from freshly trained
models, and each container run as the prod overlay declares it (tests/image/pod.py).

`make test-image` makes the engine ready first (tests/image/engine.sh). Without an engine every
test here fails; none is skipped.
"""

from __future__ import annotations

import pytest

from tests.support.objectstore import ObjectStore, moto_server

from .harness import Image, build_image
from .pod import DOCKER, docker, remove_all

IMAGE = "bentos-image-test"
BUCKET = "bentos-image-test"


@pytest.fixture(scope="session")
def engine() -> None:
    proc = docker("info", check=False)
    assert proc.returncode == 0, (
        f"no container engine answers {DOCKER}: run tests/image/engine.sh as root "
        f"(make test-image does)\n{proc.stderr}"
    )
    remove_all()
    yield
    remove_all()


@pytest.fixture(scope="session")
def image(engine, trained) -> Image:
    """The image of the session's freshly trained models (tests/conftest.py: `trained`)."""
    return build_image(f"{IMAGE}:session")


@pytest.fixture(scope="session")
def train_image(engine, trained) -> Image:
    """The training image (bentofile-train.yaml): the retrain CronJob's, with TensorFlow."""
    from benchmarks.servers import ROOT

    return build_image(f"{IMAGE}:train", bentofile=ROOT / "bentofile-train.yaml")


@pytest.fixture(scope="session")
def s3() -> ObjectStore:
    """moto's server mode on loopback, with the tests' bucket."""
    with moto_server(BUCKET) as store:
        yield store
