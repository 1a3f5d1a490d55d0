"""Rows to send: drawn from the data the served model was trained on (synthetic or iris)."""

from __future__ import annotations

import pandas as pd

from bentos.schema import FeatureSchema


def sample_rows(schema: FeatureSchema, rows: int, seed: int = 0) -> pd.DataFrame:
    from bentos.training.data import load_builtin

    name = "synthetic" if schema.names[0] == "f0" else "iris"
    base = load_builtin(name).features[schema.names]
    return base.sample(rows, random_state=seed, replace=rows > len(base)).reset_index(drop=True)
