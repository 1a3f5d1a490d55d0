"""Champion and challenger: both judged on the same labelled rows, and the decision to promote.

A challenger replaces the champion only when it is at least as good on the chosen metric (macro
F1 by default; a regression's RMSE or MAE, where lower is better, or R²) plus a margin, and only
after it passed the training gates; a registry without a champion takes the first challenger
that passed them.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from bentos.errors import DataError

METRICS = ("f1_macro", "accuracy")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"rmse", "mae"})


def score(runner: Any, frame: pd.DataFrame, target: str) -> dict[str, Any]:
    """`runner`'s accuracy and macro F1 on the labelled rows of `frame` (rows the schema
    refuses are left out, and counted)."""
    from sklearn.metrics import accuracy_score, f1_score

    if target not in frame.columns:
        raise DataError(f"evaluation data has no target column {target!r}")
    x, reasons = runner.schema.validate_frame(frame)
    ok = np.array([r is None for r in reasons], dtype=bool)
    if not ok.any():
        raise DataError("evaluation data has no row the model can score")
    if runner.schema.regression:
        from bentos.schema.task import regression_target
        from bentos.training.gates import evaluate_regression

        truth = regression_target(frame[target][ok], "evaluation data")
        scores = evaluate_regression(truth, runner.predict_proba(x[ok])[:, 0])
        return {
            **{k: scores[k] for k in REGRESSION_METRICS},
            "rows": int(ok.sum()),
            "rows_refused": int((~ok).sum()),
        }
    predicted = [str(v) for v in runner.labels_for(runner.predict_proba(x[ok]))]
    truth = [str(v) for v in frame[target].to_numpy()[ok]]
    labels = [str(v) for v in runner.schema.labels]
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1_macro": float(
            f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)
        ),
        "rows": int(ok.sum()),
        "rows_refused": int((~ok).sum()),
    }


def decide(
    challenger: dict[str, Any], champion: dict[str, Any] | None, metric: str, margin: float
) -> tuple[bool, str]:
    """(promote?, why), on `metric` with `margin`: higher is better, or for RMSE and MAE lower
    (the challenger's must be at most the champion's minus the margin)."""
    if champion is None:
        return True, "no champion yet"
    if metric not in challenger or metric not in champion:
        known = ", ".join(k for k in challenger if k not in ("rows", "rows_refused"))
        raise DataError(f"metric {metric!r} does not fit these models; they have {known}")
    if metric in LOWER_IS_BETTER:
        need = champion[metric] - margin
        if challenger[metric] <= need:
            return (
                True,
                f"{metric} {challenger[metric]:.4g} <= champion's {champion[metric]:.4g} - {margin:g}",
            )
        return (
            False,
            f"{metric} {challenger[metric]:.4g} > champion's {champion[metric]:.4g} - {margin:g}",
        )
    need = champion[metric] + margin
    if challenger[metric] >= need:
        return (
            True,
            f"{metric} {challenger[metric]:.4f} >= champion's {champion[metric]:.4f} + {margin:g}",
        )
    return (
        False,
        f"{metric} {challenger[metric]:.4f} < champion's {champion[metric]:.4f} + {margin:g}",
    )


def report(
    name: str,
    challenger: tuple[str, dict[str, Any]],
    champion: tuple[str, dict[str, Any]] | None,
    metric: str,
    margin: float,
    promoted: bool,
    why: str,
    evaluated_on: str,
) -> tuple[dict[str, Any], str]:
    """The decision as JSON and as a page to read."""
    data = {
        "model": name,
        "decided_at": datetime.now(UTC).isoformat(),
        "evaluated_on": evaluated_on,
        "metric": metric,
        "margin": margin,
        "promoted": promoted,
        "why": why,
        "challenger": {"version": challenger[0], "metrics": challenger[1]},
        "champion": None if champion is None else {"version": champion[0], "metrics": champion[1]},
    }
    rows = [("challenger", *challenger)] + ([("champion", *champion)] if champion else [])
    shown = REGRESSION_METRICS if "rmse" in challenger[1] else METRICS
    cells = "".join(
        f"<tr><th>{role}</th><td>{html.escape(version)}</td>"
        + "".join(f"<td>{m[k]:.4f}</td>" for k in shown)
        + f"<td>{m['rows']}</td></tr>"
        for role, version, m in rows
    )
    verdict = "promoted" if promoted else "not promoted"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}: {verdict}</title>
<style>body{{font-family:sans-serif;max-width:48em;margin:2em auto}}td,th{{padding:.3em .8em;text-align:left}}</style>
</head><body>
<h1>{html.escape(name)} {html.escape(challenger[0])}: {verdict}</h1>
<p>{html.escape(why)} (metric {html.escape(metric)}, margin {margin:g}); evaluated on
{html.escape(evaluated_on)}, {data["decided_at"]}.</p>
<table><tr><th></th><th>version</th>{"".join(f"<th>{k}</th>" for k in shown)}<th>rows</th></tr>{cells}</table>
</body></html>
"""
    return data, page
