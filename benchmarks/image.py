"""The Bento's image: size, its biggest layers and packages, and the server container's cold
start, against BentoML's default image of the same Bento, built in the same run.

    tests/image/engine.sh        # as root, once: an engine, and the base image if none can be pulled
    .venv/bin/python -m benchmarks.image [--home BENTOML_HOME] [--repeat 5] [--no-baseline]

Trains the default models into a temporary store unless --home names one that has them. The
baseline is the same Bento built without `docker.dockerfile_template` (BentoML's Debian
template, with build-essential, git and gnupg2). Cold start is `docker run` of the server
container, flags from the rendered prod overlay (tests/image/pod.py), to its startup probe's
first success, polled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.servers import ROOT

# The image tests' harness: the same image build and the same container flags as the tests.
from tests.image.harness import build_image, render_overlay
from tests.image.pod import Pod, docker
from tests.support.k8s import one

SITE = "/app/.venv/lib/python3.11/site-packages"


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def layers(ref: str, top: int = 4) -> list[tuple[int, str]]:
    out = docker(
        "history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", ref
    )
    rows = []
    for line in out.stdout.splitlines():
        size, _, step = line.partition("\t")
        rows.append((int(size), " ".join(step.split())[:90]))
    return sorted(rows, reverse=True)[:top]


def packages(ref: str, top: int = 12) -> list[tuple[int, str]]:
    script = f"cd {SITE} && du -sk -- *"
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", ref, "-c", script)
    rows = [
        (int(k) * 1024, name) for k, name in (line.split("\t") for line in out.stdout.splitlines())
    ]
    return sorted(rows, reverse=True)[:top]


def cold_start(ref: str, repeat: int, work: Path) -> list[float]:
    objects = render_overlay(work / f"overlay-{ref.replace(':', '-')}", ref)
    deployment = one(objects, "Deployment", "tabular-classifier")
    times = []
    for i in range(repeat):
        pod = Pod(objects, deployment, name=f"bench-{i}", root=work / f"pod-{ref}-{i}")
        try:
            t0 = time.monotonic()
            server = pod.start("server")
            server.wait_started()
            times.append(time.monotonic() - t0)
        finally:
            pod.remove()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", help="a BENTOML_HOME with both models (default: train fresh)")
    parser.add_argument("--repeat", type=int, default=5, help="cold starts per image")
    parser.add_argument("--no-baseline", action="store_true", help="skip BentoML's default image")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-image-"))
    home = args.home or str(work / "home")
    env = {"BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "true", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if not args.home:
        subprocess.run(
            [str(Path(sys.executable).parent / "bentos"), "train"],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
    images = {"this project's": build_image("bentos-bench:lean", env).ref}
    if not args.no_baseline:
        stock = work / "bentofile-stock.yaml"
        lines = (ROOT / "bentofile.yaml").read_text().splitlines()
        stock.write_text("\n".join(line for line in lines if "dockerfile_template" not in line))
        images["BentoML's default"] = build_image("bentos-bench:stock", env, bentofile=stock).ref

    base = json.loads(docker("image", "inspect", "python:3.11-slim").stdout)[0]
    stand_in = (base["Config"].get("Labels") or {}).get("org.bentos.stand-in") == "true"
    print(f"base image python:3.11-slim: {_mb(base['Size'])}", "(the local stand-in)" * stand_in)
    sizes = {}
    for name, ref in images.items():
        sizes[name] = int(docker("image", "inspect", "-f", "{{.Size}}", ref).stdout)
        starts = cold_start(ref, args.repeat, work)
        print(f"\n{name} image {ref}: {_mb(sizes[name])}")
        print(
            f"  cold start to /readyz: median {statistics.median(starts):.1f} s "
            f"(min {min(starts):.1f}, max {max(starts):.1f}, {len(starts)} runs)"
        )
        print("  biggest layers:")
        for layer_size, step in layers(ref):
            print(f"    {_mb(layer_size):>9}  {step}")
        print("  biggest packages:")
        for pkg_size, pkg in packages(ref):
            print(f"    {_mb(pkg_size):>9}  {pkg}")
    if len(sizes) == 2:
        ratio = sizes["this project's"] / sizes["BentoML's default"]
        print(f"\nsize, this project's / BentoML's default: {ratio:.2f}")


if __name__ == "__main__":
    main()
