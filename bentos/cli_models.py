"""`bentos models` and `bentos report`: what the local store and the registry hold, and moving
the champion (bentos.cli parses the arguments; this module carries them out)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bentos import models
from bentos.errors import BentosError, ExitCode, UsageError


def error(exc: BentosError | str, code: ExitCode = ExitCode.USAGE) -> int:
    """One line on stderr; the error's exit code. Plain print: rich would read a tag's [...]
    as markup."""
    print(f"error: {exc}", file=sys.stderr)
    return exc.exit_code if isinstance(exc, BentosError) else code


def name_and_version(name: str, version: str | None) -> tuple[str, str]:
    """`rf-classifier VERSION` or `rf-classifier:VERSION`, as `models list` prints it."""
    if ":" in name:
        if version:
            raise UsageError(f"give NAME:VERSION or NAME VERSION, not both ({name} {version})")
        name, _, version = name.partition(":")
    if name not in models.MODEL_FILES:
        raise UsageError(f"unknown model {name!r}; the models are {', '.join(models.MODEL_FILES)}")
    if not version:
        raise UsageError(f"which version of {name}? `bentos models list` shows them")
    return name, version


def run(args: argparse.Namespace) -> int:
    try:
        if args.verb == "show" and not args.registry:
            return _show_local(args.model)
        if args.verb == "list" and not args.registry:
            return _list_local()
        if not args.registry:
            return error("--registry (or BENTOS_REGISTRY) is required")
        return _in_registry(args)
    except BentosError as exc:
        return error(exc)
    except OSError as exc:
        return error(f"registry {args.registry}: {exc}", ExitCode.IO)


def _in_registry(args: argparse.Namespace) -> int:
    from bentos.registry import Registry, pull_champions

    registry = Registry(args.registry)
    if args.verb == "show":
        name, _, version = args.model.partition(":")
        record = registry.version(name, version) if version else registry.champion(name)
        if record is None:
            return error(f"{args.registry} has no champion of {name}")
        print(json.dumps(record, indent=2))
    elif args.verb == "pull":
        for name, tag in pull_champions(args.registry).items():
            if tag is None:
                # A first install, before the first retrain: the Bento's own model serves.
                print(f"{name}: no champion in {args.registry} yet; the newest local one serves")
            else:
                print(f"pulled {tag} (the champion; pinned, so local processes serve it)")
    elif args.verb == "list":
        for name in models.MODEL_FILES:
            champion = (registry.champion(name) or {}).get("version")
            for record in registry.versions(name):
                mark = "*" if record["version"] == champion else " "
                when = record["pushed_at"][:19].replace("T", " ")
                print(f"{mark} {name}:{record['version']}  pushed {when}  {_figures(record)}")
        print("* the champion (`bentos models pull` makes it what local processes serve)")
    else:
        name, version = name_and_version(args.name, args.version)
        if args.verb == "promote":
            pointer = registry.set_champion(name, version, "promoted by hand")
            print(f"{name}: champion {pointer['version']}")
        else:
            pointer = registry.rollback(name, version)
            print(f"{name}: champion {pointer['version']} ({pointer['reason']})")
        print(
            f"`bentos models pull --registry {args.registry}` serves it here; in Kubernetes, "
            "`kubectl rollout restart deployment/tabular-classifier`"
        )
    return ExitCode.OK


def _figures(record: dict[str, Any]) -> str:
    metrics = record.get("metrics") or {}
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))


def _list_local() -> int:
    found = models.stored_versions()
    if not found:
        return error("the model store has no models yet: run `bentos train` first")
    pins = models.champions()
    for name in models.MODEL_FILES:
        mine = [m for m in found if m.tag.name == name]
        if not mine:
            print(f"  {name}: none in the store")
            continue
        serving = f"{name}:{pins[name]['version']}" if name in pins else str(mine[-1].tag)
        for m in mine:
            mark = "*" if str(m.tag) == serving else " "
            when = m.info.creation_time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{mark} {m.tag}  created {when}  {_figures(m.info.metadata)}")
        if name in pins:
            pin = pins[name]
            print(f"  {name}: the champion of {pin['registry']}, pulled {pin['pulled_at']}")
    print("* what `name:latest` opens: the pinned champion, else the newest")
    return ExitCode.OK


def _show_local(tag: str) -> int:
    model = models.get(tag)
    meta = model.info.metadata
    report = report_page(model)
    shown = {
        "tag": str(model.tag),
        "created": model.info.creation_time.isoformat(),
        "path": str(model.path),
        "selected": models.resolve(tag)[1],
        "metrics": meta.get("metrics"),
        "training_data": meta.get("training_data"),
        # Each column's kind, missing share, distinct values and why (bentos.schema.kinds);
        # models from before kinds list their numeric features only.
        "columns": meta.get("schema", {}).get("columns")
        or [
            {"name": f["name"], "kind": "numeric"}
            for f in meta.get("schema", {}).get("features", [])
        ],
        "target": meta.get("schema", {}).get("target"),
        "task": meta.get("schema", {}).get("task", "classification"),
        "class_weight": meta.get("class_weight", "none"),
        "size_bytes": meta.get("size_bytes"),
        "report": None if report is None else str(report),
    }
    print(json.dumps(shown, indent=2, default=str))
    return ExitCode.OK


def report_page(model: Any) -> Path | None:
    page = Path(model.path) / models.REPORT_DIR / models.REPORT_PAGE
    return page if page.is_file() else None


def report(args: argparse.Namespace) -> int:
    import shutil

    try:
        model = models.get(args.model)
    except BentosError as exc:
        return error(exc)
    page = report_page(model)
    if page is None:
        return error(
            f"{model.tag} has no training report (it was registered before reports existed); "
            "retrain it with `bentos train` or `bentos retrain`",
            ExitCode.MODEL,
        )
    if args.out:
        shutil.copytree(page.parent, args.out, dirs_exist_ok=True)
        page = Path(args.out) / page.name
    print(page)
    return ExitCode.OK
