"""What the image holds: exactly its tested lock, no build tools, a venv its user cannot change,
the Bento's own models."""

from __future__ import annotations

import json

import pytest
from packaging.utils import canonicalize_name

from tests.support import locks

from .pod import docker


def _sh(image: str, script: str, user: str | None = None) -> str:
    args = ["run", "--rm", "--network", "none", "--entrypoint", "sh"]
    if user:
        args += ["--user", user]
    return docker(*args, image, "-c", script).stdout


def test_the_image_has_no_compilers_or_version_control(image):
    found = _sh(image.ref, "for t in gcc cc c++ make git gpg; do command -v $t; done; true")
    assert found.strip() == "", found


def test_the_venv_belongs_to_root_and_its_user_cannot_write_to_it(image):
    out = _sh(
        image.ref,
        "stat -c %U /app/.venv/lib/python3.11/site-packages; "
        "touch /app/.venv/lib/python3.11/site-packages/x 2>/dev/null && echo writable || echo no",
        user="1034:1034",
    )
    assert out.split() == ["root", "no"], out


def test_the_bento_carries_both_models_it_was_built_with(image, trained):
    out = _sh(
        image.ref,
        "ls /home/bentoml/bento/models/rf-classifier /home/bentoml/bento/models/tflite-classifier",
    )
    assert trained.rf_tag.split(":")[1] in out and trained.tflite_tag.split(":")[1] in out, out


def test_a_read_only_container_loads_the_walk_the_image_compiled(image):
    """As the pods run it (read-only root, the server's user, a writable /tmp): the packed
    forest's walk is the machine code the build kept (bentos.native), loaded without numba,
    which a compilation at start would have imported."""
    out = docker(
        *("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp"),
        *("--user", "1034:1034", "--workdir", "/home/bentoml/bento/src"),
        *("--entrypoint", "python", image.ref),
        *("-c", "import sys, bentos.forest; print('numba' in sys.modules)"),
    ).stdout
    assert out.split() == ["False"], out


# What the image's venv holds, as `pip freeze` lists it: every distribution and its version.
_FREEZE = (
    "import importlib.metadata as md, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in md.distributions()}))"
)
# `pip check` of the image's venv: uv leaves no pip in it, so the base image's own pip runs
# against it (pip's --python), whichever Python the base has.
_PIP_CHECK = (
    "for p in /usr/local/bin/python3 /usr/bin/python3; do "
    "[ -x $p ] && exec $p -m pip --python /app/.venv/bin/python check; done; exit 127"
)


@pytest.mark.parametrize("which", ["image", "train_image"])
def test_the_image_holds_exactly_its_tested_lock_and_pip_check_passes(which, request):
    built = request.getfixturevalue(which)
    bento = "tabular-classifier-train" if which == "train_image" else "tabular-classifier"
    frozen = json.loads(_sh(built.ref, f'python -c "{_FREEZE}"'))
    installed = {canonicalize_name(name): version for name, version in frozen.items()}
    locked = locks.read(locks.IMAGE_LOCKS[bento].read_text(), locks.IMAGE_PYTHON)
    tested = locks.read(locks.TESTED.read_text(), locks.IMAGE_PYTHON)
    assert installed == locks.versions(locked)
    assert locked.items() <= tested.items()
    proc = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", built.ref, "-c",
                  _PIP_CHECK, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No broken requirements found" in proc.stdout
