"""A model registry on object storage (any fsspec URL; a folder works too).

    <registry>/<name>/<version>.bentomodel   the model, as `bentoml models export` writes it
    <registry>/<name>/<version>.json         what was pushed: version, sha256, metrics, when
    <registry>/<name>/<version>.report.json  the promotion decision that judged it (and .html)
    <registry>/<name>/champion.json          the pointer: the version that serves

`<name>` is the registered name (rf-classifier, tflite-classifier) and `<version>` the BentoML
tag's version, so `rf-classifier:<version>` names the same model in every store. The pointer is
written last, and atomically (a new object moved over the old one), as the batch job publishes
its manifests: a reader sees the old champion or the new one, never a model half-written.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bentos.errors import ModelError, UsageError


class RegistryError(UsageError):
    """The registry lacks what was asked for (a version, a champion), or holds something else."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Registry:
    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")

    def _path(self, name: str, leaf: str) -> str:
        return f"{self.root}/{name}/{leaf}"

    def _read(self, path: str) -> dict[str, Any] | None:
        try:
            with self.fs.open(path, "rb") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None

    def _write(self, path: str, data: dict[str, Any]) -> None:
        """Whole or not at all: written beside, then moved into place."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with self.fs.open(tmp, "wb") as fh:
            fh.write((json.dumps(data, indent=2) + "\n").encode())
        self.fs.mv(tmp, path)

    # -- reading ---------------------------------------------------------------------------------

    def champion(self, name: str) -> dict[str, Any] | None:
        return self._read(self._path(name, "champion.json"))

    def version(self, name: str, version: str) -> dict[str, Any]:
        record = self._read(self._path(name, f"{version}.json"))
        if record is None:
            pushed = [r["version"] for r in self.versions(name)]
            has = f"its versions of {name}: {', '.join(pushed)}" if pushed else f"no {name} at all"
            raise RegistryError(f"{self.url} has no {name}:{version}; {has}")
        return record

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every pushed version of `name`, oldest first."""
        found = []
        for path in self.fs.glob(self._path(name, "*.json")):
            leaf = path.rsplit("/", 1)[-1]
            if leaf == "champion.json" or leaf.endswith(".report.json"):
                continue
            record = self._read(path)
            if record:
                found.append(record)
        return sorted(found, key=lambda r: r["pushed_at"])

    # -- writing ---------------------------------------------------------------------------------

    def push(self, tag: str, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Export the local store's model `tag` into the registry; the pointer is not touched."""
        import bentoml

        name, version = tag.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / f"{version}.bentomodel"
            bentoml.models.export_model(tag, str(archive))
            record = {
                "name": name,
                "version": version,
                "sha256": _sha256(archive),
                "size_bytes": archive.stat().st_size,
                "metrics": metrics or {},
                "pushed_at": _now(),
            }
            dest = self._path(name, f"{version}.bentomodel")
            tmp_dest = f"{dest}.tmp-{uuid.uuid4().hex}"
            self.fs.makedirs(f"{self.root}/{name}", exist_ok=True)
            self.fs.put(str(archive), tmp_dest)
            self.fs.mv(tmp_dest, dest)
        self._write(self._path(name, f"{version}.json"), record)
        return record

    def write_report(self, name: str, version: str, report: dict[str, Any], html: str) -> None:
        self._write(self._path(name, f"{version}.report.json"), report)
        with self.fs.open(self._path(name, f"{version}.report.html"), "wb") as fh:
            fh.write(html.encode())

    def set_champion(self, name: str, version: str, reason: str) -> dict[str, Any]:
        """Point `name` at `version` (which must have been pushed); the old pointer goes into
        the new one's history."""
        record = self.version(name, version)
        old = self.champion(name)
        history = [] if old is None else [*old.get("history", []), _entry(old)]
        pointer = {
            "name": name,
            "version": version,
            "sha256": record["sha256"],
            "metrics": record.get("metrics", {}),
            "promoted_at": _now(),
            "reason": reason,
            "history": history[-20:],
        }
        self._write(self._path(name, "champion.json"), pointer)
        return pointer

    def rollback(self, name: str, version: str) -> dict[str, Any]:
        """Point `name` back at `version`, which must have been its champion before."""
        current = self.champion(name)
        if current is None:
            raise RegistryError(f"{self.url} has no champion of {name} to roll back")
        earlier = {h["version"] for h in current.get("history", [])}
        if version not in earlier:
            raise RegistryError(
                f"{name}:{version} was never the champion; earlier champions: "
                f"{', '.join(sorted(earlier)) or '(none)'}"
            )
        return self.set_champion(name, version, f"rollback from {current['version']}")

    # -- into the local store -------------------------------------------------------------------

    def pull(self, name: str, version: str | None = None) -> str:
        """Import `name`'s champion (or `version`) into the local model store, after checking
        the archive's sha256 against the registry's record. Returns the tag."""
        import bentoml

        record = self.champion(name) if version is None else self.version(name, version)
        if record is None:
            raise RegistryError(f"{self.url} has no champion of {name}")
        tag = f"{name}:{record['version']}"
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / f"{record['version']}.bentomodel"
            self.fs.get(self._path(name, f"{record['version']}.bentomodel"), str(archive))
            actual = _sha256(archive)
            if actual != record["sha256"]:
                raise ModelError(
                    f"{self.url}: {tag} has sha256 {actual[:12]}..., but {record['sha256'][:12]}... "
                    "was recorded; refusing to import it"
                )
            try:
                bentoml.models.get(tag)
            except bentoml.exceptions.NotFound:
                bentoml.models.import_model(str(archive))
        return tag


def pull_champions(url: str, names: tuple[str, ...] | None = None) -> dict[str, str | None]:
    """Import each model's champion into the local store and pin it there, so that every local
    process (serve, grpc, batch, export-edge) opens it for `name:latest`; a model without a
    champion yet is unpinned (its newest local version, or the Bento's own, serves). Returns
    name -> the tag pinned, or None."""
    from bentos import models

    registry, pinned = Registry(url), {}
    for name in names or tuple(models.MODEL_FILES):
        if registry.champion(name) is None:
            models.unpin(name)
            pinned[name] = None
            continue
        tag = registry.pull(name)
        models.pin_champion(name, tag.split(":", 1)[1], registry.url)
        pinned[name] = tag
    return pinned


def local_models(tags: tuple[str, ...], registry: str | None = None) -> list[str]:
    """Before a server or a job starts: with `registry`, pull its champions (pull_champions);
    then find each of `tags` in the stores, so that a missing model is one ModelError line
    (exit 4) before anything starts, not a traceback from inside it. Returns what was done, a
    line each."""
    from bentos import models

    lines = []
    if registry:
        for name, tag in pull_champions(registry).items():
            lines.append(
                f"{name}: {registry} has no champion yet" if tag is None else f"pulled {tag}"
            )
    for tag in tags:
        model, selected = models.get(tag), models.resolve(tag)[1]
        why = f"the champion of {selected['registry']}" if selected["by"] == "champion" else ""
        lines.append(f"{tag}: {model.tag}" + (f" ({why})" if why else ""))
    return lines


def _entry(pointer: dict[str, Any]) -> dict[str, Any]:
    return {k: pointer[k] for k in ("version", "sha256", "promoted_at", "reason") if k in pointer}
