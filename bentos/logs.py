"""One log format for every process: the HTTP server, the gRPC server, the jobs and the CLI.

In a pod (no terminal) each record is one JSON object per line, with the same keys everywhere:

    {"ts": "2026-12-01T10:00:00.123Z", "level": "info", "logger": "bentos.batch",
     "process": "batch", "event": "summary", "message": "summary", "shard_index": 0, ...}

- `event` names what happened (`summary`, `decision`, `progress`, `request_failed`, ...);
- the context of the record: `request_id` (HTTP and gRPC), `shard_index` and `shard_count`
  (batch), `model`, set with `context(...)` for a block of work or per record via `extra=`;
- `exc_info` becomes `error` (the message) and `traceback` (the whole of it, one string).

On a terminal the same records are one readable line each: `10:00:00 INFO  summary rows_read=...`.
BENTOS_LOG_FORMAT (auto, json, text) and BENTOS_LOG_LEVEL choose (bentos.settings.LogSettings).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("bentos_log_context")


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Fields added to every record logged in this block (and the tasks it starts)."""
    token = _context.set({**_context.get({}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def set_context(**fields: Any) -> None:
    """Fields for the rest of this context (a request's task, a job's process)."""
    _context.set({**_context.get({}), **fields})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_"}
    return {**_context.get({}), **extra}


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str):
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        fields = _fields(record)
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process,
            "event": fields.pop("event", None) or "log",
            "message": message,
            **fields,
        }
        if record.exc_info:
            line["error"] = str(record.exc_info[1])
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        fields.pop("event", None)
        tail = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} "
        line += f"{record.levelname:<7} {record.getMessage()}" + (f"  {tail}" if tail else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _iso(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created % 1 * 1000):03d}Z"
    )


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def is_json(stream: IO[str] | None = None, fmt: str | None = None) -> bool:
    """Whether records go out as JSON: BENTOS_LOG_FORMAT, or no terminal on `stream`."""
    if fmt is None:
        from bentos.settings import LogSettings, load

        fmt = load(LogSettings).format
    if fmt != "auto":
        return fmt == "json"
    stream = stream or sys.stderr
    return not (hasattr(stream, "isatty") and stream.isatty())


# The loggers BentoML's server configures with handlers of its own (bentoml._internal.log):
# given the one handler instead, at their own levels.
SERVER_LOGGERS = ("bentoml", "circus", "uvicorn", "uvicorn.error", "uvicorn.access")
# Loggers left without a handler: uvicorn's access log builds each request's line (its path
# quoted, its client's address) whenever its logger has a handler, though at INFO under the
# root's WARNING the line is then dropped. BentoML's access log (BENTOML_CONFIG
# logging.access) is the one a user turns on.
_SILENT = ("uvicorn.access",)


def configure(
    process: str,
    *,
    stream: IO[str] | None = None,
    loggers: tuple[str, ...] = (),
    fmt: str | None = None,
    level: str | None = None,
) -> logging.Handler:
    """Send every record to `stream` (stderr by default) in the one format: the root logger's,
    at WARNING (DEBUG when asked), and this project's (`bentos.*`) at BENTOS_LOG_LEVEL; each of
    `loggers` gets the same handler in place of its own. Returns the handler."""
    if fmt is None or level is None:
        from bentos.settings import LogSettings, load

        settings = load(LogSettings)
        fmt, level = fmt or settings.format, level or settings.level
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(process) if is_json(stream, fmt) else TextFormatter())
    root = logging.getLogger()
    for name in ("", *loggers):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        if name not in _SILENT:
            logger.addHandler(handler)
        logger.propagate = name == ""
    root.setLevel("DEBUG" if level == "debug" else "WARNING")
    logging.getLogger("bentos").setLevel(level.upper())
    return handler


@contextmanager
def native_stderr(logger: logging.Logger) -> Iterator[None]:
    """What C++ libraries print on file descriptor 2 during the block (LiteRT's "Created
    TensorFlow Lite XNNPACK delegate", once per process), logged as records of `logger` instead
    of raw lines among the JSON ones. Only for start-up work: the descriptor is the process's."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if line.strip():
                    level, _, text = line.partition(": ")
                    known = level in ("INFO", "WARNING", "ERROR")
                    logger.log(
                        getattr(logging, level) if known else logging.WARNING,
                        text if known else line,
                        extra={"event": "native"},
                    )


def event(logger: logging.Logger, name: str, message: str | None = None, **fields: Any) -> None:
    """One record for a named event, its fields as keys of the JSON line."""
    level = logging.ERROR if name in ("error", "gate_failed") else logging.INFO
    logger.log(level, message or name, extra={"event": name, **fields})
