"""The training report of a model: pictures (PNG) and one page (index.html), made from the
hold-out rows the gates judged it on, and registered in the model's folder (models.REPORT_DIR)
so that it travels with the model: `bentoml models export`, the registry, the Bento.

matplotlib is imported here only, and only when the pictures are drawn: it is a training-time
dependency. Where it is missing (the serving image retraining the forest), the page is made
without pictures and says why.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bentos.models import REPORT_PAGE as INDEX
from bentos.schema import FeatureSchema

CONFUSION, ROC, PR, IMPORTANCES, PARITY = (
    "confusion_matrix.png",
    "roc.png",
    "pr.png",
    "importances.png",
    "parity.png",
)
_CAPTIONS = {
    CONFUSION: "Confusion matrix on the hold-out rows (colour: share of the true class)",
    ROC: "ROC curves",
    PR: "Precision-recall curves",
    IMPORTANCES: "Feature importances",
    PARITY: "Probabilities against the reference model",
}
_TOP_FEATURES = 30  # bars in the importances picture; the page's table lists every feature


@dataclass(frozen=True)
class Importances:
    mean: np.ndarray  # one per feature, in the schema's order
    std: np.ndarray
    measure: str  # what a bar's length is, for the picture's axis
    method: str  # how they were measured, shown with them


@dataclass(frozen=True)
class Parity:
    """A served form against the model it was made from, on the same hold-out rows."""

    served: str  # e.g. "TFLite"
    reference: str  # e.g. "Keras"
    figures: dict[str, Any]  # the parity figures, as registered in the metadata
    proba: np.ndarray | None = None  # the reference's probabilities, for the picture

    @property
    def title(self) -> str:
        return f"{self.served} against {self.reference}"


@dataclass(frozen=True)
class Report:
    """A model's report before registration; `files` adds what only registration knows."""

    title: str
    schema: FeatureSchema
    metrics: dict[str, Any]
    curves: dict[str, dict[str, float | None]]  # class -> ROC AUC and average precision
    drawn: tuple[str, ...]  # the classes whose curves the pictures show
    importances: Importances
    parity: Parity | None
    pictures: dict[str, bytes] = field(default_factory=dict)
    note: str = ""

    def files(self, tag: str, common: dict[str, Any]) -> dict[str, bytes]:
        """The report's files by name: the pictures and the page, for the model `tag` trained
        as `common` (the metadata both models share: training data, split) says."""
        return {**self.pictures, INDEX: self._page(tag, common).encode()}

    def _page(self, tag: str, common: dict[str, Any]) -> str:
        e = _escape
        m = self.metrics
        split = common.get("split", {})
        rows = "".join(
            f"<tr><th>{e(label)}</th>"
            + "".join(f"<td>{m['per_class'][label][k]:.4f}</td>" for k in _PER_CLASS)
            + f"<td>{int(m['per_class'][label]['support'])}</td>"
            + "".join(f"<td>{_number(self.curves[label][k])}</td>" for k in ("auc", "ap"))
            + "</tr>"
            for label in (str(v) for v in self.schema.labels)
        )
        captions = {name: self._caption(name) for name in self.pictures}
        return f"""{page_head(tag, self.title)}
<p>Hold-out accuracy <b>{m["accuracy"]:.4f}</b>, macro F1 <b>{m["f1_macro"]:.4f}</b>, on
{int(m["n_test"])} rows held out of training (test size {e(split.get("test_size"))}, seed
{e(split.get("seed"))}, stratified; class weights {e(common.get("class_weight", "none"))}).</p>
{self._baseline()}
{note_section(self.note)}{data_section(self.schema, common)}
<h2>Per class</h2>
<table><tr><th>class</th>{"".join(f"<th>{k}</th>" for k in _PER_CLASS)}<th>support</th>
<th>ROC AUC</th><th>average precision</th></tr>
{rows}</table>
{parity_section(self.parity)}{pictures_section(captions, _CAPTIONS)}
{importances_section(self.schema, self.importances)}"""

    def _baseline(self) -> str:
        base = self.metrics.get("baseline")
        if not base:
            return ""
        m = self.metrics
        return f"""<h2>Against the majority class</h2>
<table><tr><th></th><th>accuracy</th><th>macro F1</th></tr>
<tr><th>this model</th><td>{m["accuracy"]:.4f}</td><td>{m["f1_macro"]:.4f}</td></tr>
<tr><th>always {_escape(base["class"])}</th><td>{base["accuracy"]:.4f}</td>
<td>{base["f1_macro"]:.4f}</td></tr></table>
"""

    def _caption(self, name: str) -> str:
        if name in (ROC, PR):
            labels = self.schema.labels
            how = f"positive class {labels[1]}" if len(labels) == 2 else "one-vs-rest, per class"
            return f"{_CAPTIONS[name]} ({how})"
        if name == IMPORTANCES:
            return f"{_CAPTIONS[name]}: {self.importances.method}"
        if name == PARITY and self.parity is not None:
            return f"{self.parity.title}: max |difference| {_number(self.parity.figures.get('max_abs_diff'))}"
        return _CAPTIONS[name]


_PER_CLASS = ("precision", "recall", "f1-score")


def _escape(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def page_head(tag: str, title: str) -> str:
    """A report page's head and heading: the same look for every model's report."""
    e = _escape
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{e(tag)}: training report</title>
<style>
body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{padding:.25em .8em;text-align:left;border-bottom:1px solid #ddd}}
td{{font-variant-numeric:tabular-nums}}
figure{{display:inline-block;margin:0 1em 1em 0;vertical-align:top}}
img{{max-width:100%}}
.note{{background:#fff4d6;padding:.5em 1em}}
</style></head><body>
<h1>{e(title)} <code>{e(tag)}</code></h1>"""


def note_section(note: str) -> str:
    return f'<p class="note">{_escape(note)}</p>\n' if note else ""


def data_section(schema: FeatureSchema, common: dict[str, Any]) -> str:
    e, data = _escape, common.get("training_data", {})
    return f"""<h2>Training data</h2>
<table>
<tr><th>source</th><td>{e(data.get("source"))}</td></tr>
<tr><th>sha256</th><td><code>{e(data.get("sha256"))}</code></td></tr>
<tr><th>rows</th><td>{e(data.get("rows"))}</td></tr>
<tr><th>target</th><td>{e(schema.target)}</td></tr>
</table>"""


def parity_section(parity: Parity | None) -> str:
    if parity is None:
        return ""
    cells = "".join(
        f"<tr><th>{_escape(k)}</th><td>{_escape(_number(v))}</td></tr>"
        for k, v in parity.figures.items()
    )
    return f"<h2>{_escape(parity.title)}</h2>\n<table>{cells}</table>\n"


def pictures_section(captions: dict[str, str], alts: dict[str, str]) -> str:
    """The pictures (name -> caption), each with its plain description as alt text."""
    shown = "".join(
        f'<figure><img src="{name}" alt="{_escape(alts[name])}">'
        f"<figcaption>{_escape(caption)}</figcaption></figure>\n"
        for name, caption in captions.items()
    )
    return f"<h2>Pictures</h2>\n{shown or '<p>(none)</p>'}"


def importances_section(schema: FeatureSchema, imp: Importances) -> str:
    features = "".join(
        f"<tr><th>{_escape(schema.matrix_names[i])}</th><td>{imp.mean[i]:.4f}</td>"
        f"<td>{imp.std[i]:.4f}</td></tr>"
        for i in np.argsort(-imp.mean, kind="stable")
    )
    return f"""<h2>Feature importances</h2>
<p>{_escape(imp.method)}.</p>
<table><tr><th>feature</th><th>importance</th><th>std</th></tr>
{features}</table>
</body></html>
"""


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def importances_png(title: str, schema: FeatureSchema, imp: Importances) -> bytes:
    """The importances as bars, the top _TOP_FEATURES of them."""
    from matplotlib.figure import Figure

    order = np.argsort(-imp.mean, kind="stable")[:_TOP_FEATURES][::-1]
    fig = Figure(figsize=(7, 1.5 + 0.3 * len(order)), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(order)), imp.mean[order], xerr=imp.std[order], color="tab:blue")
    ax.set_yticks(range(len(order)), [schema.matrix_names[i] for i in order])
    shown = "" if len(order) == len(imp.mean) else f" (top {len(order)} of {len(imp.mean)})"
    ax.set(title=f"{title}: feature importances{shown}", xlabel=imp.measure)
    return png(fig)


def forest_importances(forest: Any) -> Importances:
    """A forest's impurity-based importances, with their spread over its trees."""
    per_tree = np.array([t.feature_importances_ for t in forest.estimators_])
    return Importances(
        np.asarray(forest.feature_importances_, dtype=np.float64),
        per_tree.std(axis=0),
        "mean decrease in impurity",
        "mean decrease in impurity over the forest's trees (std: over the trees)",
    )


def permutation_importances(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    repeats: int = 5,
    seed: int = 0,
) -> Importances:
    """How much the hold-out accuracy drops when one feature's column is shuffled, for any
    model given as its probability function (the TFLite model as it is served)."""

    def loss(m: np.ndarray) -> float:
        return -float((predict_proba(m).argmax(1) == y).mean())

    mean, std = permuted_growth(loss, x, repeats, seed)
    return Importances(
        mean,
        std,
        "drop in hold-out accuracy when shuffled",
        f"permutation importance: the drop in hold-out accuracy when the feature is shuffled "
        f"(mean and std over {repeats} shuffles)",
    )


def permuted_growth(
    loss: Callable[[np.ndarray], float], x: np.ndarray, repeats: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, how much `loss` grows when its column is shuffled: mean and std over
    `repeats` shuffles."""
    rng = np.random.default_rng(seed)
    base = loss(x)
    growth = np.empty((x.shape[1], repeats))
    for j in range(x.shape[1]):
        shuffled = x.copy()
        for r in range(repeats):
            shuffled[:, j] = rng.permutation(x[:, j])
            growth[j, r] = loss(shuffled) - base
    return growth.mean(axis=1), growth.std(axis=1)


def build(
    title: str,
    schema: FeatureSchema,
    y: np.ndarray,
    proba: np.ndarray,
    metrics: dict[str, Any],
    importances: Importances,
    parity: Parity | None = None,
) -> Report:
    """The report of a model whose hold-out probabilities are `proba` for the classes `y`
    (indices into schema.labels); `metrics` as bentos.training.gates.evaluate gives them."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = [str(v) for v in schema.labels]
    curves: dict[str, dict[str, float | None]] = {}
    for k, label in enumerate(labels):
        truth = y == k
        both = bool(truth.any() and (~truth).any())  # a curve needs positives and negatives
        curves[label] = {
            "auc": float(roc_auc_score(truth, proba[:, k])) if both else None,
            "ap": float(average_precision_score(truth, proba[:, k])) if both else None,
        }
    # Two classes: one curve, for the second (the first's is its mirror).
    candidates = labels[1:] if len(labels) == 2 else labels
    drawn = tuple(label for label in candidates if curves[label]["auc"] is not None)
    report = Report(title, schema, metrics, curves, drawn, importances, parity)
    try:
        return replace(report, pictures=_draw(report, y, proba))
    except _NoMatplotlib as exc:
        return replace(report, note=str(exc))


class _NoMatplotlib(ImportError):
    pass


def _draw(report: Report, y: np.ndarray, proba: np.ndarray) -> dict[str, bytes]:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise _NoMatplotlib(
            f"No pictures: matplotlib could not be imported where this model was trained ({exc}). "
            "The `train` extra installs it; retrain there to get them."
        ) from None
    from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

    labels = [str(v) for v in report.schema.labels]
    n = len(labels)
    pictures: dict[str, bytes] = {}

    side = min(4 + 0.5 * n, 16)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    counts = confusion_matrix(y, proba.argmax(1), labels=list(range(n)))
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8)
    if n <= 30:  # past that the numbers no longer fit their cells
        for i in range(n):
            for j in range(n):
                colour = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour)
    ax.set_xticks(range(n), labels, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted", ylabel="true", title=f"{report.title}: confusion matrix")
    pictures[CONFUSION] = png(fig)

    for name, curve in ((ROC, roc_curve), (PR, precision_recall_curve)):
        fig = Figure(figsize=(6, 5), layout="constrained")
        ax = fig.subplots()
        for label in report.drawn:
            k = labels.index(label)
            a, b, _ = curve(y == k, proba[:, k])
            if name == ROC:
                ax.plot(a, b, label=f"{label} (AUC {report.curves[label]['auc']:.3f})")
            else:
                ax.step(b, a, where="post", label=f"{label} (AP {report.curves[label]['ap']:.3f})")
        if name == ROC:
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
            ax.set(xlabel="false positive rate", ylabel="true positive rate")
        else:
            ax.set(xlabel="recall", ylabel="precision")
        ax.set(
            xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=f"{report.title}: {report._caption(name)}"
        )
        if report.drawn:
            ax.legend(loc="lower right" if name == ROC else "lower left", fontsize="small")
        pictures[name] = png(fig)

    pictures[IMPORTANCES] = importances_png(report.title, report.schema, report.importances)

    par = report.parity
    if par is not None and par.proba is not None:
        diff = np.abs(par.proba - proba).ravel()
        fig = Figure(figsize=(11, 4.5), layout="constrained")
        left, right = fig.subplots(1, 2)
        left.scatter(par.proba.ravel(), proba.ravel(), s=8, alpha=0.5)
        left.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        left.set(
            xlabel=f"{par.reference} probability",
            ylabel=f"{par.served} probability",
            title=f"{par.title}: every row and class",
        )
        right.hist(diff, bins=40, color="tab:orange")
        right.axvline(diff.max(), color="black", linestyle="--", linewidth=1)
        right.set(
            xlabel="|difference| per row and class",
            ylabel="count",
            title=f"max |difference| {diff.max():.2e} over {len(diff)} probabilities",
        )
        pictures[PARITY] = png(fig)
    return pictures
