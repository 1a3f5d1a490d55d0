"""The model store: register the two models, and the one way to open them (integrity-checked)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml

from bentos.errors import ModelError
from bentos.schema import FeatureSchema, schema_sha256

RF_NAME = "rf-classifier"
TFLITE_NAME = "tflite-classifier"
RF_FILE = "saved_model.pkl"  # the file name bentoml.sklearn.save_model writes
RF_PACKED_FILE = "forest.npz"  # the same forest in 8-byte nodes, for bentos.forest
# The forest's other forms, each beside the pickle with its own metadata entry and sha256.
RF_FORMS = {RF_PACKED_FILE: "packed"}
# Files both models carry beside their own, each hashed in the metadata under its key: the
# reference profile of the training rows and hold-out predictions (bentos.monitoring.profile),
# which the drift check compares served rows with.
REFERENCE_FILE = "reference.json"
SHARED_FORMS = {REFERENCE_FILE: "reference"}
TFLITE_FILE = "model.tflite"
MODEL_FILES = {RF_NAME: RF_FILE, TFLITE_NAME: TFLITE_FILE}
# The training report (bentos.training.report), a folder in the model's own, so that every copy
# of the model (an export, the registry, a Bento) carries it; the service serves it.
REPORT_DIR = "report"
REPORT_PAGE = "index.html"  # its page; the pictures beside it
ReportFiles = Callable[[str], dict[str, bytes]]  # the model's tag -> its report's files by name
# The registry's champions as the last pull (or retrain) found them, in BENTOML_HOME beside the
# store: a version already in the store is not imported again, so `:latest` alone would name
# the newest version, not the champion (a rollback would change nothing locally).
CHAMPIONS_FILE = "champions.json"


@dataclass(frozen=True)
class StoredModel:
    tag: str
    file: Path
    schema: FeatureSchema
    metadata: dict[str, Any]
    created: float  # when the model was registered in its store, unix seconds
    # Why this version: {"by": "champion", "registry", "pulled_at"}, {"by": "latest"} or
    # {"by": "tag"} (a version asked for by name); GET /models shows it.
    selected: dict[str, Any]


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bento_path() -> Path | None:
    """Inside a Bento image, the Bento's folder ($BENTO_PATH); elsewhere None."""
    path = os.environ.get("BENTO_PATH")
    return Path(path) if path and Path(path).is_dir() else None


def _bento_store() -> Any:
    """Inside a Bento image, the Bento's own models ($BENTO_PATH/models); elsewhere None."""
    bento_path = os.environ.get("BENTO_PATH")
    if bento_path and (Path(bento_path) / "models").is_dir():
        from bentoml._internal.models.model import ModelStore

        return ModelStore(Path(bento_path) / "models")
    return None


def _own_store() -> Any:
    """The process's own store, BENTOML_HOME/models, opened directly: `bentoml serve` of a
    Bento points BentoML's default store at the Bento's models, and a pod's init container
    pulls the registry's champions into BENTOML_HOME."""
    home = os.environ.get("BENTOML_HOME")
    if home and (Path(home) / "models").is_dir():
        from bentoml._internal.models.model import ModelStore

        return ModelStore(Path(home) / "models")
    return None


def champions() -> dict[str, dict[str, Any]]:
    """By model name, the champion pinned in this store: {"version", "registry", "pulled_at"}."""
    path = _champions_path()
    try:
        pins = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read ({exc}); remove it, or pull again") from None
    return pins if isinstance(pins, dict) else {}


def pin_champion(name: str, version: str, registry: str) -> None:
    """Make `name:latest` mean `name:version`, the champion of `registry`, in this store."""
    from datetime import UTC, datetime

    pins = champions()
    pins[name] = {
        "version": version,
        "registry": registry,
        "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_pins(pins)


def unpin(name: str) -> dict[str, Any] | None:
    """Let `name:latest` mean the newest version again; returns the pin removed, if any."""
    pins = champions()
    removed = pins.pop(name, None)
    if removed is not None:
        _write_pins(pins)
    return removed


def _champions_path() -> Path:
    return Path(_home()) / CHAMPIONS_FILE


def _write_pins(pins: dict[str, Any]) -> None:
    path = _champions_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(pins, indent=2) + "\n")
    tmp.replace(path)  # whole or not at all: a process starting now reads the old or the new


def resolve(tag: str) -> tuple[str, dict[str, Any]]:
    """The tag a process opens for `tag`, and why: `name` or `name:latest` is the champion the
    last pull pinned, when there is one, else the newest version; any other tag is itself."""
    name, _, version = tag.partition(":")
    if version not in ("", "latest"):
        return tag, {"by": "tag"}
    pin = champions().get(name)
    if pin is None:
        return f"{name}:latest", {"by": "latest"}
    return f"{name}:{pin['version']}", {
        "by": "champion",
        "registry": pin.get("registry"),
        "pulled_at": pin.get("pulled_at"),
    }


def get(tag: str) -> bentoml.Model:
    """The model `tag` (`name:latest`: the pinned champion, see resolve()): from the process's
    own store (BENTOML_HOME) when it holds it, as it holds the champions a pod's init container
    pulled from the registry; else from the Bento's own models; else from wherever BentoML's
    default store is."""
    asked = tag
    tag, selected = resolve(tag)
    stores = [s for s in (_own_store(), _bento_store()) if s is not None]
    for store in stores:
        try:
            return store.get(tag)
        except bentoml.exceptions.NotFound:
            continue
    try:
        return bentoml.models.get(tag)
    except (bentoml.exceptions.NotFound, ValueError):
        pass
    bento = " nor the Bento's models" if _bento_store() is not None else ""
    where = f"model {asked!r} is not in the model store ({_home()}){bento}"
    if selected["by"] == "champion":
        raise ModelError(
            f"{where}: its pinned champion {tag} (from {selected['registry']}) is missing; "
            f"pull again: `bentos models pull --registry {selected['registry']}`"
        )
    raise ModelError(f"{where}; {_what_exists()}")


def stored_versions(name: str | None = None) -> list[Any]:
    """The models of this project in the stores a process reads, oldest first."""
    found: dict[str, Any] = {}
    for store in _stores():
        try:
            listed = store.list(name) if name else store.list()
        except bentoml.exceptions.NotFound:
            continue
        for model in listed:
            if model.tag.name in MODEL_FILES:
                found.setdefault(str(model.tag), model)
    return sorted(found.values(), key=lambda m: (m.tag.name, _unix_seconds(m.info.creation_time)))


def _stores() -> list[Any]:
    from bentoml._internal.configuration.containers import BentoMLContainer

    own = [s for s in (_own_store(), _bento_store()) if s is not None]
    return [*own, BentoMLContainer.model_store.get()]


def _what_exists() -> str:
    models = stored_versions()
    if not models:
        return "the store has no models yet: run `bentos train` first"
    shown = ", ".join(str(m.tag) for m in models[-8:])
    more = f" (and {len(models) - 8} older)" if len(models) > 8 else ""
    return f"it has {shown}{more}; `bentos models list` shows them with their dates"


def schema_of(tag: str) -> FeatureSchema:
    """The feature schema a model was registered with, read without loading the model."""
    return FeatureSchema.from_dict(get(tag).info.metadata["schema"])


def _home() -> str:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())


def open_model(model: bentoml.Model | str, filename: str | None = None) -> StoredModel:
    """Resolve a model and check one of its files against the sha256 recorded at registration.

    Models are pickles (RandomForest), packed node arrays or flatbuffers that we load into native
    code; a file changed after registration is refused rather than loaded. `filename`: the
    model's main file by default, or one of the forest's other forms (RF_FORMS).
    """
    selected: dict[str, Any] = {"by": "tag"}
    if isinstance(model, str):
        selected = resolve(model)[1]
        model = get(model)
    name = model.tag.name
    if name not in MODEL_FILES:
        raise ModelError(
            f"model {model.tag} is not one of this project's models ({', '.join(MODEL_FILES)})"
        )
    metadata = dict(model.info.metadata)
    filename = filename or MODEL_FILES[name]
    file = Path(model.path_of(filename))
    if filename == MODEL_FILES[name]:
        expected = metadata.get("sha256")
    elif filename in _forms(name):
        form = _forms(name)[filename]
        if form not in metadata:
            raise ModelError(
                f"model {model.tag} has no {form} form (trained before it existed); retrain it"
            )
        expected = metadata[form].get("sha256")
    else:
        raise ModelError(f"model {model.tag} has no file {filename!r}")
    if not file.is_file():
        raise ModelError(f"model {model.tag}: file {file.name} is missing from {model.path}")
    if not expected:
        raise ModelError(
            f"model {model.tag}: no sha256 recorded at registration; refusing to load it"
        )
    actual = sha256_file(file)
    if actual != expected:
        raise ModelError(
            f"model {model.tag}: {file.name} has sha256 {actual[:12]}..., but {expected[:12]}... "
            "was registered; the file was changed after training, refusing to load it"
        )
    schema = FeatureSchema.from_dict(metadata["schema"])
    recorded = metadata.get("schema_sha256")  # models from before kinds have none
    actual = schema_sha256(metadata["schema"])
    if recorded and actual != recorded:
        raise ModelError(
            f"model {model.tag}: its feature schema was changed after training (sha256 "
            f"{actual[:12]}..., but {recorded[:12]}... was registered); refusing to load it"
        )
    return StoredModel(
        str(model.tag),
        file,
        schema,
        metadata,
        _unix_seconds(model.info.creation_time),
        selected,
    )


def _forms(name: str) -> dict[str, str]:
    """A model's files beside its main one, by file name: their metadata keys."""
    return {**(RF_FORMS if name == RF_NAME else {}), **SHARED_FORMS}


def _unix_seconds(when: datetime) -> float:
    # BentoML writes creation times in UTC; a naive one read back from model.yaml is UTC too.
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _write_report(folder: str, tag: Any, report: ReportFiles | None) -> None:
    if report is None:
        return
    out = Path(folder) / REPORT_DIR
    out.mkdir()
    for name, content in report(str(tag)).items():
        (out / name).write_bytes(content)


def register_rf(
    estimator: Any,
    metadata: dict[str, Any],
    model_file: Path,
    forms: dict[str, bytes],
    report: ReportFiles | None = None,
) -> bentoml.Model:
    """Register the forest persisted at `model_file`, its other forms (RF_FORMS) beside it, and
    its report (REPORT_DIR).

    Every hash goes into the metadata before anything is written; the store's copies must hash
    the same, or the model is deleted again.
    """
    expected = {RF_FILE: sha256_file(model_file)}
    meta = dict(metadata)
    for filename, content in forms.items():
        expected[filename] = hashlib.sha256(content).hexdigest()
        key = _forms(RF_NAME)[filename]
        meta[key] = {**meta.get(key, {}), "sha256": expected[filename]}
    saved = bentoml.sklearn.save_model(
        RF_NAME,
        estimator,
        metadata={**meta, "sha256": expected[RF_FILE]},
        labels={"framework": "sklearn"},
        signatures={"predict_proba": {"batchable": True}},
    )
    # bentoml.sklearn.save_model writes the pickle only; the other files join it in the model's
    # folder in the store (the object save_model returns still points at its staging copy), so
    # `bentoml build` packs them all and every load verifies the one it reads.
    saved = bentoml.models.get(saved.tag)
    for filename, content in forms.items():
        Path(saved.path_of(filename)).write_bytes(content)
    _write_report(saved.path, saved.tag, report)
    if any(sha256_file(saved.path_of(f)) != digest for f, digest in expected.items()):
        bentoml.models.delete(saved.tag)
        raise ModelError(f"{saved.tag}: a stored file differs from the one hashed; not registered")
    unpin(RF_NAME)  # the version just trained is the newest, and `latest` names it again
    return saved


def register_tflite(
    content: bytes,
    metadata: dict[str, Any],
    report: ReportFiles | None = None,
    forms: dict[str, bytes] | None = None,
) -> bentoml.Model:
    """Register the TFLite model, the files beside it (SHARED_FORMS) and its report."""
    digest = hashlib.sha256(content).hexdigest()
    meta = {**metadata, "sha256": digest}
    for filename, form in (forms or {}).items():
        key = _forms(TFLITE_NAME)[filename]
        meta[key] = {**meta.get(key, {}), "sha256": hashlib.sha256(form).hexdigest()}
    with bentoml.models.create(TFLITE_NAME, metadata=meta, labels={"framework": "tflite"}) as model:
        Path(model.path_of(TFLITE_FILE)).write_bytes(content)
        for filename, form in (forms or {}).items():
            Path(model.path_of(filename)).write_bytes(form)
        _write_report(model.path, model.tag, report)
    unpin(TFLITE_NAME)
    return model
