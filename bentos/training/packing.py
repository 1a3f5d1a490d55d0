"""The forest's served form: a fitted scikit-learn forest packed into the layout bentos.forest
walks (see its docstring), and the check that it predicts what scikit-learn predicts."""

from __future__ import annotations

from typing import Any

import numpy as np

from bentos.forest import PackedForest, PackError


def pack(forest: Any) -> PackedForest:
    """Pack a fitted RandomForestClassifier or RandomForestRegressor (any forest of sklearn
    trees with one output). A classifier's leaf holds its class shares; a regressor's, its value
    and the value's square, so that the walk's average gives each row the forest's prediction
    and the mean square of its trees' predictions, hence their spread
    (PackedForest.predict_regression)."""
    n_features = int(forest.n_features_in_)
    bits = max(1, (n_features - 1).bit_length())
    if bits > 24:
        raise PackError(f"{n_features} features: at most {1 << 24} can be packed")
    nodes, roots, leaf_rows, start = [], [], [], 0
    for estimator in forest.estimators_:
        tree = estimator.tree_
        if tree.n_outputs != 1:
            raise PackError(f"a tree has {tree.n_outputs} outputs; only one can be packed")
        order = _preorder(tree.children_left, tree.children_right)
        packed, leaves = _pack_tree(tree, order, bits, hasattr(forest, "classes_"))
        nodes.append(packed)
        leaf_rows.append(leaves)
        roots.append(start)
        start += len(order)
    # Leaf distributions repeat (a pure leaf is one of n_classes rows): store each once.
    distinct, inverse = np.unique(np.concatenate(leaf_rows), axis=0, return_inverse=True)
    flat = np.concatenate(nodes)
    is_leaf = flat[:, 0] < 0
    flat[is_leaf, 0] = ~inverse.reshape(-1).astype(np.int32)
    return PackedForest(
        np.ascontiguousarray(flat.reshape(-1)),
        np.asarray(roots, dtype=np.int64),
        np.ascontiguousarray(distinct, dtype=np.float64),
        bits,
        n_features,
    )


def _preorder(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Node ids in preorder, left subtree first; scikit-learn's depth-first trees already are."""
    splits = np.flatnonzero(left != -1)
    if (left[splits] == splits + 1).all():
        return np.arange(len(left))
    order, stack = [], [0]
    while stack:
        i = stack.pop()
        order.append(i)
        if left[i] != -1:
            stack += [int(right[i]), int(left[i])]
    return np.asarray(order)


def _pack_tree(
    tree: Any, order: np.ndarray, bits: int, classes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One tree's [nodes, 2] int32 pairs (leaves marked -1 for now) and its leaves' rows:
    class shares, or a regression's (value, value squared)."""
    n = len(order)
    new = np.empty(n, dtype=np.int64)
    new[order] = np.arange(n)
    left = tree.children_left[order]
    right = tree.children_right[order]
    split = left != -1
    offset = np.where(split, new[np.where(split, right, 0)] - np.arange(n), 0)
    if offset.max(initial=0) >= 1 << (30 - bits):
        raise PackError(f"a tree of {n} nodes is too large to pack with {bits} feature bits")
    threshold = tree.threshold[order]
    t32 = threshold.astype(np.float32)
    # Round down: for a float32 x, x <= t32 exactly when x <= the float64 threshold.
    over = t32.astype(np.float64) > threshold
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    out = np.zeros((n, 2), dtype=np.int32)
    # Where scikit-learn sends a missing value (>= 1.4 learns it per split; a feature without
    # missing values in training sends it to the child with more samples).
    go_left = getattr(tree, "missing_go_to_left", np.ones(len(left), dtype=np.uint8))[order]
    missing_right = (split & (go_left == 0)).astype(np.int64)
    out[:, 0] = np.where(
        split, (offset << (bits + 1)) | (missing_right << bits) | tree.feature[order], -1
    )
    out[:, 1] = np.where(split, t32, np.float32(0)).view(np.int32)
    value = tree.value[order][~split, 0, :]
    if not classes:
        return out, np.column_stack([value[:, 0], value[:, 0] ** 2])
    return out, value / value.sum(axis=1, keepdims=True)


def forest_parity(want: np.ndarray, served: Any, x: np.ndarray) -> dict[str, float | bool]:
    """A served form of the forest (`predict_proba`) against scikit-learn's probabilities
    `want` on the hold-out rows `x`."""
    got = served.predict_proba(x)
    return {
        "labels_identical": bool((want.argmax(1) == got.argmax(1)).all()),
        "max_abs_diff": float(np.abs(want - got).max()),
    }


def regression_parity(want: np.ndarray, got: np.ndarray, scale: float) -> dict[str, float]:
    """The packed forest's predictions `got` against scikit-learn's `want`, in the target's
    units and as a share of `scale` (the target's standard deviation in training)."""
    diff = float(np.abs(np.asarray(want, np.float64) - np.asarray(got, np.float64)).max())
    return {"max_abs_diff": diff, "max_diff_share": diff / scale if scale > 0 else diff}
