"""Helpers the tests share (fixtures are in tests/conftest.py)."""

from __future__ import annotations

# Small but real: enough trees and epochs to pass the default gates on iris.
FAST = {"n_estimators": 30, "epochs": 60}

# Small limits, so the tests can cross them cheaply (and every client in the suite sees its
# keep-alive connections closed every few responses).
SERVER_ENV = {
    "BENTOS_MAX_ROWS": "50",
    "BENTOS_MAX_BODY_BYTES": "20000",
    "BENTOS_KEEPALIVE_REQUESTS": "5",
}
