"""The column-kind flags of `bentos train` and the retrain job: one definition for both, so a
kind named on the command line or in the job's settings means the same thing."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from bentos.schema.kinds import Overrides

# flag -> what it names; the retrain job's settings take the same as comma-separated lists.
KIND_FLAGS = {
    "categorical": "text or codes to read as categories",
    "numeric": "columns to read as numbers",
    "datetime": "dates or timestamps (ISO-8601 text)",
    "identifier": "row keys: not features; the batch job copies them beside predictions",
    "ignore": "columns to leave out",
}


def add_kind_flags(parser: argparse.ArgumentParser, defaults: Mapping[str, str] | None = None):
    """`--categorical a,b` and the others; repeatable. `defaults`: comma-separated names per flag."""
    group = parser.add_argument_group(
        "column kinds (inferred from the table unless named here; comma-separated names)"
    )
    for flag, text in KIND_FLAGS.items():
        group.add_argument(
            f"--{flag}",
            action="append",
            default=[(defaults or {}).get(flag) or ""],
            metavar="COLUMNS",
            help=text,
        )
    group.add_argument(
        "--max-levels",
        type=int,
        default=Overrides.max_levels,
        metavar="N",
        help=f"most distinct values a categorical column may have (default: {Overrides.max_levels})",
    )
    group.add_argument(
        "--min-level-count",
        type=int,
        default=Overrides.min_count,
        metavar="N",
        help="a category seen fewer times in training joins 'other' "
        f"(default: {Overrides.min_count})",
    )


def overrides(args: argparse.Namespace) -> Overrides:
    def names(flag: str) -> tuple[str, ...]:
        given = getattr(args, flag) or []
        return tuple(n.strip() for part in given for n in part.split(",") if n.strip())

    return Overrides(
        categorical=names("categorical"),
        numeric=names("numeric"),
        datetime=names("datetime"),
        identifier=names("identifier"),
        ignore=names("ignore"),
        max_levels=args.max_levels,
        min_count=args.min_level_count,
    )


def add_balance_flags(
    parser: argparse.ArgumentParser, class_weight: str = "auto", min_lift: float = 0.05
) -> None:
    """`--class-weight` and `--min-lift`: rare classes, and the gate against the majority class."""
    parser.add_argument(
        "--class-weight",
        choices=("auto", "balanced", "none"),
        default=class_weight,
        help="weigh classes inversely to their frequency: auto (when a class is rare), "
        f"balanced or none (default: {class_weight})",
    )
    parser.add_argument(
        "--min-lift",
        type=float,
        default=min_lift,
        metavar="X",
        help="how much each model's hold-out macro F1 must exceed always answering the majority "
        f"class (default: {min_lift})",
    )


def add_task_flags(
    parser: argparse.ArgumentParser, task: str | None = None, min_r2: float = 0.1
) -> None:
    """`--task` and `--min-r2`: what the target makes, and a regression's gate."""
    parser.add_argument(
        "--task",
        choices=("classification", "regression"),
        default=task,
        help="what to predict: classes or a number (default: inferred from the target; a "
        "number with fractions or over 20 distinct values is a regression)",
    )
    parser.add_argument(
        "--min-r2",
        type=float,
        default=min_r2,
        metavar="X",
        help="regression: the R² on the hold-out rows each model must reach, the share of "
        f"their variance explained beyond always answering the mean (default: {min_r2})",
    )
