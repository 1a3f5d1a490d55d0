"""The drift report of a window of served rows: one page (index.html) with a table of every
feature's check, and a picture per feature and for the predictions, the training rows against
the window's, drifted features first. It is made from check_drift's result, the reference
profile it was checked against, and the window itself.

The page's style and number formats are the training report's (bentos.training.report). Like
that report, the pictures are drawn on matplotlib Figures, never pyplot: no backend is chosen
(Agg renders the PNGs) and no global state is touched, so a server or a job can draw in any
thread. Where matplotlib is missing the page is made without pictures and says why.
"""

from __future__ import annotations

import io
import itertools
import re
from typing import Any

import numpy as np

from bentos.models import REPORT_PAGE as INDEX
from bentos.monitoring.drift import (
    ALPHA,
    DISTANCE_ROWS,
    JS_THRESHOLD,
    MISSING_MARGIN,
    PSI_THRESHOLD,
    UNSEEN_MARGIN,
)
from bentos.monitoring.profile import (
    Spec,
    bin_counts,
    category_counts,
    check_matrix,
    feature_specs,
    label_codes,
    present,
)
from bentos.schema import FeatureSchema
from bentos.training.report import _escape, _number

PREDICTION = "prediction.png"
_MAX_BARS = 40  # categories drawn per picture, the largest; the table has every figure
_ORDER = {"drifted": 0, "too few rows": 1, "stable": 2}


def drift_report(
    result: dict[str, Any],
    reference: dict[str, Any],
    schema: FeatureSchema,
    matrix: np.ndarray,
    predicted: np.ndarray,
) -> dict[str, bytes]:
    """The report's files by name: index.html, a PNG per feature and PREDICTION. `result` is
    check_drift(reference, schema, matrix, predicted)."""
    specs = feature_specs(schema)
    matrix = check_matrix(specs, matrix)
    position = {spec.name: j for j, spec in enumerate(specs)}
    # Drifted first, then those too few rows could test; the schema's order within each.
    order = sorted(
        specs, key=lambda s: (_ORDER[result["features"][s.name]["status"]], position[s.name])
    )
    files = {s.name: _file_name(position[s.name], s.name) for s in specs}
    pictures: dict[str, bytes] = {}
    note = ""
    try:
        pictures = _draw(result, reference, schema, specs, matrix, predicted, files)
    except _NoMatplotlib as exc:
        note = str(exc)
    page = _page(result, reference, order, files if pictures else {}, note)
    return {**pictures, INDEX: page.encode()}


def _file_name(j: int, name: str) -> str:
    # The feature's index keeps names unique; the name, made safe, keeps them readable.
    return f"feature-{j:03d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:40]}.png"


def _rate(part: dict[str, Any] | None) -> str:
    if not part:
        return ""
    return f"{part['reference']:.1%} &rarr; {part['current']:.1%}" + (
        " <b>(rose)</b>" if part["drifted"] else ""
    )


def _row(name: str, f: dict[str, Any], kind: str) -> str:
    e = _escape
    drifted = f["drifted"]
    return (
        f'<tr class="{"drifted" if drifted else ""}"><th>{e(name)}</th><td>{e(kind)}</td>'
        f"<td>{'<b>DRIFTED</b>' if drifted else e(f['status'])}</td><td>{e(f['test'] or '')}</td>"
        f"<td>{_number(f['statistic'])}</td><td>{_number(f['threshold'])}</td>"
        f"<td>{_number(f['p_value'])}</td><td>{_rate(f.get('missing'))}</td>"
        f"<td>{_rate(f.get('unseen'))}</td><td>{e(f['reason'])}</td></tr>"
    )


def _page(
    result: dict[str, Any],
    reference: dict[str, Any],
    order: list[Spec],
    files: dict[str, str],
    note: str,
) -> str:
    e = _escape
    drifted = result["drifted"]
    features = result["features"]
    rows = "".join(_row(s.name, features[s.name], s.kind) for s in order)
    prediction = result["prediction"]
    head = (
        "<tr><th>feature</th><th>kind</th><th>status</th><th>test</th><th>statistic</th>"
        "<th>threshold</th><th>p-value</th><th>missing (training &rarr; window)</th>"
        "<th>unseen (training &rarr; window)</th><th>why</th></tr>"
    )
    summary = (
        f"<b>{len(drifted)}</b> of {len(features)} features drifted"
        + (f": {e(', '.join(drifted))}" if drifted else "")
        + f"; the predictions {'<b>drifted</b>' if prediction['drifted'] else 'did not drift'}."
    )
    figures = [_figure(files[s.name], s.name, features[s.name]) for s in order if s.name in files]
    if files:  # the predictions after the drifted features, before the others
        at = sum(features[s.name]["drifted"] for s in order)
        figures.insert(at, _figure(PREDICTION, "predictions", prediction))
    note_html = f'<p class="note">{e(note)}</p>\n' if note else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Drift: {result["rows"]:,} served rows against training</title>
<style>
body{{font-family:sans-serif;max-width:75em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{padding:.25em .8em;text-align:left;border-bottom:1px solid #ddd;vertical-align:top}}
td{{font-variant-numeric:tabular-nums}}
tr.drifted{{background:#fde2e1}}
figure{{display:inline-block;margin:0 1em 1em 0;vertical-align:top;max-width:36em}}
figure.drifted{{outline:3px solid #d62728}}
img{{max-width:100%}}
.note{{background:#fff4d6;padding:.5em 1em}}
</style></head><body>
<h1>Drift: {result["rows"]:,} served rows against {reference["rows"]:,} training rows</h1>
<p>{summary}</p>
<p>A p-value decides where either side has fewer than {DISTANCE_ROWS:,} values
(Kolmogorov-Smirnov for numbers, chi-square for categories), held to {_number(result["alpha"])}
per check so that a window like the training rows is flagged in at most {ALPHA:.0%} of windows;
from {DISTANCE_ROWS:,} values on both sides a distance decides (PSI over training's deciles past
{PSI_THRESHOLD}, Jensen-Shannon distance past {JS_THRESHOLD}) if the chi-square test says it is
not chance. A rise in the share of missing values (by more than {100 * MISSING_MARGIN:g} points) or
of categories training never saw (by more than {100 * UNSEEN_MARGIN:g} points) counts when Fisher's
exact test says it is not chance.</p>
{note_html}<h2>Features</h2>
<table>{head}
{rows}</table>
<h2>Predictions</h2>
<table>{head}
{_row("predictions", prediction, "labels")}</table>
<h2>Pictures</h2>
{"".join(figures) or "<p>(none)</p>"}
</body></html>
"""


def _figure(file: str, name: str, f: dict[str, Any]) -> str:
    e = _escape
    return (
        f'<figure class="{"drifted" if f["drifted"] else ""}">'
        f'<img src="{e(file)}" alt="{e(name)}: training against the window">'
        f"<figcaption>{e(name)}: {e(f['reason'])}</figcaption></figure>\n"
    )


class _NoMatplotlib(ImportError):
    pass


def _draw(
    result: dict[str, Any],
    reference: dict[str, Any],
    schema: FeatureSchema,
    specs: list[Spec],
    matrix: np.ndarray,
    predicted: np.ndarray,
    files: dict[str, str],
) -> dict[str, bytes]:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise _NoMatplotlib(
            f"No pictures: matplotlib could not be imported here ({exc}); the `train` extra "
            "installs it."
        ) from None

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
        return buf.getvalue()

    def picture(
        title: str,
        drifted: bool,
        names: list[str],
        shares: tuple[np.ndarray, np.ndarray],  # training's, the window's
        labels: tuple[str, str],
        overlaid: bool,
    ) -> bytes:
        fig = Figure(figsize=(6.5, 3.6), layout="constrained")
        ax = fig.subplots()
        x = np.arange(len(names))
        if overlaid:  # bins along one axis: the window's outline over training's bars
            ax.bar(x, shares[0], width=0.9, color="tab:blue", alpha=0.45, label=labels[0])
            outline = {"fill": False, "edgecolor": "tab:orange", "linewidth": 2}
            ax.bar(x, shares[1], width=0.9, label=labels[1], **outline)
        else:
            ax.bar(x - 0.2, shares[0], width=0.4, color="tab:blue", label=labels[0])
            ax.bar(x + 0.2, shares[1], width=0.4, color="tab:orange", label=labels[1])
        slanted = len(names) > 4
        ax.set_xticks(
            x,
            names,
            rotation=45 if slanted else 0,
            ha="right" if slanted else "center",
            fontsize="small",
        )
        ax.set(ylabel="share", title=title)
        ax.title.set_color("tab:red" if drifted else "black")
        ax.legend(fontsize="small")
        return png(fig)

    pictures: dict[str, bytes] = {}
    pred = reference["prediction"]
    out = result["prediction"]
    if schema.regression:  # the numbers answered, on the hold-out predictions' quantile bins
        values = present(np.asarray(predicted, dtype=np.float64).reshape(-1))
        pictures[PREDICTION] = picture(
            _title("predictions", out),
            out["drifted"],
            _bin_names(pred["edges"]),
            (
                np.asarray(pred["shares"]),
                bin_counts(values, pred["edges"]) / max(len(values), 1),
            ),
            (f"hold-out ({pred['rows']:,} rows)", f"window ({len(values):,} rows)"),
            overlaid=False,
        )
    else:
        codes = label_codes(predicted, len(pred["labels"]))
        pictures[PREDICTION] = picture(
            _title("predictions", out),
            out["drifted"],
            [str(v) for v in schema.labels],
            (
                np.asarray(pred["shares"]),
                np.bincount(codes, minlength=len(pred["labels"])) / max(len(codes), 1),
            ),
            (f"hold-out ({pred['rows']:,} rows)", f"window ({len(codes):,} rows)"),
            overlaid=False,
        )
    for j, spec in enumerate(specs):
        profile, out = reference["features"][spec.name], result["features"][spec.name]
        values = present(matrix[:, j])
        labels = (
            f"training (missing {profile['missing']:.1%})",
            f"window (missing {1 - len(values) / max(len(matrix), 1):.1%})",
        )
        ref = np.asarray(profile["shares"], dtype=np.float64)
        if spec.kind == "numeric":
            cur = bin_counts(values, profile["edges"])
            names = _bin_names(profile["edges"])
        else:
            cur = category_counts(values, len(ref))
            names = list(profile["categories"])
        cur = cur / max(len(values), 1)
        if len(names) > _MAX_BARS:
            keep = np.sort(np.argsort(-np.maximum(ref, cur), kind="stable")[:_MAX_BARS])
            names, ref, cur = [names[i] for i in keep], ref[keep], cur[keep]
        title = _title(spec.name, out)
        pictures[files[spec.name]] = picture(
            title, out["drifted"], names, (ref, cur), labels, overlaid=spec.kind == "numeric"
        )
    return pictures


def _title(name: str, out: dict[str, Any]) -> str:
    state = "DRIFTED" if out["drifted"] else out["status"]
    if out["test"] is None:
        return f"{name}: {state}"
    return f"{name}: {state} ({out['test']} {_number(out['statistic'])})"


def _bin_names(edges: list[float]) -> list[str]:
    """The training quantile bins, as ranges: the outer ones open."""
    if not edges:
        return ["all"]
    short = [f"{e:.4g}" for e in edges]
    return [
        f"< {short[0]}",
        *(f"{a} to {b}" for a, b in itertools.pairwise(short)),
        f">= {short[-1]}",
    ]
