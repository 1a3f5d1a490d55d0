"""What the image holds: no build tools, a venv its user cannot change, the Bento's own models."""

from __future__ import annotations

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
    forest's walk comes from the cache the build made, not from a compilation at start."""
    out = docker(
        *("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp"),
        *("--user", "1034:1034", "--workdir", "/home/bentoml/bento/src"),
        *("-e", "NUMBA_DEBUG_CACHE=1", "--entrypoint", "python", image.ref),
        *("-c", "import bentos.forest"),
    ).stdout
    assert "[cache] data loaded from '/tmp/bentos-numba-" in out, out
    assert "data saved" not in out, out
