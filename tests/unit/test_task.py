"""The task a target makes (bentos.schema.task): inferred from real tables' targets, named by
the user, stored in the schema; a regression's target checked before anything trains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bentos.errors import DataError
from bentos.schema import FeatureSchema
from bentos.schema.task import infer_task, regression_target
from bentos.training.data import load_builtin
from tests.support.tables import PENGUINS


def test_real_targets_get_the_task_their_values_say():
    from sklearn.datasets import load_diabetes, load_digits, load_wine

    assert infer_task(load_builtin("iris").target)[0] == "classification"  # text
    diabetes = pd.Series(load_diabetes().target, name="progression")
    assert infer_task(diabetes) == ("regression", "numeric with 214 distinct values (over 20)")
    assert infer_task(pd.Series(load_digits().target))[0] == "classification"  # 10 codes
    assert infer_task(pd.Series(load_wine().target))[0] == "classification"
    penguins = PENGUINS.frame()
    assert infer_task(penguins["species"])[0] == "classification"
    # A measurement with missing cells is still a number.
    assert infer_task(penguins["body_mass_g"])[0] == "regression"


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0.5, 1.5, 0.5, 2.0], "regression"),  # fractional
        (list(range(21)) * 2, "regression"),  # a count
        ([1, 2, 3, 4, 5] * 4, "classification"),  # a rating
        ([True, False, True], "classification"),
        (["1.5", "2.5"], "classification"),  # text stays classes unless named
    ],
)
def test_inference_by_the_values(values, task):
    assert infer_task(pd.Series(values, name="y"))[0] == task


def test_a_named_task_wins_and_an_unknown_one_is_refused():
    assert infer_task(pd.Series([0.5, 1.5]), "classification") == (
        "classification",
        "named by --task",
    )
    with pytest.raises(DataError, match="task 'ranking': allowed are classification, regression"):
        infer_task(pd.Series([1.0]), "ranking")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, np.nan, 3.0], r"'wage' .* 1 row\(s\) are not \(the first is row 1: nan\)"),
        ([1.0, 2.0, np.inf], r"'wage' .* \(the first is row 2: inf\)"),
        (["1", "x", "3"], r"'wage' .* \(the first is row 1: 'x'\)"),
        ([4.0, 4.0], r"'wage' has one value \(4.0\)"),
    ],
)
def test_a_regression_target_that_is_not_a_finite_number_is_refused_by_name(values, message):
    with pytest.raises(DataError, match=message):
        regression_target(pd.Series(values, name="wage"), "t.csv")


def test_the_task_is_stored_in_the_schema_and_a_classifier_s_schema_is_unchanged():
    iris = load_builtin("iris")
    classifier = FeatureSchema.from_training(iris.features, ["a", "b"], "species")
    assert "task" not in classifier.to_dict()  # so its recorded sha256 still holds
    regressor = FeatureSchema.from_training(iris.features, [], "petal_width", task="regression")
    back = FeatureSchema.from_dict(regressor.to_dict())
    assert back.task == "regression" and back.regression and back == regressor
    with pytest.raises(ValueError, match="schema task 'ranking' is not known"):
        FeatureSchema.from_dict({**regressor.to_dict(), "task": "ranking"})


def test_a_regression_challenger_wins_on_a_lower_error_and_loses_on_a_higher_one():
    from bentos.training.evaluate import decide

    champion = {"rmse": 50.0, "mae": 40.0, "r2": 0.40, "rows": 10}
    better = {"rmse": 48.0, "mae": 41.0, "r2": 0.45, "rows": 10}
    assert decide(better, champion, "rmse", 1.0) == (True, "rmse 48 <= champion's 50 - 1")
    assert decide(better, champion, "rmse", 3.0)[0] is False  # not better by the margin
    assert decide(better, champion, "mae", 0.0) == (False, "mae 41 > champion's 40 - 0")
    assert decide(better, champion, "r2", 0.01)[0] is True  # higher is better
    with pytest.raises(DataError, match="metric 'f1_macro' does not fit these models"):
        decide(better, champion, "f1_macro", 0.0)
