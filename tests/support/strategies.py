"""Hypothesis strategies for generated input: any JSON value, and rows of iris features."""

from __future__ import annotations

from hypothesis import strategies as st

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = dict(zip(FEATURES, (5.1, 3.5, 1.4, 0.2), strict=True))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
rows = st.fixed_dictionaries(
    {}, optional={n: json_values | st.floats() for n in FEATURES} | {"extra": json_values}
)
