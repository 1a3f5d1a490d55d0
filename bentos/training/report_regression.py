"""The training report of a regression model: the same kind of page as a classifier's
(bentos.training.report), with what a number needs: predicted against actual, the residuals'
distribution, feature importances, and for a served form its predictions against the model it
was made from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bentos.models import REPORT_PAGE as INDEX
from bentos.schema import FeatureSchema
from bentos.training.report import (
    IMPORTANCES,
    PARITY,
    Importances,
    Parity,
    _escape,
    _NoMatplotlib,
    _number,
    data_section,
    importances_png,
    importances_section,
    note_section,
    page_head,
    parity_section,
    permuted_growth,
    pictures_section,
    png,
)

PREDICTED, RESIDUALS = "predicted_vs_actual.png", "residuals.png"
_CAPTIONS = {
    PREDICTED: "Predicted against actual on the hold-out rows",
    RESIDUALS: "Residuals (actual - predicted) on the hold-out rows",
    IMPORTANCES: "Feature importances",
    PARITY: "Predictions against the reference model",
}


@dataclass(frozen=True)
class RegressionReport:
    title: str
    schema: FeatureSchema
    metrics: dict[str, Any]
    importances: Importances
    parity: Parity | None
    pictures: dict[str, bytes] = field(default_factory=dict)
    note: str = ""

    def files(self, tag: str, common: dict[str, Any]) -> dict[str, bytes]:
        return {**self.pictures, INDEX: self._page(tag, common).encode()}

    def _page(self, tag: str, common: dict[str, Any]) -> str:
        e = _escape
        m, base = self.metrics, self.metrics["baseline"]
        split = common.get("split", {})
        row = "<tr><th>{}</th><td>{:.4g}</td><td>{:.4g}</td><td>{:.4f}</td></tr>"
        return f"""{page_head(tag, self.title)}
<p>Regression of <b>{e(self.schema.target)}</b>. Hold-out RMSE <b>{m["rmse"]:.4g}</b>, MAE
<b>{m["mae"]:.4g}</b>, R² <b>{m["r2"]:.4f}</b>, on {int(m["n_test"])} rows held out of training
(test size {e(split.get("test_size"))}, seed {e(split.get("seed"))}).</p>
<h2>Against the mean</h2>
<table><tr><th></th><th>RMSE</th><th>MAE</th><th>R²</th></tr>
{row.format("this model", m["rmse"], m["mae"], m["r2"])}
{row.format(f"always {base['mean']:.4g}", base["rmse"], base["mae"], base["r2"])}
</table>
{note_section(self.note)}{data_section(self.schema, common)}
{parity_section(self.parity)}{pictures_section({n: _CAPTIONS[n] for n in self.pictures}, _CAPTIONS)}
{importances_section(self.schema, self.importances)}"""


def permutation_importances(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    repeats: int = 5,
    seed: int = 0,
) -> Importances:
    """How much the hold-out RMSE grows when one feature's column is shuffled, for a model
    given as its prediction function (the TFLite model as it is served)."""

    def rmse(m: np.ndarray) -> float:
        return float(np.sqrt(np.mean((np.asarray(predict(m), np.float64) - y) ** 2)))

    mean, std = permuted_growth(rmse, x, repeats, seed)
    return Importances(
        mean,
        std,
        "growth of hold-out RMSE when shuffled",
        f"permutation importance: the growth of the hold-out RMSE when the feature is shuffled "
        f"(mean and std over {repeats} shuffles)",
    )


def build(
    title: str,
    schema: FeatureSchema,
    y: np.ndarray,
    predicted: np.ndarray,
    metrics: dict[str, Any],
    importances: Importances,
    parity: Parity | None = None,
) -> RegressionReport:
    """The report of a model whose hold-out predictions are `predicted` for the values `y`;
    a parity's `proba` holds the reference model's predictions."""
    report = RegressionReport(title, schema, metrics, importances, parity)
    try:
        return replace(report, pictures=_draw(report, np.asarray(y), np.asarray(predicted)))
    except _NoMatplotlib as exc:
        return replace(report, note=str(exc))


def _draw(report: RegressionReport, y: np.ndarray, predicted: np.ndarray) -> dict[str, bytes]:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise _NoMatplotlib(
            f"No pictures: matplotlib could not be imported where this model was trained ({exc}). "
            "The `train` extra installs it; retrain there to get them."
        ) from None

    target = report.schema.target
    pictures: dict[str, bytes] = {}

    def versus(ax: Any, a: np.ndarray, b: np.ndarray, xlabel: str, ylabel: str) -> None:
        ax.scatter(a, b, s=8, alpha=0.5)
        low, high = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        ax.plot([low, high], [low, high], color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel=xlabel, ylabel=ylabel)

    fig = Figure(figsize=(6, 5.5), layout="constrained")
    ax = fig.subplots()
    versus(ax, y, predicted, f"actual {target}", f"predicted {target}")
    ax.set(title=f"{report.title}: R² {report.metrics['r2']:.3f}")
    pictures[PREDICTED] = png(fig)

    residuals = y - predicted
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.hist(residuals, bins=40, color="tab:blue")
    left.axvline(0, color="black", linestyle=":", linewidth=1)
    left.set(xlabel=f"actual - predicted {target}", ylabel="rows", title="residuals")
    right.scatter(predicted, residuals, s=8, alpha=0.5)
    right.axhline(0, color="grey", linestyle=":", linewidth=1)
    right.set(xlabel=f"predicted {target}", ylabel="residual", title="against the prediction")
    pictures[RESIDUALS] = png(fig)

    pictures[IMPORTANCES] = importances_png(report.title, report.schema, report.importances)

    par = report.parity
    if par is not None and par.proba is not None:
        fig = Figure(figsize=(6, 5.5), layout="constrained")
        ax = fig.subplots()
        versus(ax, np.asarray(par.proba).reshape(-1), predicted, par.reference, par.served)
        ax.set(title=f"{par.title}: max |difference| {_number(par.figures.get('max_abs_diff'))}")
        pictures[PARITY] = png(fig)
    return pictures
