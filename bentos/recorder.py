"""What the doors know of the prediction log: somewhere sampled predictions go. The monitoring
room (bentos.monitoring.predlog) makes one from the settings; the entry points hand it to the
doors (the HTTP and gRPC core, the batch job), which never import that room."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Recorder(Protocol):
    sample: float  # the share of requests (a batch job: of rows) logged

    def sampled(self) -> bool:
        """Whether to log the request at hand: whole requests are logged, or none of it."""
        ...

    def record(
        self,
        request_id: str | Sequence[str],
        model: str,
        rows: Sequence[Any],
        predictions: Sequence[Any],
        probabilities: np.ndarray,
    ) -> None:
        """Queue rows (each a dict of fields as received, after validation) with the model's
        answers; one request id for them all, or one per row (a batch job's file and row)."""
        ...

    def close(self) -> None:
        """Write what is held, and stop: a stopping process calls it."""
        ...
