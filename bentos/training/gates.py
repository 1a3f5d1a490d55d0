"""The hold-out gates both models pass before anything is registered.

Classification: accuracy, and macro F1 against always answering the majority class (on a table
with a rare class, accuracy alone passes a model that never predicts it); and whether the
classes are weighed because one is rare. Regression: R² against always answering the training
mean, with RMSE and MAE in the target's units."""

from __future__ import annotations

from typing import Any

import numpy as np

from bentos.errors import DataError

CLASS_WEIGHTS = ("auto", "balanced", "none")
# A class with less than this share of the rows a uniform split would give it is rare.
_RARE = 0.5


def balanced(class_weight: str, y: np.ndarray) -> bool:
    """Whether both models weigh classes inversely to their frequency: asked for, or "auto"
    and a class is rare (`_RARE` of its uniform share)."""
    if class_weight not in CLASS_WEIGHTS:
        raise DataError(f"class weight {class_weight!r}: allowed are {', '.join(CLASS_WEIGHTS)}")
    if class_weight != "auto":
        return class_weight == "balanced"
    shares = np.bincount(y) / len(y)
    return bool(shares.min() < _RARE / len(shares))


def baseline(y_true: np.ndarray, y_train: np.ndarray, labels: tuple[Any, ...]) -> dict[str, Any]:
    """The majority-class baseline: always the training rows' most frequent class."""
    majority = np.full(len(y_true), np.bincount(y_train).argmax())
    scores = evaluate(y_true, majority, labels)
    return {
        "accuracy": scores["accuracy"],
        "f1_macro": scores["f1_macro"],
        "class": str(labels[majority[0]]),
    }


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[Any, ...]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    report = classification_report(
        y_true,
        y_pred,
        labels=list(range(len(labels))),
        target_names=[str(v) for v in labels],
        output_dict=True,
        zero_division=0,
    )
    per_class = {str(name): {k: float(v) for k, v in report[str(name)].items()} for name in labels}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro")),
        "per_class": per_class,
        "n_test": len(y_true),
    }


def gate(name: str, metrics: dict[str, Any], min_accuracy: float, min_lift: float) -> list[str]:
    """Accuracy, and macro F1 against always answering the majority class: on a table with a
    rare class, accuracy alone passes a model that never predicts it."""
    failures = []
    if metrics["accuracy"] < min_accuracy:
        failures.append(
            f"{name} accuracy {metrics['accuracy']:.4f} < --min-accuracy {min_accuracy}"
        )
    base = metrics["baseline"]
    if metrics["f1_macro"] < base["f1_macro"] + min_lift:
        failures.append(
            f"{name} macro F1 {metrics['f1_macro']:.4f} does not beat always answering "
            f"{base['class']!r} (macro F1 {base['f1_macro']:.4f}) by --min-lift {min_lift}"
        )
    return failures


def evaluate_regression(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """RMSE, MAE and R² of a regression's hold-out predictions, in the target's units."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
        "n_test": len(y_true),
    }


def mean_baseline(y_true: np.ndarray, y_train: np.ndarray) -> dict[str, Any]:
    """The mean predictor: always the training rows' mean, scored on the hold-out rows."""
    scores = evaluate_regression(y_true, np.full(len(y_true), float(np.mean(y_train))))
    return {
        "rmse": scores["rmse"],
        "mae": scores["mae"],
        "r2": scores["r2"],
        "mean": float(np.mean(y_train)),
    }


def gate_regression(name: str, metrics: dict[str, Any], min_r2: float) -> list[str]:
    """R² on the hold-out rows: the share of their variance a model explains beyond what
    answering the mean does; below `min_r2` the model is not worth serving."""
    if metrics["r2"] >= min_r2:
        return []
    base = metrics["baseline"]
    return [
        f"{name} R² {metrics['r2']:.4f} < --min-r2 {min_r2} (RMSE {metrics['rmse']:.4g} against "
        f"{base['rmse']:.4g} always answering the training mean {base['mean']:.4g})"
    ]
