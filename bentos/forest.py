"""The forest packed into 8-byte nodes, and the compiled walk over it (the online default).

Why a walk of our own (ONNX Runtime was the backend before it; BENCHMARKS.md has both): a
general tree-ensemble runtime walks each row through every tree in turn, over node structures
far larger than a core's L2 cache, taking a branch at every node that the CPU cannot predict,
so rows that differ from one request to the next miss the cache on most nodes. Here a node is
8 bytes, and the walk advances eight independent paths at once without branching on the
comparison (eight rows through one tree, or one row through eight trees), so the CPU overlaps
their memory loads. The walk is machine code, compiled by numba once per machine and loaded
when this module is imported, without numba (bentos.native).

Layout: `nodes` holds an int32 pair per node, each tree in preorder (a split's left child
follows it) and the trees one after another:
    split: (offset of the right child << (feature_bits + 1) | missing goes right << feature_bits
            | feature, the threshold's float32 bits)
    leaf:  (~row of `values`, 0)
A row goes left when x <= threshold, as in scikit-learn. The threshold is the largest float32
not above scikit-learn's float64 one, so a float32 row takes exactly scikit-learn's path, and
the probabilities equal scikit-learn's up to float32 rounding of the result. A missing value
(NaN) goes the way scikit-learn learnt for that split (`tree_.missing_go_to_left`): the bit
beside the feature. Files packed before that bit existed (two meta values) are read as forests
whose missing values go left, which is all they ever saw: the schema refused NaN then.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bentos import native

_LANES = 8  # paths advanced together; fewer were slower, more no faster (BENCHMARKS.md)
# From this many rows, lanes refill and rows go through a tree in blocks of _BLOCK: faster from
# 64 rows, no faster below (docs/batch.md, "Figures").
_REFILL_FROM = 64
_BLOCK = 1024
_LAYOUT = 2  # the missing-value bit (the module's docstring); 1 had none


class PackError(ValueError):
    """The forest cannot be represented in the packed layout."""


@dataclass(frozen=True)
class PackedForest:
    nodes: np.ndarray  # int32, 2 per node (see the module's docstring)
    roots: np.ndarray  # int64: each tree's first node
    values: np.ndarray  # float64 [distinct leaf rows, classes]; a regression: (value, square)
    feature_bits: int
    n_features: int
    # What the walk reads (`_walk_layout`), kept alive here, and its addresses for the call.
    _walk_arrays: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)
    _walk_args: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nodes = _walk_layout(self.nodes, self.feature_bits, self.n_features)
        roots = np.ascontiguousarray(self.roots, dtype=np.int64)
        values = np.ascontiguousarray(self.values, dtype=np.float64)
        args = (nodes.ctypes.data, nodes.ctypes.data, len(nodes), roots.ctypes.data, len(roots))
        args += (values.ctypes.data, *values.shape, self.feature_bits)
        object.__setattr__(self, "_walk_arrays", (nodes, roots, values))
        object.__setattr__(self, "_walk_args", args)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            nodes=self.nodes,
            roots=self.roots,
            values=self.values,
            meta=np.array([self.feature_bits, self.n_features, _LAYOUT], dtype=np.int64),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, content: bytes) -> PackedForest:
        with np.load(io.BytesIO(content), allow_pickle=False) as f:
            bits, n_features, *layout = (int(v) for v in f["meta"])
            nodes = np.ascontiguousarray(f["nodes"], dtype=np.int32)
            if not layout:  # layout 1: make room for the missing-value bit, all left
                meta = nodes[0::2]
                split = meta >= 0
                if split.any() and int(meta[split].max() >> bits) >= 1 << (30 - bits):
                    raise PackError("a tree is too large to read with the missing-value bit")
                mask = (1 << bits) - 1
                meta[split] = ((meta[split] >> bits) << (bits + 1)) | (meta[split] & mask)
            elif layout != [_LAYOUT]:
                raise PackError(
                    f"packed layout {layout[0]} is not known here (this reads {_LAYOUT})"
                )
            forest = cls(
                nodes,
                np.ascontiguousarray(f["roots"], dtype=np.int64),
                np.ascontiguousarray(f["values"], dtype=np.float64),
                bits,
                n_features,
            )
        forest._check()
        return forest

    def _check(self) -> None:
        # The compiled walk trusts these indices: a corrupt file must fail here, not segfault.
        n = len(self.nodes) // 2
        meta = self.nodes[0::2]
        split = meta >= 0
        idx = np.flatnonzero(split)
        right = idx + (meta[split] >> (self.feature_bits + 1))
        ok = (
            len(self.nodes) % 2 == 0
            and len(self.roots) > 0
            and bool(((self.roots >= 0) & (self.roots < n)).all())
            and bool((idx + 1 < n).all() and (right < n).all() and (right > idx + 1).all())
            and bool(((meta[split] & ((1 << self.feature_bits) - 1)) < self.n_features).all())
            and 0 < self.n_features <= 1 << self.feature_bits  # the walk's doubled rows
            and bool((~meta[~split] < len(self.values)).all())
        )
        if not ok:
            raise PackError("the packed forest's node indices are inconsistent")

    def mean_leaves(self, x: np.ndarray) -> np.ndarray:
        """Each row's leaf rows averaged over the trees, in float64: class shares, or a
        regression's (value, value squared) (bentos.training.packing)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            # The compiled walk does not check bounds: a narrower matrix must not reach it.
            raise ValueError(f"expected rows of {self.n_features} features, got shape {x.shape}")
        n, n_out = len(x), len(x) * self.values.shape[1]
        # One buffer: the sums (zeros), then room for the doubled rows (`_walk_into`), 2 float32
        # a float64. Each array's address costs ctypes about 1.5 us; one row walks in about 5.
        buf = np.zeros(n_out + x.size)
        address = buf.ctypes.data
        _walk(*self._walk_args, x.ctypes.data, n, self.n_features, address + 8 * n_out, address)
        out = buf[:n_out].reshape(n, -1)
        out /= len(self.roots)
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        # float32, as TFLite answers: the API's numbers keep one precision.
        return self.mean_leaves(x).astype(np.float32)

    def predict_regression(self, x: np.ndarray) -> np.ndarray:
        """A regression forest's [prediction, spread of its trees' predictions] per row, from
        its (value, value squared) leaves: the spread is a difference of two large numbers,
        taken in float64 before the answer's float32."""
        leaves = self.mean_leaves(x)
        mean = leaves[:, 0]
        spread = np.sqrt(np.maximum(leaves[:, 1] - mean * mean, 0.0))
        return np.column_stack([mean, spread]).astype(np.float32)


def _walk_layout(nodes: np.ndarray, bits: int, n_features: int) -> np.ndarray:
    """The walk's copy of `nodes`: a split's missing-value bit and feature become one index
    into the walk's doubled row (`_walk_into`), the feature plus n_features when missing goes right
    (below 1 << (bits + 1): `_check`). Leaves stay as they are."""
    out = nodes.copy()
    meta = out[0::2]  # a view: written through into `out`
    split = meta >= 0
    m = meta[split]
    feature, missing_right = m & ((1 << bits) - 1), (m >> bits) & 1
    meta[split] = ((m >> (bits + 1)) << (bits + 1)) | (feature + missing_right * n_features)
    return out


def _walk_into(
    nodes, thresholds, roots, values, x, bits, xd, out, at, row, base
):  # pragma: no cover
    """Every row through every tree, eight paths advanced together: their loads are
    independent, so the CPU overlaps their cache misses. Below eight rows, one row's paths
    through eight trees; up to _REFILL_FROM rows, eight rows through one tree (its nodes stay
    in cache for all eight); both a level per pass until all eight reached a leaf. From
    _REFILL_FROM rows up, blocks of _BLOCK rows go through one tree, and a path that reached its
    leaf hands its lane to the block's next row at once, so no lane idles while the others
    finish deeper paths. Each row adds its trees' leaves in tree order whichever way: the sums
    are the same to the bit. One function for all: numba compiles each for a second or more.

    Compiled by bentos.native, which passes every array: `thresholds` is `nodes` read as
    float32, `xd` room for the doubled rows, `out` zeros, `at`, `row` and `base` a lane each.
    `nodes` is the walk's layout (`_walk_layout`): a split's feature field indexes a doubled
    row, the row with its missing values as -inf and then the row as it is, so a missing value
    needs no test of its own: `not v <= threshold` sends -inf left and NaN right, whatever the
    threshold (scikit-learn's split of missing from present values has +inf). Indices are
    unsigned, so numba skips its negative-index wrap. Both: 1.3x faster than a NaN test and
    signed indices (BENCHMARKS.md, "Batch")."""
    shift = np.uint64(bits + 1)
    mask = np.uint64((1 << (bits + 1)) - 1)
    n, n_trees, n_classes = x.shape[0], roots.shape[0], values.shape[1]
    n_features = x.shape[1]
    width = np.uint64(2 * n_features)
    for r in range(n):
        for f in range(n_features):
            v = x[r, f]
            xd[2 * n_features * r + f] = -np.inf if v != v else v
            xd[2 * n_features * r + n_features + f] = v
    one, two = np.uint64(1), np.uint64(2)
    if n < _REFILL_FROM:
        by_tree = n < _LANES
        row_step, tree_step = (0, 1) if by_tree else (1, 0)
        for r0 in range(0, n, 1 if by_tree else _LANES):
            for t0 in range(0, n_trees, _LANES if by_tree else 1):
                lanes = min(_LANES, n_trees - t0) if by_tree else min(_LANES, n - r0)
                for k in range(lanes):
                    at[k] = roots[t0 + k * tree_step]
                moving = True
                while moving:
                    moving = False
                    for k in range(lanes):
                        i = at[k]
                        meta = nodes[two * i]
                        if meta >= 0:
                            moving = True
                            m = np.uint64(meta)
                            v = xd[np.uint64(r0 + k * row_step) * width + (m & mask)]
                            # No branch for the CPU to mispredict: a select, not a jump.
                            right = not (v <= thresholds[two * i + one])
                            at[k] = i + (m >> shift) if right else i + one
                for k in range(lanes):
                    leaf = ~nodes[two * at[k]]
                    for c in range(n_classes):
                        out[r0 + k * row_step, c] += values[leaf, c]
        return
    for b0 in range(0, n, _BLOCK):
        b1 = min(n, b0 + _BLOCK)
        lanes = min(_LANES, b1 - b0)
        for t in range(n_trees):
            root = np.uint64(roots[t])
            for k in range(lanes):
                at[k] = root
                row[k] = b0 + k
                base[k] = np.uint64(b0 + k) * width
            following, active = b0 + lanes, lanes
            while active > 0:
                for k in range(lanes):
                    i = at[k]
                    meta = nodes[two * i]
                    if meta >= 0:
                        m = np.uint64(meta)
                        v = xd[base[k] + (m & mask)]
                        right = not (v <= thresholds[two * i + one])
                        at[k] = i + (m >> shift) if right else i + one
                    elif row[k] >= 0:
                        leaf = ~meta
                        r = row[k]
                        for c in range(n_classes):
                            out[r, c] += values[leaf, c]
                        if following < b1:
                            row[k], at[k] = following, root
                            base[k] = np.uint64(following) * width
                            following += 1
                        else:
                            row[k] = -1  # the block is done with this lane
                            active -= 1


# At import, so that the job's thread (jobs/batch_predict.py) and the image's build load it.
_walk = native.load(_walk_into, Path(__file__).parent / "__pycache__", _LANES)
