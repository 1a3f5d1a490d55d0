"""A retrain's last step: each new model (the challenger) and the registry's champion judged on
the same labelled rows, the challenger pushed, and promoted only when it is at least as good.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bentos import models
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
    metric: str,
    margin: float,
    log: Log,
) -> dict[str, dict[str, Any]]:
    """Decide for every model the retrain registered; returns name -> decision. Logs one
    `{"event": "decision", ...}` line per model."""
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
        challenger = score(_runner(tag), frame, target)
        pointer = registry.champion(name)
        champion = None
        if pointer is not None:
            champion_tag = registry.pull(name)
            champion = (pointer["version"], score(_runner(champion_tag), frame, target))
        promoted, why = decide(
            challenger, None if champion is None else champion[1], metric, margin
        )
        registry.push(tag, challenger)
        data, page = report(
            name, (version, challenger), champion, metric, margin, promoted, why, evaluated_on
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
