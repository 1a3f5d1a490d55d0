"""The Bento: built for real from this checkout; the container build itself is not run here
(no container engine on this machine), only its generated Dockerfile is checked."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.utils import canonicalize_name

from benchmarks.servers import ROOT
from tests.support import locks


def _build(bentoml_home: Path, bentofile: str) -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", ".", "-f", bentofile, "--output", "tag"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    tag = proc.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    path = bentoml_home / "bentos" / name / version
    assert path.is_dir(), proc.stdout
    return path


@pytest.fixture(scope="session")
def bento_dir(trained, bentoml_home) -> Path:
    """The serving image's Bento."""
    return _build(bentoml_home, "bentofile.yaml")


@pytest.fixture(scope="session")
def train_bento_dir(trained, bentoml_home) -> Path:
    """The training image's Bento (the retrain CronJob's)."""
    return _build(bentoml_home, "bentofile-train.yaml")


# The image each manifest names -> the Bento it is built from.
IMAGES = {"tabular-classifier": "bento_dir", "tabular-classifier-train": "train_bento_dir"}


def test_bento_packs_the_service_code_and_both_models(bento_dir):
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert info["service"] == "service:TabularClassifier"
    assert {m["tag"].split(":")[0] for m in info["models"]} == {
        "rf-classifier",
        "tflite-classifier",
    }
    for path in (
        "service.py",
        "bentos/schema/__init__.py",
        "bentos/runners.py",
        "jobs/__init__.py",
    ):
        assert (bento_dir / "src" / path).is_file(), path
    assert not (bento_dir / "src" / "tests").exists()


def test_the_bento_s_models_carry_their_training_reports(bento_dir, tmp_path):
    # As `bentoml containerize` lays the models out in the image.
    from _bentoml_sdk.models import BentoModel

    from bentos.models import REPORT_DIR, REPORT_PAGE

    for model in yaml.safe_load((bento_dir / "bento.yaml").read_text())["models"]:
        BentoModel(model["tag"]).resolve(tmp_path / "models")
        name, version = model["tag"].split(":")
        report = tmp_path / "models" / name / version / REPORT_DIR
        assert (report / REPORT_PAGE).is_file(), model["tag"]
        assert {p.suffix for p in report.iterdir()} == {".html", ".png"}, model["tag"]


def _image_pins(bento_dir: Path) -> dict[str, locks.Pin]:
    """What the image installs: the Bento's requirements as `bentoml build` wrote them, for the
    image's Python (Dockerfile.template installs them with --no-deps)."""
    text = (bento_dir / "env" / "python" / "requirements.txt").read_text()
    return locks.read(text, locks.IMAGE_PYTHON)


def test_bento_locked_requirements_serve_without_tensorflow_or_matplotlib(bento_dir):
    pins = set(_image_pins(bento_dir))
    assert {"bentoml", "ai-edge-litert", "scikit-learn", "numpy"} <= pins
    assert not any("tensorflow" in p or p in {"keras", "tf-keras"} for p in pins), sorted(pins)
    assert "matplotlib" not in pins  # the reports are drawn at training, served as files


def _entry_points() -> dict[str, list[str]]:
    """Image -> the modules its containers in the prod overlay run (`python -m X`), or "service"
    for the serving image's default command, `bentoml serve` of service.py."""
    from tests.support.k8s import pod_templates, render

    found: dict[str, set[str]] = {}
    for _, template in pod_templates(render("prod")):
        for ctr in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            argv = [*(ctr.get("command") or []), *(ctr.get("args") or [])]
            image = ctr["image"].rsplit("/", 1)[-1].split(":")[0]
            found.setdefault(image, set()).add(
                argv[argv.index("-m") + 1] if "-m" in argv else "service"
            )
    assert set(found) <= set(IMAGES), f"the manifests name images no Bento builds: {set(found)}"
    return {image: sorted(entries) for image, entries in found.items()}


# Runs what each entry point runs, in process, the way the image runs it: the models read from
# the Bento's own store (BENTO_PATH), a writable BENTOML_HOME of its own for what the retrain job
# registers. Prints, per imported top-level module, the distributions providing it.
_RUN_ENTRY_POINTS = """
import importlib.metadata as md, json, sys, tempfile
from pathlib import Path
import numpy as np
from bentos.training.data import load_builtin

work = Path(tempfile.mkdtemp())
iris = load_builtin("iris")
iris.features.assign(species=iris.target).to_csv(work / "iris.csv", index=False)


def service():
    import service  # noqa: F401
    from bentos.runners import RandomForestRunner, TFLiteRunner

    for backend in RandomForestRunner.BACKENDS:
        RandomForestRunner("rf-classifier:latest", backend).predict_proba(np.zeros((1, 4)))
    TFLiteRunner("tflite-classifier:latest").predict_proba(np.zeros((1, 4)))


def grpc():
    import bentos.serving.grpc
    from bentos.settings import GrpcSettings, load

    bentos.serving.grpc.load_models(load(GrpcSettings).serving)


def batch_predict():
    from jobs import batch_predict

    args = ["--input", str(work / "iris.csv"), "--output", str(work / "out")]
    assert batch_predict.main(args) == 0


def retrain():
    import bentos.rollout  # noqa: F401
    import kubernetes.client  # noqa: F401  (what a rollout after a promotion loads)
    from jobs import retrain

    args = ["--data", str(work / "iris.csv"), "--target", "species"]
    args += ["--registry", str(work / "registry"), "--export-to", str(work / "models")]
    assert retrain.main(args) == 0


def monitor():
    from bentos.models import open_model, stored_versions
    from bentos.monitoring.predlog import PredictionLog
    from jobs import monitor

    if not stored_versions("rf-classifier"):  # the training image's Bento packs no models
        retrain()
    # A window of the log as a server writes it, then the drift check with its report.
    log = PredictionLog(str(work / "log"), source="test")
    rows = iris.features.head(60).to_dict("records")
    tag = open_model("rf-classifier:latest").tag
    log.record("r", tag, rows, ["setosa"] * 60, np.full((60, 3), 1 / 3, np.float32))
    log.close()
    assert monitor.main(["--log", str(work / "log"), "--since", "1h"]) in (0, 3)


def pull():
    from bentos.cli import main

    assert main(["models", "list", "--registry", str(work / "empty-registry")]) == 0


RUN = {"service": service, "bentos.serving.grpc": grpc, "jobs.batch_predict": batch_predict,
       "jobs.retrain": retrain, "jobs.monitor": monitor, "bentos": pull}
unknown = sorted(set(sys.argv[1:]) - set(RUN))
assert not unknown, f"the manifests run {unknown}: say here how to run it"
for entry in sys.argv[1:]:
    RUN[entry]()
provided = md.packages_distributions()
tops = {name.split(".")[0] for name in list(sys.modules)}
print(json.dumps({top: provided[top] for top in sorted(tops) if top in provided}))
"""


# Imported here only because the test environment has them, and used only when present:
# brotli (urllib3, aiohttp), charset-normalizer (numpy.f2py), cffi and pycparser (numba's
# optional cffi support), blinker (oauthlib's optional signals, under the kubernetes client),
# setuptools (its .pth start-up hook, in every virtualenv), h2 with hpack and hyperframe
# (httpcore's optional HTTP/2, under httpx; the tests' raw HTTP/2 client); bentos is this
# checkout, the Bento's own source.
_NOT_REQUIRED = {
    "brotli",
    "charset-normalizer",
    "cffi",
    "pycparser",
    "blinker",
    "setuptools",
    "h2",
    "hpack",
    "hyperframe",
    "bentos",
    # pathspec (under bentoml) takes re2 when it can import it, else the standard re: re2 is
    # here only as cel-python's, the k8s tests' CEL evaluator.
    "google-re2",
}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_s_requirements_provide_every_package_its_manifest_entry_points_import(
    image, request, tmp_path
):
    entry_points = _entry_points()
    assert set(entry_points["tabular-classifier"]) >= {"service", "bentos.serving.grpc"}
    assert "jobs.batch_predict" in entry_points["tabular-classifier"]
    assert "jobs.retrain" in entry_points["tabular-classifier-train"]
    bento_dir = request.getfixturevalue(IMAGES[image])
    # The Bento as `bentoml containerize` lays it out in the image: its models under models/,
    # its code under src/ (the manifests' workingDir).
    from _bentoml_sdk.models import BentoModel

    bento = tmp_path / "bento"
    shutil.copytree(bento_dir, bento)
    for model in yaml.safe_load((bento / "bento.yaml").read_text())["models"]:
        BentoModel(model["tag"]).resolve(bento / "models")
    env = {
        **os.environ,
        "BENTO_PATH": str(bento),
        "BENTOML_HOME": str(tmp_path / "home"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_ENTRY_POINTS, *entry_points[image]],
        cwd=bento / "src",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    pins = set(_image_pins(bento_dir))
    missing = {
        top: dists
        for top, dists in imported.items()
        if not {canonicalize_name(d) for d in dists} & (pins | _NOT_REQUIRED)
    }
    assert {"sklearn", "pyarrow", "fsspec"} <= set(imported)  # the check sees what the jobs load
    assert not missing, f"imported by the image but not in the Bento's requirements: {missing}"


def test_the_training_bento_packs_every_serving_package_at_the_same_version(
    bento_dir, train_bento_dir
):
    serving, training = _image_pins(bento_dir), _image_pins(train_bento_dir)
    assert serving.items() <= training.items(), set(serving.items()) - set(training.items())
    assert {"tensorflow", "keras", "kubernetes", "matplotlib"} <= set(training)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_bento_installs_its_lock_every_package_with_hashes(image, request):
    bento_dir = request.getfixturevalue(IMAGES[image])
    # Nothing resolved at build time: no lock of BentoML's own beside the requirements.
    assert not (bento_dir / "env" / "python" / "requirements.lock.txt").exists()
    image_pins = _image_pins(bento_dir)
    assert image_pins == locks.read(locks.IMAGE_LOCKS[image].read_text(), locks.IMAGE_PYTHON)
    assert all(pin.hashes for pin in image_pins.values())


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_bento_locks_the_versions_the_suite_tests(image, request):
    bento_dir = request.getfixturevalue(IMAGES[image])
    # Every version (and every hash) the image installs is the one requirements.lock installed
    # here, or the image runs code no test ran.
    image_pins = _image_pins(bento_dir)
    tested = locks.read(locks.TESTED.read_text(), locks.IMAGE_PYTHON)
    assert set(image_pins) <= set(tested), sorted(set(image_pins) - set(tested))
    drift = {name: (tested[name], pin) for name, pin in image_pins.items() if tested[name] != pin}
    assert not drift, f"(tested, in the image): {drift}"


def test_bento_dockerfile_runs_as_non_root_with_no_build_tools_in_the_final_stage(bento_dir):
    dockerfile = (bento_dir / "env" / "docker" / "Dockerfile").read_text()
    final = dockerfile.rsplit("\nFROM ", 1)[1]  # the stage the image is made of
    assert "COPY --from=bento-deps /app/.venv /app/.venv" in final
    assert "USER bentoml" in final
    assert "EXPOSE 3000" in final
    for tool in ("build-essential", "gnupg2", "git", "apt-get install", "binutils"):
        assert tool not in final, tool
    # The locked requirements, in the build stage, hash-checked, nothing resolved.
    assert "--no-deps --require-hashes" in dockerfile


def test_server_with_a_tampered_model_never_becomes_ready(serve, bentoml_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(bentoml_home / "models", home / "models")
    # Every stored version: whichever is latest (other tests may register more), it is changed.
    for tampered in (home / "models" / "tflite-classifier").glob("*/model.tflite"):
        tampered.write_bytes(tampered.read_bytes() + b"\0")
    srv = serve({"BENTOML_HOME": str(home)})
    try:
        deadline = time.monotonic() + 90
        while "changed after training" not in srv.output() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "tflite-classifier" in srv.output()
        assert "changed after training, refusing to load it" in srv.output()
        with contextlib.suppress(httpx.TransportError):  # not even listening: not ready either
            assert httpx.get(srv.url + "/readyz", timeout=2).status_code != 200
    finally:
        srv.stop()


def test_server_with_a_tampered_packed_forest_never_becomes_ready(
    serve, trained, bentoml_home, tmp_path
):
    filename, backend = "forest.npz", "packed"
    home = tmp_path / "home"
    shutil.copytree(bentoml_home / "models", home / "models")
    version = trained.rf_tag.split(":")[1]
    form = home / "models" / "rf-classifier" / version / filename
    content = form.read_bytes()
    form.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))  # one bit flipped
    srv = serve(
        {
            "BENTOML_HOME": str(home),
            "BENTOS_RF_MODEL": trained.rf_tag,
            "BENTOS_TFLITE_MODEL": trained.tflite_tag,
            "BENTOS_RF_BACKEND": backend,
        }
    )
    try:
        deadline = time.monotonic() + 90
        while "changed after training" not in srv.output() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert f"model {trained.rf_tag}: {filename} has sha256" in srv.output()
        with contextlib.suppress(httpx.TransportError):
            assert httpx.get(srv.url + "/readyz", timeout=2).status_code != 200
    finally:
        srv.stop()


def _secrets_scan(path: Path, *skip: str) -> dict:
    from tests.support.k8s import tool

    args = [
        tool("checkov"),
        "-d",
        str(path),
        "--framework",
        "secrets",
        "--skip-download",
        "--output",
        "json",
        "--quiet",
        "--compact",
    ]
    for pattern in skip:
        args += ["--skip-path", pattern]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr  # 1: failed checks, reported below
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    reports = report if isinstance(report, list) else [report]
    return {
        "failed": [c for r in reports for c in (r.get("results") or {}).get("failed_checks", [])],
        "passed": sum((r.get("summary") or {}).get("passed", 0) for r in reports),
    }


def test_no_credentials_in_the_repository(tmp_path):
    # The working tree as git would commit it: tracked and new files, not .venv or caches.
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    tree = tmp_path / "tree"
    for name in files.stdout.split():
        if not (ROOT / name).is_file():  # deleted in the working tree, not yet in the index
            continue
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    result = _secrets_scan(tree)
    assert result["failed"] == [], [(c["file_path"], c["check_id"]) for c in result["failed"]]


def test_no_credentials_in_the_bento(bento_dir):
    result = _secrets_scan(bento_dir)
    assert result["failed"] == [], [(c["file_path"], c["check_id"]) for c in result["failed"]]


def test_the_secrets_scan_does_find_a_planted_key(tmp_path):
    """So a clean result above means something: the same scan flags a real-looking key."""
    import random
    import string

    # Made up here, so that this file itself holds nothing key-shaped for the repository scan.
    rng = random.Random(5)
    key_id = "AKIA" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=16))
    secret = "".join(rng.choices(string.ascii_letters + string.digits + "+/", k=40))
    (tmp_path / "config.yaml").write_text(
        f"aws_access_key_id: {key_id}\naws_secret_access_key: {secret}\n"
    )
    assert _secrets_scan(tmp_path)["failed"]
