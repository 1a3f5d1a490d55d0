"""What a model predicts from its target column: a class (classification) or a number
(regression). Inferred from the training table's target, overridable (`--task`), and stored in
the schema with both models, so that every door answers in the task's terms.

A target is regression when it is numeric (not boolean) and either holds fractional values or
more than `MAX_CLASSES` distinct ones: a wage, a price, a count. Text, booleans and a few whole
numbers (ratings 1-5, digit codes) are classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bentos.errors import DataError

TASKS = ("classification", "regression")
# A numeric target with more distinct whole numbers than this is a quantity, not a set of codes.
MAX_CLASSES = 20


def infer_task(target: pd.Series, task: str | None = None) -> tuple[str, str]:
    """(the task, why): `task` when the user named one, otherwise inferred from the target's
    values (its missing cells left out)."""
    if task is not None:
        if task not in TASKS:
            raise DataError(f"task {task!r}: allowed are {', '.join(TASKS)}")
        return task, "named by --task"
    values = target.dropna()
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return "classification", f"{values.dtype} values are classes"
    numbers = values.to_numpy(dtype=np.float64)
    distinct = int(pd.unique(numbers).size)
    finite = numbers[np.isfinite(numbers)]
    if (finite != np.round(finite)).any():
        return "regression", f"numeric with fractional values ({distinct} distinct)"
    if distinct > MAX_CLASSES:
        return "regression", f"numeric with {distinct} distinct values (over {MAX_CLASSES})"
    return "classification", f"{distinct} distinct whole numbers are classes"


def regression_target(target: pd.Series, source: str) -> np.ndarray:
    """The target of a regression as float64; a DataError naming the column when a value is
    missing, not a number, or infinite: no row is dropped silently."""
    name = str(target.name)
    numbers = pd.to_numeric(target, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if bad.size:
        first = int(bad[0])
        raise DataError(
            f"{source}: target column {name!r} must be a finite number in every row for "
            f"regression; {bad.size} row(s) are not (the first is row {first}: "
            f"{_plain(target.iloc[first])!r})"
        )
    if np.ptp(numbers) == 0:
        raise DataError(
            f"{source}: target column {name!r} has one value ({float(numbers[0])!r}); "
            "there is nothing to predict"
        )
    return numbers


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, for a message."""
    return value.item() if isinstance(value, np.generic) else value
