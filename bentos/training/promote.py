"""A retrain's last step: each new model (the challenger) and the registry's champion judged on
the same labelled rows, the challenger pushed, and promoted only when it is at least as good.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bentos import models
from bentos.errors import BentosError
from bentos.registry import Registry
from bentos.training.evaluate import decide, report, score
from bentos.training.pipeline import TrainConfig, TrainResult, held_out

Log = Callable[..., None]


def _runner(tag: str) -> Any:
    from bentos.runners import RandomForestRunner, TFLiteRunner

    if tag.startswith("rf-classifier:"):
        return RandomForestRunner(tag, "packed")
    return TFLiteRunner(tag)


def promote(
    result: TrainResult,
    config: TrainConfig,
    registry: Registry,
    *,
    eval_data: str | None,
    metric: str | None,
    margin: float,
    log: Log,
    allow_schema_change: bool = False,
) -> dict[str, dict[str, Any]]:
    """Decide for every model the retrain registered; returns name -> decision. Logs one
    `{"event": "decision", ...}` line per model.

    A challenger whose input fields differ from the champion's (a column added, removed or of
    another kind) is promoted only with `allow_schema_change`: the clients send the champion's."""
    from bentos.training import data as data_mod

    if eval_data:
        frame, _ = data_mod.read_table(eval_data)
        evaluated_on = eval_data
    else:
        frame = held_out(config)
        evaluated_on = f"the held-out split of {config.data}"
    target = str(config.target)
    decisions = {}
    for tag in (t for t in (result.rf_tag, result.tflite_tag) if t):
        name, version = tag.split(":")
        runner = _runner(tag)
        judged = metric or ("rmse" if runner.schema.regression else "f1_macro")
        challenger = score(runner, frame, target)
        pointer = registry.champion(name)
        champion, changed = None, []
        if pointer is not None:
            champion_runner = _runner(registry.pull(name))
            changed = runner.schema.differences(champion_runner.schema)
            try:
                champion = (pointer["version"], score(champion_runner, frame, target))
            except BentosError as exc:
                if not changed:
                    raise
                # The champion's columns are not in the new data: it cannot be judged on it.
                log(event="champion_not_scored", model=name, error=str(exc))
        promoted, why = decide(
            challenger, None if champion is None else champion[1], judged, margin
        )
        if changed:
            what = "schema differs from the champion's: " + "; ".join(changed)
            if not allow_schema_change:
                promoted = False
                why = f"{what}; clients send the champion's schema, so it is promoted only with --allow-schema-change ({why})"
            else:
                why = f"{why}; {what} (allowed by --allow-schema-change)"
        registry.push(tag, challenger)
        data, page = report(
            name, (version, challenger), champion, judged, margin, promoted, why, evaluated_on
        )
        registry.write_report(name, version, data, page)
        if promoted:
            registry.set_champion(name, version, why)
        # This store holds the champion now (the challenger, or the one pulled to judge it):
        # pinned, local processes serve it, not a challenger that lost.
        current = version if promoted else None if champion is None else champion[0]
        if current is not None:
            models.pin_champion(name, current, registry.url)
        decisions[name] = data
        log(
            event="decision",
            model=name,
            promoted=promoted,
            why=why,
            challenger={"version": version, "metrics": challenger},
            champion=None if champion is None else {"version": champion[0], "metrics": champion[1]},
            report=f"{registry.url}/{name}/{version}.report.html",
        )
    return decisions
