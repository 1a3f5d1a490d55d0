"""bentos.forest and bentos.training.packing: the packed forest walks every row down
scikit-learn's own path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from bentos.forest import PackedForest, PackError
from bentos.schema.encode import encode_columns
from bentos.schema.kinds import infer
from bentos.training.packing import pack
from tests.support.tables import PENGUINS


def _forest(**params) -> tuple[RandomForestClassifier, np.ndarray]:
    x, y = make_classification(
        n_samples=600,
        n_features=params.pop("n_features", 12),
        n_informative=6,
        n_classes=params.pop("n_classes", 3),
        random_state=0,
    )
    forest = RandomForestClassifier(n_estimators=params.pop("n_estimators", 13), random_state=0)
    return forest.set_params(**params).fit(x, y), x


@pytest.fixture(scope="module")
def fitted() -> tuple[RandomForestClassifier, np.ndarray, PackedForest]:
    forest, x = _forest()
    return forest, x, PackedForest.from_bytes(pack(forest).to_bytes())


@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, 64, 600])
def test_probabilities_equal_scikit_learn_for_every_request_size(fitted, rows):
    # Under 8 rows one row goes through 8 trees at once; from 8, 8 rows through one tree.
    forest, x, packed = fitted
    got = packed.predict_proba(x[:rows])
    assert got.dtype == np.float32 and got.shape == (rows, 3)
    np.testing.assert_allclose(got, forest.predict_proba(x[:rows]), rtol=0, atol=1e-6)


def test_rows_on_a_threshold_take_scikit_learn_s_side(fitted):
    # Thresholds are float64 midpoints; rows at the float32 values around them must split as
    # scikit-learn splits them (it compares float32 rows with float64 thresholds).
    forest, _, packed = fitted
    tree = forest.estimators_[0].tree_
    splits = np.flatnonzero(tree.children_left != -1)
    t = tree.threshold[splits].astype(np.float32)
    rows = np.zeros((3 * len(splits), forest.n_features_in_), dtype=np.float32)
    for k, (f, v) in enumerate(zip(tree.feature[splits], t, strict=True)):
        for j, value in enumerate((np.nextafter(v, -np.inf), v, np.nextafter(v, np.inf))):
            rows[3 * k + j, f] = value
    np.testing.assert_allclose(packed.predict_proba(rows), forest.predict_proba(rows), atol=1e-6)


def test_trees_not_built_depth_first_are_reordered():
    # max_leaf_nodes makes scikit-learn grow trees best-first: a left child need not follow
    # its parent, and packing must renumber the nodes.
    forest, x = _forest(max_leaf_nodes=40)
    tree = forest.estimators_[0].tree_
    splits = np.flatnonzero(tree.children_left != -1)
    assert (tree.children_left[splits] != splits + 1).any()
    packed = pack(forest)
    np.testing.assert_allclose(packed.predict_proba(x), forest.predict_proba(x), atol=1e-6)


def test_two_classes_and_forty_features():
    forest, x = _forest(n_classes=2, n_features=40)
    packed = pack(forest)
    assert packed.feature_bits == 6
    np.testing.assert_allclose(packed.predict_proba(x), forest.predict_proba(x), atol=1e-6)


def test_float64_and_non_contiguous_rows_are_accepted(fitted):
    forest, x, packed = fitted
    view = np.asfortranarray(x[::3])
    np.testing.assert_allclose(packed.predict_proba(view), forest.predict_proba(view), atol=1e-6)


def test_rows_of_the_wrong_width_never_reach_the_compiled_walk(fitted):
    _, x, packed = fitted
    with pytest.raises(ValueError, match="expected rows of 12 features, got shape"):
        packed.predict_proba(x[:, :5])


def test_pure_leaves_are_stored_once(fitted):
    forest, _, packed = fitted
    leaves = sum(int((e.tree_.children_left == -1).sum()) for e in forest.estimators_)
    assert len(packed.values) < leaves / 10  # fully grown trees: nearly every leaf is pure


def test_a_file_with_an_index_out_of_range_is_refused(fitted):
    _, _, packed = fitted
    nodes = packed.nodes.copy()
    split = np.flatnonzero(nodes[0::2] >= 0)[0]
    nodes[2 * split] = (len(nodes) << (packed.feature_bits + 1)) | 0  # a right child past the end
    broken = PackedForest(nodes, packed.roots, packed.values, packed.feature_bits, 12)
    with pytest.raises(PackError, match="inconsistent"):
        PackedForest.from_bytes(broken.to_bytes())


def test_a_forest_with_several_outputs_cannot_be_packed():
    x, y = make_classification(n_samples=100, n_features=4, random_state=0)
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(x, np.c_[y, 1 - y])
    with pytest.raises(PackError, match="2 outputs"):
        pack(forest)


@pytest.mark.parametrize("rows", [1, 7, 9, 64, 344])
def test_rows_with_missing_values_take_scikit_learn_s_learnt_direction(rows):
    # A real table with missing cells (penguins), as every door encodes it: NaN where missing.
    frame = PENGUINS.frame()
    columns = infer(frame, PENGUINS.target)
    x, _, _ = encode_columns(columns, frame.__getitem__, len(frame), parse_strings=True)
    forest = RandomForestClassifier(n_estimators=25, random_state=0).fit(x, frame["species"])
    packed = PackedForest.from_bytes(pack(forest).to_bytes())
    # Every row, and each with one more feature knocked out in turn, so that every split of
    # every feature meets missing values (most features had none in training).
    knocked = np.repeat(x, x.shape[1], axis=0)
    knocked[np.arange(len(knocked)), np.tile(np.arange(x.shape[1]), len(x))] = np.nan
    for batch in (x, knocked):
        got = packed.predict_proba(batch[:rows])
        np.testing.assert_allclose(got, forest.predict_proba(batch[:rows]), rtol=0, atol=1e-6)


def test_a_forest_packed_before_the_missing_value_bit_still_predicts_the_same(fitted):
    forest, x, packed = fitted
    # The layout-1 file of the same forest: offsets right above the feature bits, two meta values.
    nodes = packed.nodes.copy()
    meta = nodes[0::2]
    split = meta >= 0
    bits = packed.feature_bits
    meta[split] = ((meta[split] >> (bits + 1)) << bits) | (meta[split] & ((1 << bits) - 1))
    buf = io.BytesIO()
    np.savez(
        buf,
        nodes=nodes,
        roots=packed.roots,
        values=packed.values,
        meta=np.array([bits, packed.n_features], dtype=np.int64),
    )
    old = PackedForest.from_bytes(buf.getvalue())
    np.testing.assert_allclose(old.predict_proba(x), forest.predict_proba(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 9, 64, 442])
def test_a_regression_forest_answers_scikit_learn_s_numbers_and_its_trees_spread(rows):
    """A real table scikit-learn ships (diabetes progression, a number), with values knocked
    out: the packed walk's prediction is scikit-learn's, and the spread is the standard
    deviation of the trees' own predictions."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    x, y = load_diabetes(return_X_y=True)
    x = x.copy()
    x[np.arange(0, len(x), 5), np.arange(0, len(x), 5) % x.shape[1]] = np.nan
    forest = RandomForestRegressor(n_estimators=25, random_state=0).fit(x, y)
    packed = PackedForest.from_bytes(pack(forest).to_bytes())
    got = packed.predict_regression(x[:rows])
    assert got.dtype == np.float32 and got.shape == (rows, 2)
    want = forest.predict(x[:rows])
    # float32 answers: a relative 1e-7 of the value.
    np.testing.assert_allclose(got[:, 0], want, rtol=2e-7, atol=0)
    trees = np.stack([t.predict(x[:rows].astype(np.float32)) for t in forest.estimators_])
    np.testing.assert_allclose(got[:, 1], trees.std(axis=0), rtol=1e-5, atol=1e-6 * y.std())
    assert (got[:, 1] > 0).any()


def test_a_split_of_missing_from_present_values_sends_missing_rows_its_way():
    """scikit-learn splits missing from present values with a threshold of +inf, missing to
    the right: no number is above it, so a missing value must not be compared as a number."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    missing = rng.random(400) < 0.3
    x[missing, 0] = np.nan
    y = missing.astype(int)  # the class is whether the first feature is missing
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    assert np.isinf(forest.estimators_[0].tree_.threshold).any()
    packed = PackedForest.from_bytes(pack(forest).to_bytes())
    np.testing.assert_allclose(packed.predict_proba(x), forest.predict_proba(x), rtol=0, atol=1e-6)
    assert (packed.predict_proba(x).argmax(1) == y).all()
