"""The errors a command or a job ends with, and the one table of exit codes they map to.

Every command line (`bentos`, `python -m jobs.batch_predict`, `python -m jobs.retrain`, the gRPC
server) exits with these codes, and the CronJobs' podFailurePolicy reads them: 2, 3 and 4 fail
the same way on every retry, 1 may not.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any, ClassVar


class ExitCode(IntEnum):
    OK = 0
    IO = 1  # an input could not be read or an output written
    USAGE = 2  # bad arguments, settings or input data
    GATE = 3  # a quality gate: a model below its bar, or more rows rejected than allowed
    MODEL = 4  # a model is missing or fails its integrity check


class BentosError(Exception):
    exit_code: ClassVar[ExitCode] = ExitCode.IO


class UsageError(BentosError):
    """Arguments, settings or data that cannot be used as they are."""

    exit_code = ExitCode.USAGE


class SettingsError(UsageError, ValueError):
    """A setting (an environment variable) with a value it cannot have; names the variable."""


class ClientError(BentosError):
    """A request a server refuses; `status` says why as HTTP does: 400 invalid input, 404 an
    unknown model or version, 408 a body too slow to arrive, 413 too large, 503 overloaded.
    `problems` are (row, field, message) triples. Each transport maps the family once: HTTP
    to the status and a JSON body, gRPC to a status code."""

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        status: int,
        message: str,
        problems: Sequence[tuple[int | None, str | None, str]] = (),
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = list(problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.message,
            "errors": [{"row": r, "field": f, "message": m} for r, f, m in self.problems[:20]],
        }


class InputError(ClientError, UsageError, ValueError):
    """Input that does not fit the schema (a 400; exit 2 for a batch job's unusable input)."""

    def __init__(self, message: str, problems: Sequence[tuple[int | None, str | None, str]] = ()):
        super().__init__(400, message, problems)


class DataError(UsageError, ValueError):
    """Training data that cannot be used: missing, empty, non-numeric, one class..."""


class GateError(BentosError):
    """A model missed a quality gate; nothing was registered."""

    exit_code = ExitCode.GATE


class ConversionError(GateError):
    """A model could not be converted to a served form (TFLite, the packed forest)."""


class TooManyRejected(GateError):
    """A batch shard rejected more rows than allowed; `manifest` is its _FAILED manifest."""

    def __init__(self, message: str, manifest: dict[str, Any]):
        super().__init__(message)
        self.manifest = manifest


class ModelError(BentosError, RuntimeError):
    """A model that is missing from the store or whose file is not the one registered."""

    exit_code = ExitCode.MODEL


class InputReadError(BentosError, RuntimeError):
    """An input file cannot be read (truncated, not the format its name says); names the file."""


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code for an error a command ends with: its own, or IO for an OSError."""
    if isinstance(exc, BentosError):
        return exc.exit_code
    if isinstance(exc, OSError):
        return ExitCode.IO
    raise TypeError(f"{type(exc).__name__} has no exit code: it is a bug, not an outcome")
