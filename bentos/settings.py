"""Serving settings, read once at start-up from the environment (a ConfigMap in Kubernetes)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

# How the forest can run (bentos.runners.RandomForestRunner).
RF_BACKENDS = ("packed", "sklearn")


@dataclass(frozen=True)
class Settings:
    # Rows one request may carry; more is a 400 (the batch job is for large tables).
    max_rows: int = 1000
    # Bytes one request body may have; more is a 413, refused before the body is read whole.
    max_body_bytes: int = 1 << 20
    # Adaptive batching, per model and worker: rows merged into one model call, and how long a
    # request may queue behind a busy model before it is refused with 503 (see bentos.batching).
    max_batch_size: int = 256
    max_latency_ms: int = 2000
    # Model tags; the Bento pins the versions it was built with.
    rf_model: str = "rf-classifier:latest"
    tflite_model: str = "tflite-classifier:latest"
    # How the forest runs online: packed (bentos.forest, which loads no pickle) or sklearn.
    # Chosen by measurement: BENCHMARKS.md.
    rf_backend: str = "packed"
    # The garbage collector's first threshold in serving processes (Python's default: 700);
    # see bentos.runtime.tune_gc for the measurement behind it.
    gc_gen0_threshold: int = 50_000
    # Every this-many responses, a worker closes the connection it answered on, so keep-alive
    # clients spread over the workers and new pods (bentos.middleware.SpreadConnections).
    keepalive_requests: int = 100

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] = os.environ) -> Settings:
        """`BENTOS_MAX_ROWS=500` sets `max_rows`, and so on for every field."""
        values = {}
        for f in fields(cls):
            raw = environ.get(f"BENTOS_{f.name.upper()}")
            if raw is None:
                continue
            if f.type == "int":
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ValueError(
                        f"BENTOS_{f.name.upper()} must be an integer, got {raw!r}"
                    ) from None
                if values[f.name] <= 0:
                    raise ValueError(f"BENTOS_{f.name.upper()} must be positive, got {raw!r}")
            else:
                values[f.name] = raw
        settings = cls(**values)
        if settings.rf_backend not in RF_BACKENDS:
            raise ValueError(
                f"BENTOS_RF_BACKEND must be one of {', '.join(RF_BACKENDS)}, "
                f"got {settings.rf_backend!r}"
            )
        return settings
