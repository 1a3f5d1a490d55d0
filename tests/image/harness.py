"""The image tests' harness, shared with benchmarks/image.py: build the Bento's image with a real
engine, render the prod overlay as a user's own overlay would, and a real S3-compatible server.
tests/image/pod.py runs the rendered containers."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.k8s import K8S, ROOT, render

from .pod import DOCKER, docker


@dataclass(frozen=True)
class Image:
    ref: str  # name:tag, as the engine knows it
    bento: str  # the Bento's tag


def build_image(
    ref: str, env: dict[str, str] | None = None, bentofile: Path | None = None
) -> Image:
    """`bentoml build` of this checkout (with `bentofile`, or its own), then `bentoml
    containerize` to `ref`, in the store that `env` (or this process) names with BENTOML_HOME."""
    env = {**os.environ, **(env or {})}
    bentoml = [sys.executable, "-m", "bentoml"]
    options = ["--bentofile", str(bentofile)] if bentofile else []
    proc = subprocess.run(
        [*bentoml, "build", ".", *options, "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bento = proc.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = bento.split(":")
    dockerfile = Path(env["BENTOML_HOME"], "bentos", name, version, "env", "docker", "Dockerfile")
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM "):
            base = line.split()[1]
            assert docker("image", "inspect", base, check=False).returncode == 0, (
                f"the base image {base} is missing: run tests/image/engine.sh {base}"
            )
    # Debian's docker client first on PATH (see pod.DOCKER). From /: BentoML 1.4.40 refuses a
    # dockerfile_template outside the working directory when it containerizes a Bento from its
    # temporary folder (bentoml/BentoML#5566).
    path = f"{Path(DOCKER).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [*bentoml, "containerize", bento, "--image-tag", ref],
        cwd="/",
        env={**env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return Image(ref, bento)


def render_overlay(
    folder: Path,
    image: str,
    config: dict[str, dict[str, str]] | None = None,
    patches: list[dict] | None = None,
    train_image: str | None = None,
) -> list[dict]:
    """The prod overlay as a user would deploy it from an overlay of their own: the images set
    (`images:`; the training image too, when given), ConfigMap literals merged
    (`configMapGenerator`, docs/deploy.md step 4), and strategic-merge `patches`; rendered with
    `kubectl kustomize`."""
    prod = K8S / "overlays" / "prod"
    names = {
        entry["newName"].rsplit("/", 1)[-1]: entry["newName"]
        for entry in yaml.safe_load((prod / "kustomization.yaml").read_text())["images"]
    }
    images = []
    for short, ref in (("tabular-classifier", image), ("tabular-classifier-train", train_image)):
        if ref is not None and short in names:
            new_name, _, new_tag = ref.rpartition(":")
            images.append({"name": names[short], "newName": new_name, "newTag": new_tag})
    # The prediction log (k8s/components/model-monitoring) goes to the pod's own /tmp unless a
    # test gives it storage: prod's placeholder bucket is nowhere to be reached from here.
    config = {"prediction-log": {"BENTOS_PREDICTION_LOG": "/tmp/prediction-log"}, **(config or {})}
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(prod, folder)],
        "images": images,
        "configMapGenerator": [
            {"name": cm, "behavior": "merge", "literals": [f"{k}={v}" for k, v in data.items()]}
            for cm, data in config.items()
        ],
        "patches": [{"patch": yaml.safe_dump(p)} for p in patches or []],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return render(folder)
