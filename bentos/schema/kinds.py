"""Each column of a user's table gets a kind, inferred from its values at training and
overridable by name: what a column is decides how every door reads its values (JSON rows, V2
tensors, gRPC, table cells, the edge export), so the kinds are stored in the schema with both
models.

- numeric: a number per row; missing cells are allowed (the forest routes them per split).
- boolean: two values, true/false (or yes/no, t/f, y/n, 1/0 as text) read as 1 and 0.
- categorical: text; its levels are the training values seen at least `min_count` times, and
  every other value (rare in training, or never seen) is one more level, "other".
- datetime: timestamp types and ISO-8601 text; numeric parts (year, month, ...) are features.
- identifier: not a feature (text unique per row, consecutive integers one per row, or named);
  the batch job can copy it beside each prediction so that results join back to the input.
- ignored: named by the user; not a feature.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bentos.errors import DataError

KINDS = ("numeric", "boolean", "categorical", "datetime", "identifier", "ignored")
DATE_PARTS = ("year", "month", "day", "dayofweek", "hour", "minute")
# Text read as a boolean, lower-cased: the pairs a table writes for true and false.
TRUE_WORDS = frozenset({"true", "yes", "t", "y", "1"})
FALSE_WORDS = frozenset({"false", "no", "f", "n", "0"})
_PAIRS = ({"true", "false"}, {"yes", "no"}, {"t", "f"}, {"y", "n"})
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)
# Text with at least this share of distinct values among its rows names rows, not groups.
_NEARLY_UNIQUE = 0.95
# Text with at least this share of numbers is a numeric column with stray text in it.
_MOSTLY_NUMBERS = 0.9


@dataclass(frozen=True)
class Column:
    """One column of the training table: its kind, why, and what training learnt of it."""

    name: str
    kind: str
    why: str
    missing: float = 0.0  # share of training rows without a value
    distinct: int = 0  # distinct values among the rows that have one
    levels: tuple[str, ...] = ()  # categorical: most frequent first; "other" is len(levels)
    parts: tuple[str, ...] = ()  # datetime: the parts that vary in the training rows

    @property
    def is_feature(self) -> bool:
        return self.kind not in ("identifier", "ignored")

    @property
    def features(self) -> list[str]:
        """The model's features this column makes, in order."""
        if not self.is_feature:
            return []
        if self.kind == "datetime":
            return [f"{self.name}.{part}" for part in self.parts]
        return [self.name]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind, "why": self.why}
        data.update(missing=self.missing, distinct=self.distinct)
        if self.levels:
            data["levels"] = list(self.levels)
        if self.parts:
            data["parts"] = list(self.parts)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Column:
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            why=str(data.get("why", "")),
            missing=float(data.get("missing", 0.0)),
            distinct=int(data.get("distinct", 0)),
            levels=tuple(str(v) for v in data.get("levels", ())),
            parts=tuple(str(v) for v in data.get("parts", ())),
        )


@dataclass(frozen=True)
class Overrides:
    """Kinds the user names (`--categorical`, `--numeric`, `--datetime`, `--identifier`,
    `--ignore`), and the limits categorical columns are held to."""

    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    datetime: tuple[str, ...] = ()
    identifier: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    max_levels: int = 1000  # more distinct values than this is refused (ignore it, or group it)
    min_count: int = 5  # a level seen fewer times in training is "other"
    named: dict[str, str] = field(default_factory=dict, init=False, compare=False)

    def __post_init__(self) -> None:
        for kind, names in (
            ("categorical", self.categorical),
            ("numeric", self.numeric),
            ("datetime", self.datetime),
            ("identifier", self.identifier),
            ("ignored", self.ignore),
        ):
            for name in names:
                if name in self.named and self.named[name] != kind:
                    raise DataError(
                        f"column {name!r} is named both {self.named[name]} and {kind}; "
                        "name each column once"
                    )
                self.named[name] = kind


def infer(frame: pd.DataFrame, target: str, overrides: Overrides | None = None) -> list[Column]:
    """The kind of every column but the target, in the table's order; DataError names a column
    that cannot be used as its kind says."""
    overrides = overrides or Overrides()
    unknown = sorted(set(overrides.named) - {str(c) for c in frame.columns})
    if unknown:
        raise DataError(
            f"column(s) {', '.join(map(repr, unknown))} named in the flags are not in the table; "
            f"its columns are {', '.join(map(str, frame.columns))}"
        )
    if target in overrides.named:
        raise DataError(f"column {target!r} is the target; it cannot be named a feature kind")
    columns = [
        _infer_one(str(name), frame[name], overrides)
        for name in frame.columns
        if str(name) != target
    ]
    if not any(c.is_feature for c in columns):
        raise DataError(
            f"no feature columns besides the target {target!r}: "
            + ", ".join(f"{c.name} is {c.kind}" for c in columns)
        )
    return columns


def _infer_one(name: str, values: pd.Series, overrides: Overrides) -> Column:
    present = values.dropna()
    missing = float(1 - len(present) / len(values)) if len(values) else 0.0
    distinct = int(present.nunique())
    base = {"name": name, "missing": round(missing, 4), "distinct": distinct}
    named = overrides.named.get(name)
    if named in ("identifier", "ignored"):
        return Column(
            kind=named, why="named by --" + ("ignore" if named == "ignored" else named), **base
        )
    if len(present) == 0:
        raise DataError(
            f"feature column {name!r} has no values; leave it out of the table or --ignore it"
        )
    if named == "numeric":
        _as_numbers(name, present)
        return Column(kind="numeric", why="named by --numeric", **base)
    if named == "datetime":
        return _datetime(name, present, "named by --datetime", base)
    if named == "categorical":
        return _categorical(name, present, "named by --categorical", overrides, base)
    # Inferred, most specific first.
    if pd.api.types.is_bool_dtype(values) or _bool_words(present) is not None:
        return Column(kind="boolean", why=_bool_why(values, present), **base)
    if pd.api.types.is_datetime64_any_dtype(values):
        return _datetime(name, present, f"timestamp type ({values.dtype})", base)
    if pd.api.types.is_numeric_dtype(values):
        if _row_numbers(present, len(values)):
            return Column(
                kind="identifier", why="consecutive integers, one per row: a row number", **base
            )
        return Column(kind="numeric", why=f"numbers ({values.dtype})", **base)
    text = present.astype(str)
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all():
        return Column(kind="numeric", why="text that is all numbers", **base)
    if numbers.notna().mean() >= _MOSTLY_NUMBERS:
        # Numbers with a few stray words ("n/a", "unknown", a typo): a column the user meant as
        # numbers. Guessing categories would make every measurement a level of its own.
        bad = text[numbers.isna()]
        raise DataError(
            f"column {name!r} holds numbers, but {len(bad)} of its {len(text)} values are text "
            f"(first {bad.iloc[0]!r}, row {bad.index[0]}); leave those cells empty for a missing "
            f"value, or name it --categorical {name}"
        )
    if text.map(lambda v: bool(_ISO_DATE.match(v.strip()))).all():
        return _datetime(name, present, "ISO-8601 dates", base)
    if distinct >= _NEARLY_UNIQUE * len(present) and len(present) > overrides.min_count:
        return Column(
            kind="identifier",
            why=f"text, {distinct} distinct values in {len(present)} rows: names rows, not groups",
            **base,
        )
    return _categorical(name, present, "text", overrides, base)


def _bool_words(present: pd.Series) -> set[str] | None:
    if not (pd.api.types.is_object_dtype(present) or pd.api.types.is_string_dtype(present)):
        return None
    if not present.map(lambda v: isinstance(v, str)).all():
        return None
    words = {v.strip().lower() for v in present.unique()}
    return words if any(words == pair for pair in _PAIRS) else None


def _bool_why(values: pd.Series, present: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "true/false values"
    return "two values: " + "/".join(sorted(map(str, present.unique())))


def _row_numbers(present: pd.Series, n_rows: int) -> bool:
    """Integers 1..n or 0..n-1 (any order), one per row: a row number, not a measurement."""
    if len(present) != n_rows or n_rows < 3 or not pd.api.types.is_integer_dtype(present):
        return False
    lo, hi = int(present.min()), int(present.max())
    return lo in (0, 1) and hi - lo == n_rows - 1 and present.nunique() == n_rows


def _as_numbers(name: str, present: pd.Series) -> None:
    numbers = pd.to_numeric(present.astype(str), errors="coerce")
    if numbers.isna().any():
        bad = present[numbers.isna()].iloc[0]
        raise DataError(f"column {name!r} is named numeric but has text {bad!r}")


def _datetime(name: str, present: pd.Series, why: str, base: dict) -> Column:
    stamps = parse_dates(present)
    if stamps.isna().any():
        bad = present[stamps.isna()].iloc[0]
        raise DataError(
            f"datetime column {name!r}: {bad!r} is not a date (ISO-8601, such as 2024-05-31 or "
            "2024-05-31T13:45:00, is expected)"
        )
    parts = tuple(p for p in DATE_PARTS if date_part(stamps, p).nunique() > 1)
    return Column(kind="datetime", why=why, parts=parts or ("year",), **base)


def parse_dates(values: pd.Series) -> pd.Series:
    """Timestamps from a timestamp column or ISO-8601 text (NaT where a value is not one), in
    UTC when they carry a zone, so that every door reads the same parts."""
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values
    else:
        stamps = pd.to_datetime(values.astype(str), format="ISO8601", errors="coerce", utc=True)
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps


def date_part(stamps: pd.Series, part: str) -> pd.Series:
    return getattr(stamps.dt, part).astype("float64")


def _categorical(
    name: str, present: pd.Series, why: str, overrides: Overrides, base: dict
) -> Column:
    text = present.astype(str)
    counts = text.value_counts(sort=True)
    if len(counts) > overrides.max_levels:
        raise DataError(
            f"categorical column {name!r} has {len(counts)} distinct values, more than the "
            f"{overrides.max_levels} allowed; --ignore {name} if it names rows rather than groups"
        )
    # Most frequent first, ties by value: the same table gives the same levels.
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    levels = tuple(v for v, n in ordered if n >= overrides.min_count)
    return Column(kind="categorical", why=why, levels=levels, **base)


def table(columns: Sequence[Column]) -> str:
    """What training prints: a line per column, its kind, missing share, distinct values, why."""
    rows = [("column", "kind", "missing", "distinct", "why")]
    rows += [
        (c.name, c.kind, f"{c.missing:.1%}", str(c.distinct), c.why + _levels_note(c))
        for c in columns
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(r[i].ljust(widths[i]) if i != 3 else r[i].rjust(widths[i]) for i in range(4))
        + "  "
        + r[4]
        for r in rows
    )


def _levels_note(c: Column) -> str:
    if c.kind != "categorical":
        return ""
    rare = c.distinct - len(c.levels)
    rare_text = f", {rare} rare {'one' if rare == 1 else 'ones'} as 'other'" if rare > 0 else ""
    return f"; {len(c.levels)} levels{rare_text}"


def features(columns: Iterable[Column]) -> list[str]:
    return [name for c in columns for name in c.features]
