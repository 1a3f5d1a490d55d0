"""The prediction log: sampled predictions of the HTTP service, the gRPC server and the batch job,
written in the background as Parquet parts to any fsspec URL, for `bentos monitor` and
`bentos evaluate` to read (docs/monitoring.md).

The request path only appends to a bounded buffer: a record that does not fit is dropped and
counted, never waited for. A thread turns the buffer into a part and writes it when the part
has `part_rows` rows or its first row is `part_seconds` old; `close()` (and interpreter exit)
writes what is left. So a killed process loses at most one part's rows, a stopped one none.

Layout, one folder per UTC day, each part named by its last row's time so that a window's
reader can skip older parts by name alone:

    LOG/2026-12-05/part-20261205T134501123Z-<host>-<pid>-<n>.parquet

Columns: request_id, time (UTC), model (its tag), source (http, grpc, batch), row (within its
request), input (the row as received, after validation, as JSON), body (a JSON API request's
body as received, on its first row only, instead of `input` on every row), prediction
(the label, as text), probabilities. `inputs(table)` gives every row's fields, whichever column
holds them.

Why `body`: a JSON API request's body is already JSON text, and it passed validation as a
whole. Keeping it costs a reference on the request path and little in the writer, where
writing each row as JSON again (and an Arrow string per row) took most of the writer's time
under the server's GIL (BENCHMARKS.md, "The prediction log's cost online"); the drift check
parses each body once, offline.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger("bentos.monitoring")

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("time", pa.timestamp("ms", tz="UTC")),
        ("model", pa.string()),
        ("source", pa.string()),
        ("row", pa.int32()),
        ("input", pa.string()),
        ("body", pa.binary()),
        ("prediction", pa.string()),
        ("probabilities", pa.list_(pa.float32())),
    ]
)
# `body`, most of a part's bytes, is compressed with zstd at level 1: a third of its bytes. In the
# server, writing bytes out (the kernel's copy into the file, fresh pages) cost more of the
# writer's CPU than compressing them does (BENCHMARKS.md, "The prediction log's cost online").
# Nor has it min/max statistics.
_COMPRESSION = {name: "zstd" if name == "body" else "snappy" for name in SCHEMA.names}
_COMPRESSION_LEVEL = {"body": 1}
_STATISTICS = [name for name in SCHEMA.names if name != "body"]
# Nor a dictionary for a column whose values are each a request's own (a body, a row as JSON):
# Parquet would hash every value before falling back to plain encoding past 1 MiB.
_DICTIONARY = [name for name in SCHEMA.names if name not in ("body", "input")]
PART_TIME = "%Y%m%dT%H%M%S"  # and milliseconds, then "Z"
Count = Callable[[str, int], None]  # (outcome: written, dropped or failed, rows)
Spent = Callable[[float], None]  # the writer thread's CPU seconds for a part


def part_name(last: datetime, host: str, pid: int, n: int) -> str:
    """A part's path under the log's root: its day's folder, then its last row's time."""
    stamp = f"{last.strftime(PART_TIME)}{last.microsecond // 1000:03d}Z"
    return f"{last.strftime('%Y-%m-%d')}/part-{stamp}-{host}-{pid}-{n}.parquet"


def part_time(name: str) -> datetime | None:
    """The last row's time of a part, from its name; None for a name this log did not write."""
    base = name.rsplit("/", 1)[-1]
    if not base.startswith("part-") or len(base) < 24:
        return None
    try:
        stamp = datetime.strptime(base[5:20], PART_TIME).replace(tzinfo=UTC)
        return stamp.replace(microsecond=int(base[20:23]) * 1000)
    except ValueError:
        return None


class PredictionLog:
    """Where a process's sampled predictions go. `record` never blocks and never raises."""

    def __init__(
        self,
        url: str,
        *,
        source: str,
        sample: float = 1.0,
        buffer_rows: int = 100_000,
        part_rows: int = 50_000,
        part_seconds: float = 60.0,
        count: Count | None = None,
        spent: Spent | None = None,
    ):
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.source, self.sample = source, sample
        self.buffer_rows, self.part_rows, self.part_seconds = buffer_rows, part_rows, part_seconds
        self._count = count or (lambda outcome, n: None)
        self._spent = spent or (lambda seconds: None)
        self._lock = threading.Lock()
        self._pending: deque[tuple[Any, ...]] = deque()
        self._pending_rows = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._parts = 0
        self._host = socket.gethostname().replace("/", "_")[:63]
        self.written = self.dropped = self.failed = 0
        self.cpu_seconds = 0.0  # the writer thread's, making and writing parts
        self._thread = threading.Thread(target=self._run, name="bentos-prediction-log", daemon=True)
        self._thread.start()
        # Before the interpreter's own threads are joined, not at atexit: by then
        # concurrent.futures refuses new work, and fsspec's S3 writes need it (a part written
        # at exit failed with "cannot schedule new futures after interpreter shutdown").
        threading._register_atexit(self.close)

    def sampled(self) -> bool:
        """Whether to log the request at hand (whole requests are logged, or none of it)."""
        return self.sample >= 1.0 or (self.sample > 0.0 and random.random() < self.sample)

    def record(
        self,
        request_id: str | Sequence[str],
        model: str,
        rows: Sequence[Any] | bytes,
        predictions: Sequence[Any],
        probabilities: np.ndarray,
    ) -> None:
        """Queue one request's rows (each a dict of the row's fields as received, after
        validation; or, as bytes, a JSON API body {"instances": [...]} that validated), with the
        model's answers; dropped and counted if the buffer is full."""
        n = len(predictions)
        with self._lock:
            if self._pending_rows + n > self.buffer_rows or self._stop.is_set():
                self.dropped += n
                full = True
            else:
                self._pending.append(
                    (request_id, time.time(), model, rows, predictions, probabilities)
                )
                self._pending_rows += n
                full = False
        if full:
            self._count("dropped", n)
        elif self._pending_rows >= self.part_rows:
            self._wake.set()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is held and stop; later records are dropped (and counted)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        rows: list[tuple[Any, ...]] = []  # the part being gathered, one tuple per request
        n_rows, first = 0, 0.0
        while True:
            self._wake.wait(min(1.0, self.part_seconds))
            self._wake.clear()
            # Read before taking the buffer: once stop is seen, record() adds nothing more.
            stopping = self._stop.is_set()
            with self._lock:
                taken, self._pending = self._pending, deque()
                self._pending_rows = 0
            if taken and not rows:
                first = taken[0][1]
            rows.extend(taken)
            n_rows += sum(len(r[4]) for r in taken)
            old = rows and time.time() - first >= self.part_seconds
            if rows and (n_rows >= self.part_rows or old or stopping):
                # What the log costs the process, measured where it is spent (this thread's
                # CPU: an object store's upload may run on fsspec's own thread besides).
                started = time.thread_time()
                self._write(rows, n_rows)
                seconds = time.thread_time() - started
                self.cpu_seconds += seconds
                self._spent(seconds)
                rows, n_rows = [], 0
            if stopping:
                return

    def _write(self, requests: list[tuple[Any, ...]], n_rows: int) -> None:
        try:
            table = _table(requests, self.source)
            last = datetime.fromtimestamp(requests[-1][1], UTC)
            self._parts += 1
            path = f"{self.root}/{part_name(last, self._host, os.getpid(), self._parts)}"
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            # One object written whole (S3), or a file renamed into place: a reader never sees
            # half a part.
            tmp = f"{path.rsplit('/', 1)[0]}/.{path.rsplit('/', 1)[1]}.tmp"
            with self.fs.open(tmp, "wb") as fh:
                pq.write_table(
                    table,
                    fh,
                    compression=_COMPRESSION,
                    write_statistics=_STATISTICS,
                    use_dictionary=_DICTIONARY,
                    compression_level=_COMPRESSION_LEVEL,
                )
            self.fs.mv(tmp, path)
        except Exception as exc:  # storage down, a row orjson cannot write: logged, counted
            self.failed += n_rows
            self._count("failed", n_rows)
            log.warning(
                "prediction log: %d rows not written to %s: %s",
                n_rows,
                self.root,
                exc,
                extra={"event": "prediction_log_failed"},
            )
            return
        self.written += n_rows
        self._count("written", n_rows)


def _table(requests: list[tuple[Any, ...]], source: str) -> pa.Table:
    ids, times, models, rows, inputs, labels = [], [], [], [], [], []
    bodies: list[bytes | None] = []  # a JSON API request's body on its first row
    blocks = []  # each request's probabilities; models with other numbers of classes may mix
    option = orjson.OPT_SERIALIZE_NUMPY
    for request_id, at, model, records, predictions, proba in requests:
        n = len(predictions)
        ids += [request_id] * n if isinstance(request_id, str) else list(request_id)
        times += [int(at * 1000)] * n
        models += [model] * n
        rows += range(n)
        if isinstance(records, bytes):
            # Once, not on every row: Parquet's dictionary of a large column falls back to
            # writing each row's value (a 64-row body 64 times) past 1 MiB.
            inputs += [None] * n
            bodies += [records, *[None] * (n - 1)]
        else:
            # default=str: dates and the like as their text; NaN (a missing value) is null.
            inputs += [orjson.dumps(r, default=str, option=option).decode() for r in records]
            bodies += [None] * n
        labels += [str(v) for v in predictions]
        blocks.append(np.asarray(proba, dtype=np.float32).reshape(n, -1))
    lengths = np.concatenate([np.full(len(b), b.shape[1], np.int32) for b in blocks])
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int32)]).astype(np.int32)
    values = np.concatenate([b.ravel() for b in blocks])
    return pa.table(
        {
            "request_id": pa.array(ids, pa.string()),
            "time": pa.array(times, pa.timestamp("ms", tz="UTC")),
            "model": pa.array(models, pa.string()),
            "source": pa.repeat(pa.scalar(source, pa.string()), len(ids)),
            "row": pa.array(rows, pa.int32()),
            "input": pa.array(inputs, pa.string()),
            "body": pa.array(bodies, pa.binary()),
            "prediction": pa.array(labels, pa.string()),
            "probabilities": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
        },
        schema=SCHEMA,
    )


def inputs(table: pa.Table) -> list[dict[str, Any]]:
    """Each logged row's fields as received: its `input`, or its place in its request's `body`,
    which the request's first row holds (each body parsed once). The rows of a request stay
    together (they share their time and model, by which windows are cut); a row whose
    request's first row is not in `table` is a ValueError, never another request's fields."""
    out: list[dict[str, Any]] = []
    rows: list[Any] = []  # the current JSON API request's instances
    current = None  # its request id
    for batch in table.select(["request_id", "row", "input", "body"]).to_batches():
        if batch.column(2).null_count == 0:  # no JSON API request in this batch
            out += [orjson.loads(v) for v in batch.column(2).to_pylist()]
            continue
        for rid, place, text, body in zip(*(c.to_pylist() for c in batch.columns), strict=True):
            if text is not None:
                out.append(orjson.loads(text))
                continue
            if body is not None:
                rows, current = orjson.loads(body)["instances"], rid
            if rid != current or place >= len(rows):
                raise ValueError(f"row {place} of request {rid!r} without its request's body")
            out.append(rows[place])
    return out


def from_settings(
    source: str, count: Count | None = None, spent: Spent | None = None
) -> PredictionLog | None:
    """The process's prediction log as its settings say (BENTOS_PREDICTION_LOG and the rest;
    read once, at start-up); None when there is none or nothing is sampled."""
    from bentos.settings import PredictionLogSettings, load

    settings = load(PredictionLogSettings)
    if not settings.url or settings.sample <= 0:
        return None
    return PredictionLog(
        settings.url,
        source=source,
        sample=settings.sample,
        buffer_rows=settings.buffer_rows,
        part_rows=settings.part_rows,
        part_seconds=settings.part_seconds,
        count=count,
        spent=spent,
    )


def read_window(url: str, since: datetime, until: datetime | None = None) -> pa.Table:
    """The logged rows from `since` (to `until`, default now), from every part that can hold
    them: a part is skipped by its name when its last row is older than `since`."""
    import fsspec

    until = until or datetime.now(UTC)
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    paths = []
    day = since.date()
    while day <= until.date():
        folder = f"{root}/{day.isoformat()}"
        if fs.isdir(folder):
            for path in sorted(fs.ls(folder, detail=False)):
                last = part_time(path)
                if last is not None and last >= since:
                    paths.append(path)
        day = date.fromordinal(day.toordinal() + 1)
    tables = []
    for path in paths:
        with fs.open(path, "rb") as fh:
            tables.append(pq.read_table(fh, schema=SCHEMA))
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    times = table.column("time")
    keep = pc.and_(
        pc.greater_equal(times, pa.scalar(since, times.type)),
        pc.less_equal(times, pa.scalar(until, times.type)),
    )
    return table.filter(keep)
