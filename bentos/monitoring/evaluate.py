"""The served model's accuracy on delayed labels (`bentos evaluate`): the prediction log's window
joined with the true labels when they arrive, by the request id (and the row within its
request) or by a key column of the logged rows (a batch output's id), and compared with the
metrics the model reached on its hold-out rows at training."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bentos.errors import DataError

METRICS = ("accuracy", "f1_macro")
# A regression's (its hold-out metrics have "rmse"): errors in the target's units, and R².
REGRESSION_METRICS = ("rmse", "mae", "r2")
_ERRORS = ("rmse", "mae")  # higher is worse: judged against the hold-out by a relative margin
MIN_ROWS = 30  # labelled rows a model needs before its metrics are judged


def joined(logged: pd.DataFrame, labels: pd.DataFrame, key: str, label: str) -> pd.DataFrame:
    """The window's logged rows (read_window's, as a DataFrame, with each row's fields as a
    dict in `input`: predlog.inputs) that have a true label: model,
    time, prediction, truth."""
    for column in (key, label):
        if column not in labels.columns:
            raise DataError(
                f"the labels have no column {column!r}; their columns: {', '.join(labels.columns)}"
            )
    if key == "request_id":
        on = ["request_id", "row"] if "row" in labels.columns else ["request_id"]
        if on == ["request_id"] and logged.duplicated("request_id").any():
            raise DataError(
                "requests of several rows share a request id: give the labels a 'row' column "
                "(the row's place in its request) or join by a key column of the rows (--key)"
            )
    else:
        # A column of the logged rows themselves (an order id; a batch input's identifier).
        logged[key] = [fields.get(key) for fields in logged["input"]]
        on = [key]
    truth = labels[[*on, label]].rename(columns={label: "truth"})
    for column in on:  # ids compare as text: a CSV reads "17" as a number, JSON keeps "17"
        truth[column] = truth[column].astype(str)
        logged[column] = logged[column].astype(str)
    if truth.duplicated(on).any():
        raise DataError(f"the labels repeat a key ({', '.join(on)}): each row needs one label")
    return logged.merge(truth, on=on, how="inner")


def metrics_of(frame: pd.DataFrame, regression: bool = False) -> dict[str, Any]:
    """Accuracy and macro F1 of the served answers against the truth, both as text; for a
    regression, RMSE, MAE and R² of the numbers (a label that is not a number is a DataError
    naming it: no row is left out silently)."""
    if regression:
        return _regression_metrics(frame)
    from sklearn.metrics import accuracy_score, f1_score

    truth = frame["truth"].astype(str).to_numpy()
    predicted = frame["prediction"].astype(str).to_numpy()
    return {
        "rows": len(frame),
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }


def _regression_metrics(frame: pd.DataFrame) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    truth = pd.to_numeric(frame["truth"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(truth)
    if bad.any():
        first = frame["truth"].to_numpy()[bad][0]
        raise DataError(
            f"{int(bad.sum())} label(s) of a regression are not finite numbers (the first: "
            f"{first!r})"
        )
    predicted = pd.to_numeric(frame["prediction"], errors="coerce").to_numpy(np.float64)
    return {
        "rows": len(frame),
        "rmse": float(np.sqrt(mean_squared_error(truth, predicted))),
        "mae": float(mean_absolute_error(truth, predicted)),
        # R² needs two rows that differ; None where a period has fewer.
        "r2": float(r2_score(truth, predicted)) if np.ptp(truth) > 0 else None,
    }


def _fell(metric: str, served: float | None, reference: float | None, margin: float) -> bool:
    if served is None or reference is None:
        return False
    if metric in _ERRORS:  # a relative margin: the errors are in the target's units
        return served > reference * (1 + margin)
    return served < reference - margin


def evaluate(
    frame: pd.DataFrame, holdout: dict[str, dict[str, Any]], margin: float, every: str
) -> dict[str, Any]:
    """Per model tag: the metrics over the window and per `every` (a pandas frequency such as
    "1D"), against its hold-out metrics; `fell` names the metrics worse by more than margin
    (a classifier's lower by margin; a regression's RMSE or MAE higher by that share, its R²
    lower by margin)."""
    out: dict[str, Any] = {"models": {}, "fell": False}
    for tag, rows in frame.groupby("model"):
        regression = "rmse" in holdout[tag]
        names = REGRESSION_METRICS if regression else METRICS
        served = metrics_of(rows, regression)
        reference = {m: holdout[tag].get(m) for m in names}
        fell = [
            m
            for m in names
            if served["rows"] >= MIN_ROWS and _fell(m, served[m], reference[m], margin)
        ]
        periods = [
            {"start": start.isoformat(), **metrics_of(part, regression)}
            for start, part in rows.groupby(pd.Grouper(key="time", freq=every))
            if len(part)
        ]
        out["models"][tag] = {
            **served,
            "metrics": list(names),
            "holdout": reference,
            "judged": served["rows"] >= MIN_ROWS,
            "fell": fell,
            "periods": periods,
        }
        out["fell"] |= bool(fell)
    return out


def report_files(summary: dict[str, Any]) -> dict[str, bytes]:
    """A page per run: each model's metrics against its hold-out ones, and a picture of each
    metric per period."""
    import io
    from html import escape

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, bytes] = {}
    parts = ["<!doctype html><meta charset=utf-8><title>Accuracy on delayed labels</title>"]
    parts.append(f"<h1>Accuracy on delayed labels</h1><p>margin {summary['margin']}</p>")
    for i, (tag, m) in enumerate(summary["models"].items()):
        verdict = f"FELL: {', '.join(m['fell'])}" if m["fell"] else "within the margin"
        if not m["judged"]:
            verdict = f"too few labelled rows ({m['rows']}, {MIN_ROWS} needed)"
        parts.append(f"<h2>{escape(tag)}: {escape(verdict)}</h2><table border=1>")
        parts.append("<tr><th>metric</th><th>served</th><th>hold-out</th></tr>")
        for metric in m["metrics"]:
            ref, got = m["holdout"][metric], m[metric]
            ref_text = "-" if ref is None else f"{ref:.4g}"
            got_text = "-" if got is None else f"{got:.4g}"
            parts.append(f"<tr><td>{metric}</td><td>{got_text}</td><td>{ref_text}</td></tr>")
        parts.append(f"</table><p>{m['rows']} labelled rows</p>")
        fig, ax = plt.subplots(figsize=(7, 3))
        starts = [p["start"][:16] for p in m["periods"]]
        # A classifier's two shares, or a regression's two errors (in the target's units).
        drawn = m["metrics"][:2]
        for metric, color in zip(drawn, ("tab:blue", "tab:orange"), strict=True):
            ax.plot(
                starts, [p[metric] for p in m["periods"]], marker="o", color=color, label=metric
            )
            if m["holdout"][metric] is not None:
                ax.axhline(m["holdout"][metric], color=color, linestyle="--", linewidth=1)
        if drawn == list(METRICS):
            ax.set_ylim(0, 1.02)
        ax.legend(loc="lower left")
        ax.set_title(f"{tag} (dashed: hold-out)")
        fig.autofmt_xdate()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        plt.close(fig)
        name = f"model-{i}.png"
        files[name] = buf.getvalue()
        parts.append(f'<img src="{name}" alt="{escape(tag)} per period">')
    files["index.html"] = ("\n".join(parts) + "\n").encode()
    return files
