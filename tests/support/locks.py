"""The project's lock files as the tests read them: `uv export` and `uv pip compile` write one
requirement a line, `name==version ; marker`, followed by its `--hash=` options."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# What .venv installs (every extra), what each Bento installs, and the policy tools' venv.
TESTED = ROOT / "requirements.lock"
IMAGE_LOCKS = {
    "tabular-classifier": ROOT / "requirements-serving.lock",
    "tabular-classifier-train": ROOT / "requirements-train.lock",
}
TOOLS = ROOT / "requirements-tools.lock"
# The image's interpreter (bentofile.yaml, docker.python_version) on Linux.
IMAGE_PYTHON = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux"}


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


def read(text: str, environment: dict[str, str] | None = None) -> dict[str, Pin]:
    """Each requirement that applies to `environment` (marker values; default this
    interpreter), by normalized name. A requirement that is not an exact `==` pin is an error:
    a lock pins everything."""
    pins: dict[str, Pin] = {}
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.split("#", 1)[0].strip()  # no hash holds a "#"
        if not line or line.startswith("-"):  # an option line (-e ., --index-url)
            continue
        spec, *hashes = (part.strip() for part in line.split("--hash="))
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate(environment or {}):
            continue
        (specifier,) = req.specifier  # exactly one, `==`
        assert specifier.operator == "==", f"not pinned: {spec}"
        name, pin = canonicalize_name(req.name), Pin(specifier.version, frozenset(hashes))
        # Twice at one version (BentoML appends a bare `bentoml==VERSION` to a Bento's
        # requirements): one requirement, as pip and uv read it.
        if name in pins:
            assert pins[name].version == pin.version, f"{name} pinned twice: {pins[name]}, {pin}"
            pin = Pin(pin.version, pins[name].hashes | pin.hashes)
        pins[name] = pin
    return pins


def versions(pins: dict[str, Pin]) -> dict[str, str]:
    return {name: pin.version for name, pin in pins.items()}
