"""The Bento: built for real from this checkout; the container build itself is not run here
(no container engine on this machine), only its generated Dockerfile is checked."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import ROOT, Server


@pytest.fixture(scope="session")
def bento_dir(trained, bentoml_home) -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", ".", "--output", "tag"],
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


def test_bento_packs_the_service_code_and_both_models(bento_dir):
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert info["service"] == "service:TabularClassifier"
    assert {m["tag"].split(":")[0] for m in info["models"]} == {
        "rf-classifier",
        "tflite-classifier",
    }
    for path in ("service.py", "bentos/schema.py", "bentos/runners.py", "jobs/__init__.py"):
        assert (bento_dir / "src" / path).is_file(), path
    assert not (bento_dir / "src" / "tests").exists()


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(text: str) -> dict[str, str]:
    """A requirements file's `name==version` lines, names normalized (PEP 503)."""
    return {
        _normalize(name): version.strip()
        for name, _, version in (line.partition("==") for line in text.splitlines())
        if version
    }


def _image_pins(bento_dir: Path) -> dict[str, str]:
    return _pins((bento_dir / "env" / "python" / "requirements.txt").read_text())


def test_bento_locked_requirements_serve_without_tensorflow(bento_dir):
    pins = set(_image_pins(bento_dir))
    assert {"bentoml", "ai-edge-litert", "scikit-learn", "numpy"} <= pins
    assert not any("tensorflow" in p or p in {"keras", "tf-keras"} for p in pins), sorted(pins)


# Everything the image runs: the service with each forest backend and the edge model, the gRPC
# server and the batch job. Prints, per imported top-level module, the distributions providing it.
_SERVING_IMPORTS = """
import importlib.metadata as md, json, sys
import numpy as np
import service, bentos.grpc, bentos.batch, jobs.batch_predict
from bentos.runners import RandomForestRunner, TFLiteRunner
for backend in ("packed", "onnx", "sklearn"):
    RandomForestRunner(sys.argv[1], backend).predict_proba(np.array([[5.0, 3.0, 1.5, 0.2]]))
TFLiteRunner(sys.argv[2])
provided = md.packages_distributions()
tops = {name.split(".")[0] for name in list(sys.modules)}
print(json.dumps({top: provided[top] for top in sorted(tops) if top in provided}))
"""


# Imported here only because the test environment has them, and used only when present:
# brotli (urllib3, aiohttp), charset-normalizer (numpy.f2py), setuptools (its .pth start-up
# hook, in every virtualenv); bentos is this checkout, the Bento's own source.
_NOT_REQUIRED = {"brotli", "charset-normalizer", "setuptools", "bentos"}


def test_bento_requirements_provide_every_package_the_image_imports(bento_dir, trained):
    proc = subprocess.run(
        [sys.executable, "-c", _SERVING_IMPORTS, trained.rf_tag, trained.tflite_tag],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    pins = set(_image_pins(bento_dir))
    missing = {
        top: dists
        for top, dists in imported.items()
        if not {_normalize(d) for d in dists} & (pins | _NOT_REQUIRED)
    }
    assert "onnxruntime" in imported and "numba" in imported  # the check sees the forest's runtimes
    assert not missing, f"imported by the image but not in the Bento's requirements: {missing}"


def test_bento_locks_the_versions_the_suite_tests(bento_dir):
    # `bentoml build` resolves the image's requirements itself; any version it picks must be
    # the one requirements.lock installed here, or the image runs code no test ran.
    image = _image_pins(bento_dir)
    tested = _pins((ROOT / "requirements.lock").read_text())
    assert set(image) <= set(tested), sorted(set(image) - set(tested))
    drift = {name: (tested[name], v) for name, v in image.items() if tested[name] != v}
    assert not drift, f"(tested, in the image): {drift}"


def test_bento_has_a_dockerfile_that_runs_as_non_root(bento_dir):
    dockerfile = (bento_dir / "env" / "docker" / "Dockerfile").read_text()
    assert "USER bentoml" in dockerfile
    assert "EXPOSE 3000" in dockerfile
    assert "requirements.txt" in dockerfile


def test_server_with_a_tampered_model_never_becomes_ready(trained, bentoml_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(bentoml_home / "models", home / "models")
    tampered = next((home / "models" / "tflite-classifier").glob("*/model.tflite"))
    tampered.write_bytes(tampered.read_bytes() + b"\0")
    srv = Server({"BENTOML_HOME": str(home)})
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


@pytest.mark.parametrize(
    ("filename", "backend"), [("forest.npz", "packed"), ("model.onnx", "onnx")]
)
def test_server_with_a_tampered_forest_form_never_becomes_ready(
    trained, bentoml_home, tmp_path, filename, backend
):
    home = tmp_path / "home"
    shutil.copytree(bentoml_home / "models", home / "models")
    version = trained.rf_tag.split(":")[1]
    form = home / "models" / "rf-classifier" / version / filename
    content = form.read_bytes()
    form.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))  # one bit flipped
    srv = Server(
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
    from k8s_render import tool

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
    # The checked-out tree, as git tracks it (not .venv or caches).
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    tree = tmp_path / "tree"
    for name in files.stdout.split():
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
