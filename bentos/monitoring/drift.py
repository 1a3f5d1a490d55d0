"""Has what a model is served drifted from what it was trained on? A window of served rows
(the feature matrix, as validation makes it, and the label indices the model answered) against
the reference profile saved at training (bentos.monitoring.profile).

Every statistic comes from scipy: the population stability index (PSI, from `rel_entr`), the
Jensen-Shannon distance, the two-sample Kolmogorov-Smirnov test (numbers, against the profile's
sample), the chi-square test of homogeneity (categories, and numbers on the PSI's bins, against
training's counts), and Fisher's exact test for a rise in the missing share or in the share of
categories training never saw. Which one decides depends on the kind and the rows (as Evidently
does, and why: evidentlyai/evidently#50): when either side has fewer than DISTANCE_ROWS values,
a p-value (KS for numbers, chi-square for categories); when both have more, a distance (PSI for
numbers, Jensen-Shannon for categories), since with many rows a p-value flags differences too
small to matter. A distance past its line counts only when the chi-square test on the same bins
says it is not chance: near DISTANCE_ROWS, a category of many levels passes the line by chance
alone. A rise in the missing or unseen share counts when it is both larger than a margin and
not chance.

The chi-square test pools categories too rare for its approximation. Where even that leaves the
counts too few for it (a training side of few rows, say 30 hold-out answers, against a window
all in one category: pooling would leave one category, p = 1), its p-value is exact instead:
Fisher's exact test for two categories, else the share of random tables of the same totals
whose chi-square statistic is as large (a permutation test, as R's chisq.test with
simulate.p.value; the tables drawn by numpy, seeded).

p-values are held to ALPHA over the whole window (Bonferroni: ALPHA over the number of checks),
so that a window drawn from training's distribution is flagged in at most about ALPHA of cases
however many features the model has. The predictions are a check of their own, held to ALPHA.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import chi2_contingency, fisher_exact, ks_2samp

from bentos.monitoring.profile import (
    FORMAT,
    Spec,
    bin_counts,
    category_counts,
    check_matrix,
    feature_specs,
    label_codes,
    present,
    significant,
)
from bentos.schema import FeatureSchema

# Measured with benchmarks/drift_calibration.py (BENCHMARKS.md, "Drift"), on five real tables
# of 3 to 73 features: windows of 50 to 100,000 rows drawn from the training rows, and windows of
# rows the profile never saw, are flagged in at most 1% of windows at every size (at most 0.5%
# but in ames' 50-row windows of rows never seen: 2 of 200, one of them a rare window the exact
# small-count test flags where pooling said p = 1); a mean moved by 0.5 standard deviations is
# found in every window of 1,000 rows or more. Without the chi-square check on a distance, 18.5%
# of 1,000-row windows of ames (never seen rows) would be flagged: a Jensen-Shannon distance of
# its many-level categories past 0.1 by chance alone.
ALPHA = 0.01  # the chance that a window from training's distribution is flagged at all
DISTANCE_ROWS = 1000  # values on each side from which a distance decides, not a p-value
PSI_THRESHOLD = 0.1  # PSI over the training deciles; 0.1 is the usual "shifted" line
JS_THRESHOLD = 0.1  # Jensen-Shannon distance (base 2) over the categories; Evidently's line
MISSING_MARGIN = 0.05  # the missing share must rise by more than this (absolute) ...
UNSEEN_MARGIN = 0.02  # ... and the share of unseen categories by more than this
MIN_ROWS = 30  # fewer values than this (in the window or in training) are not tested
_PSI_FLOOR = 1e-4  # an empty bin's share in the PSI, which is infinite otherwise (Evidently's)
_MIN_EXPECTED = 5  # the chi-square approximation's rule: categories expected fewer are pooled

# Where the approximation does not hold, random tables of the same totals give the p-value, the
# smallest of which is 1 / (tables + 1): at least _RESAMPLES tables, and enough that _HITS tables
# as extreme as the window's still leave p under alpha (a window's Bonferroni alpha is small);
# at most _MOST_RESAMPLES (0.1 s at worst, measured up to 41 levels and 10,000 rows). Drawn
# _BATCH at a time, stopping as soon as the verdict is sure to be "not drifted".
_RESAMPLES = 9_999
_HITS = 10
_MOST_RESAMPLES = 99_999
_BATCH = 2_000

# How a chi-square p-value came where the counts are too few for the test's approximation.
_HOW = {
    "fisher_exact": "; counts too few for chi-square's approximation: Fisher's exact test",
    "resampled": "; counts too few for chi-square's approximation: random tables of its totals",
}
_NAMES = {
    "ks": "Kolmogorov-Smirnov",
    "chi_square": "chi-square",
    "psi": "PSI",
    "jensen_shannon": "Jensen-Shannon distance",
}


def check_drift(
    reference: dict[str, Any], schema: FeatureSchema, matrix: np.ndarray, predicted: np.ndarray
) -> dict[str, Any]:
    """The window of served rows `matrix` (float64 [rows, features], NaN where missing) and the
    label indices the model answered, `predicted`, against `reference` (reference_profile's).
    Plain JSON values: no numpy types, None where a figure is not there."""
    specs = feature_specs(schema)
    matrix = check_matrix(specs, matrix)
    profiles = _profiles(reference, specs)
    pred_ref = reference["prediction"]
    if not schema.regression and len(pred_ref["labels"]) != len(schema.labels):
        raise ValueError("the reference's labels are not the schema's")
    alpha = ALPHA / sum(2 + s.unseen for s in specs)  # Bonferroni over every p-value check
    rows = len(matrix)
    features = {
        spec.name: _feature(profiles[spec.name], int(reference["rows"]), matrix[:, j], alpha)
        for j, spec in enumerate(specs)
    }
    # The predictions are one check of their own: the model's answers, not its input; a
    # regression's numbers as a numeric feature's values are checked.
    if schema.regression:
        values = present(np.asarray(predicted, dtype=np.float64).reshape(-1))
        prediction = {"kind": "numeric", **_finish(_numeric(pred_ref, values, ALPHA), [])}
    else:
        codes = label_codes(predicted, len(pred_ref["labels"]))
        counts = np.bincount(codes, minlength=len(pred_ref["labels"]))
        prediction = _categorical(pred_ref["shares"], int(pred_ref["rows"]), counts, ALPHA)
        prediction = {"kind": "categorical", **_finish(prediction, [])}
    return {
        "rows": rows,
        "alpha": alpha,
        "drifted": [name for name, f in features.items() if f["drifted"]],
        "prediction_drifted": prediction["drifted"],
        "features": features,
        "prediction": prediction,
    }


def _profiles(reference: dict[str, Any], specs: list[Spec]) -> dict[str, dict[str, Any]]:
    if reference.get("format") != FORMAT:
        raise ValueError(f"reference format {reference.get('format')!r}; this reads {FORMAT}")
    profiles = reference["features"]
    absent = [s.name for s in specs if s.name not in profiles]
    other = [s.name for s in specs if s.name in profiles and profiles[s.name]["kind"] != s.kind]
    if absent or other:
        raise ValueError(
            f"the reference profile is not the schema's (absent: {absent}, another kind: {other})"
        )
    return profiles


def _feature(
    profile: dict[str, Any], ref_rows: int, column: np.ndarray, alpha: float
) -> dict[str, Any]:
    values = present(column)
    rows = len(column)
    if profile["kind"] == "numeric":
        out = _numeric(profile, values, alpha)
    else:
        counts = category_counts(values, len(profile["shares"]))
        out = _categorical(profile["shares"], int(profile["count"]), counts, alpha)
    missing = _rise(profile["missing"], ref_rows, rows - len(values), rows, MISSING_MARGIN, alpha)
    out["missing"] = missing
    rises = [("missing values", missing)]
    if "unseen" in profile:
        unseen = _rise(
            profile["unseen"],
            int(profile["count"]),
            int(counts[-1]),
            len(values),
            UNSEEN_MARGIN,
            alpha,
        )
        out["unseen"] = unseen
        rises.append(("categories training never saw", unseen))
    return {"kind": profile["kind"], **_finish(out, rises)}


def _finish(out: dict[str, Any], rises: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The verdict of a feature's distribution and its rises, with the reason in words."""
    reasons = [out["reason"]] if out["drifted"] else []
    reasons += [
        f"the share of {what} rose from {rise['reference']:.1%} to {rise['current']:.1%} "
        f"(by more than {100 * rise['margin']:g} points; Fisher's exact test p = {_g(rise['p_value'])})"
        for what, rise in rises
        if rise["drifted"]
    ]
    drifted = bool(reasons)
    status = "drifted" if drifted else "too few rows" if out["test"] is None else "stable"
    return {
        **out,
        "status": status,
        "drifted": drifted,
        "reason": "; ".join(reasons) or out["reason"],
    }


def _too_few(current: int, reference: int) -> str | None:
    if current < MIN_ROWS:
        return f"too few rows: {current} with a value in the window, {MIN_ROWS} needed"
    if reference < MIN_ROWS:
        return f"too few rows: {reference} with a value in training, {MIN_ROWS} needed"
    return None


def _untested(reason: str, rows: int) -> dict[str, Any]:
    return {
        "test": None,
        "statistic": None,
        "p_value": None,
        "threshold": None,
        "alpha": None,
        "drifted": False,
        "rows": rows,
        "reason": reason,
        "statistics": {},
    }


def _numeric(profile: dict[str, Any], values: np.ndarray, alpha: float) -> dict[str, Any]:
    count = int(profile["count"])
    few = _too_few(len(values), count)
    if few:
        return _untested(few, len(values))
    counts = bin_counts(values, profile["edges"])
    # The reference's sample was rounded to a few significant digits: the window's values are
    # rounded the same way, and both through one function, or a feature of a few exact values
    # (0.0506801187 in the window, 0.05068 in the sample) would differ at every step.
    ks = ks_2samp(significant(values), significant(np.asarray(profile["sample"])))
    statistics = {
        "psi": _psi(counts / len(values), profile["shares"]),
        "jensen_shannon": _js(counts / len(values), profile["shares"]),
        "ks": {"statistic": _plain(ks.statistic), "p_value": _plain(ks.pvalue)},
        # On the PSI's bins, against training's counts in them (not the sample's): the check
        # that a distance past its line is not chance, with the power of every training row.
        "chi_square": _chi_square(np.rint(np.asarray(profile["shares"]) * count), counts, alpha),
    }
    if min(len(values), count) < DISTANCE_ROWS:
        return _verdict("ks", statistics["ks"], alpha, len(values), statistics)
    return _verdict("psi", statistics["chi_square"], alpha, len(values), statistics)


def _categorical(
    ref_shares: list[float], ref_count: int, counts: np.ndarray, alpha: float
) -> dict[str, Any]:
    n = int(counts.sum())
    few = _too_few(n, ref_count)
    if few:
        return _untested(few, n)
    statistics = {
        "psi": _psi(counts / n, ref_shares),
        "jensen_shannon": _js(counts / n, ref_shares),
        "chi_square": _chi_square(np.rint(np.asarray(ref_shares) * ref_count), counts, alpha),
    }
    test = "chi_square" if min(n, ref_count) < DISTANCE_ROWS else "jensen_shannon"
    return _verdict(test, statistics["chi_square"], alpha, n, statistics)


def _verdict(
    test: str, tested: dict[str, Any], alpha: float, rows: int, statistics: dict[str, Any]
) -> dict[str, Any]:
    """The decision of `test`: a p-value test's p-value below `alpha`; or a distance past its
    line while the p-value of `tested` (chi-square on the same bins) is below `alpha` as well,
    because near DISTANCE_ROWS a category of many levels passes the line by chance."""
    name, p_value = _NAMES[test], tested["p_value"]
    chance = p_value is None or p_value >= alpha
    if test in ("psi", "jensen_shannon"):
        statistic = statistics[test]
        threshold = PSI_THRESHOLD if test == "psi" else JS_THRESHOLD
        drifted = statistic > threshold and not chance
        how = f"{name} {statistic:.3f} {'>' if statistic > threshold else '<='} {threshold}"
        if statistic > threshold:
            how += f", {'within' if chance else 'beyond'} chance (chi-square p = {_g(p_value)})"
        reason = (
            f"{how} on {rows:,} rows ({DISTANCE_ROWS:,} or more on both sides: a distance decides)"
        )
    else:
        statistic, threshold, drifted = tested["statistic"], alpha, not chance
        exact = _HOW.get(tested.get("method", ""), "")
        reason = (
            f"{name} p = {_g(p_value)} {'>=' if chance else '<'} {_g(alpha)} on {rows:,} rows "
            f"(fewer than {DISTANCE_ROWS:,} on a side: a p-value decides{exact})"
        )
    return {
        "test": test,
        "statistic": statistic,
        "p_value": p_value,
        "threshold": threshold,
        "alpha": alpha,
        "drifted": drifted,
        "rows": rows,
        "reason": reason,
        "statistics": statistics,
    }


def _rise(
    ref_share: float, ref_rows: int, hits: int, rows: int, margin: float, alpha: float
) -> dict[str, Any]:
    """Has a share (of missing values, of unseen categories) risen: by more than `margin`, and
    by more than chance allows (Fisher's exact test, one-sided, against training's counts)?"""
    current = hits / rows if rows else 0.0
    out = {
        "reference": float(ref_share),
        "current": current,
        "margin": margin,
        "p_value": None,
        "drifted": False,
    }
    if rows < MIN_ROWS or ref_rows < MIN_ROWS:
        return out
    ref_hits = round(ref_share * ref_rows)
    table = [[hits, rows - hits], [ref_hits, ref_rows - ref_hits]]
    p_value = _plain(fisher_exact(table, alternative="greater").pvalue)
    out["p_value"] = p_value
    out["drifted"] = bool(current - ref_share > margin and p_value is not None and p_value < alpha)
    return out


def _chi_square(reference: np.ndarray, current: np.ndarray, alpha: float) -> dict[str, Any]:
    """The chi-square test that training's counts and the window's come from one distribution.
    Categories too rare for the test's approximation (expected fewer than 5 in a row: rare
    levels, "other") are pooled into one, rarest first, until the pool is not too rare. When
    that leaves a single category (a training side of 30 rows, 10 in each of three, against a
    window of 600 all in the third), pooling would hide the very difference: the p-value is
    then exact, not approximated (`_exact`). `method` says which."""
    table = np.vstack([reference, current]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:  # one category on both sides: nothing differs
        return {"statistic": 0.0, "p_value": 1.0, "method": "asymptotic"}
    totals = table.sum(axis=0)
    need = _MIN_EXPECTED * table.sum() / table.sum(axis=1).min()
    order = np.argsort(totals, kind="stable")
    rare = int(np.searchsorted(totals[order], need))  # columns with a total below `need`
    if 0 < rare < len(order) and totals[order[:rare]].sum() < need:
        rare += 1  # the pool with the next rarest category, which is not too rare by itself
    pooled = table
    if rare > 1:
        pool = table[:, order[:rare]].sum(axis=1, keepdims=True)
        pooled = np.hstack([table[:, order[rare:]], pool])
    if pooled.shape[1] < 2 or _expected(pooled).min() < _MIN_EXPECTED * (1 - 1e-9):
        return _exact(table, alpha)
    result = chi2_contingency(pooled)
    return {
        "statistic": _plain(result.statistic),
        "p_value": _plain(result.pvalue),
        "method": "asymptotic",
    }


def _expected(table: np.ndarray) -> np.ndarray:
    return np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()


def _exact(table: np.ndarray, alpha: float) -> dict[str, Any]:
    """The chi-square statistic of the 2 x k `table` (every column with a count), its p-value
    valid for counts of any size: Fisher's exact test for two columns; else the share of random
    tables of the same row and column totals (the null hypothesis: both rows are draws from one
    distribution; R's chisq.test(simulate.p.value = TRUE)) whose statistic is at least the
    table's, counting the table itself. Seeded: the same table gets the same p-value."""
    counts = np.rint(table).astype(np.int64)
    counts = counts[:, np.argsort(-counts.sum(axis=0), kind="stable")]  # the largest first
    rows, columns = counts.sum(axis=1), counts.sum(axis=0)
    small = int(np.argmin(rows))  # the row drawn: the smaller one, the cheaper to draw
    draw = int(rows[small])
    expected = draw * columns / columns.sum()
    # The other row's deviation from its expected count is the drawn row's, negated.
    weight = 1 / expected + 1 / (columns - expected)

    def statistic(row: np.ndarray) -> np.ndarray:
        return (row - expected) ** 2 @ weight

    observed = float(statistic(counts[small]))
    if counts.shape[1] == 2:
        p_value = fisher_exact(counts).pvalue
        return {"statistic": observed, "p_value": _plain(p_value), "method": "fisher_exact"}
    most = min(_MOST_RESAMPLES, max(_RESAMPLES, math.ceil(_HITS / alpha)))
    # numpy's two ways to draw: item by item ("count"), or a column at a time ("marginals"),
    # the largest first, until the draw is spent: the cheaper for the columns it takes.
    spent = draw * (1 - np.cumsum(columns) / columns.sum()) < 1
    method = "count" if draw < 10 * (1 + np.argmax(spent)) else "marginals"
    rng = np.random.default_rng(0)
    at_least = observed * (1 - 1e-9)  # a tie in exact arithmetic may differ in the last bits
    hits = drawn = 0
    # Once hits + 1 >= alpha * (most + 1) the p-value cannot end under alpha: stop there (after
    # one batch at least, for a p-value to report).
    while drawn < most and (not drawn or hits + 1 < alpha * (most + 1)):
        size = min(_BATCH, most - drawn)
        tables = rng.multivariate_hypergeometric(columns, draw, size=size, method=method)
        hits += int(np.count_nonzero(statistic(tables) >= at_least))
        drawn += size
    return {"statistic": observed, "p_value": (hits + 1) / (drawn + 1), "method": "resampled"}


def _psi(current: np.ndarray, reference: list[float]) -> float:
    p = np.maximum(np.asarray(current, dtype=np.float64), _PSI_FLOOR)
    q = np.maximum(np.asarray(reference, dtype=np.float64), _PSI_FLOOR)
    return float(np.sum(rel_entr(p, q) + rel_entr(q, p)))


def _js(current: np.ndarray, reference: list[float]) -> float:
    distance = float(jensenshannon(current, np.asarray(reference), base=2))
    # Identical shares can round to a divergence a hair below zero, whose root is NaN.
    return 0.0 if np.isnan(distance) else distance


def _plain(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _g(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"
