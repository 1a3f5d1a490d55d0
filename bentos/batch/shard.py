"""Batch prediction of one shard: stream, validate, predict, and publish the results atomically.

Output layout, per shard S of N (names carry both, so runs with other shard counts cannot mix):

    OUTPUT/part-SSSSS-of-NNNNN.parquet           predictions, one row per valid input row
    OUTPUT/rejected/part-SSSSS-of-NNNNN.parquet  rows that failed validation, with the reason
    OUTPUT/_SUCCESS-SSSSS-of-NNNNN.json          the manifest; written last, marks the shard done

Files are written under OUTPUT/_tmp/ and renamed into place only when complete. A rerun skips
a shard whose manifest matches the same inputs and model, and redoes any other from scratch,
overwriting its parts: after a crash at any point, each valid row is in exactly one part.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bentos.batch.files import (
    OUTPUT_COLUMNS,
    REJECTED_SCHEMA,
    Chunk,
    InputFile,
    columns_of,
    iter_shard,
    list_inputs,
    output_schema,
    predictions,
    rejections,
    shard_size,
)
from bentos.errors import InputError, TooManyRejected
from bentos.recorder import Recorder
from bentos.runners import Runner

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class BatchConfig:
    input: str
    output: str
    shard_index: int = 0
    shard_count: int = 1
    chunk_rows: int = 65536
    max_reject_fraction: float = 0.01
    threads: int | None = None  # chunks scored at once; None: usable_cpus()
    # Input columns copied beside each prediction; None: the model's identifier columns that
    # the input has (bentos.schema.kinds), so results join back to the input by key.
    keep: tuple[str, ...] | None = None


Log = Callable[[dict[str, Any]], None]


def _names(cfg: BatchConfig) -> dict[str, str]:
    tail = f"{cfg.shard_index:05d}-of-{cfg.shard_count:05d}"
    return {
        "part": f"part-{tail}.parquet",
        "rejected": f"rejected/part-{tail}.parquet",
        "success": f"_SUCCESS-{tail}.json",
        "failed": f"_FAILED-{tail}.json",
        "tmp_prefix": f"_tmp/{tail}-",
    }


def _check_shard_count(fs: Any, root: str, cfg: BatchConfig) -> None:
    for path in fs.glob(f"{root}/_SUCCESS-*-of-*.json"):
        count = int(path.rsplit("-of-", 1)[1].split(".")[0])
        if count != cfg.shard_count:
            raise InputError(
                f"output {cfg.output!r} already holds a run with {count} shards, this one has "
                f"{cfg.shard_count}; use a new output folder (or remove the old run)"
            )


def _inputs_record(files: list[InputFile]) -> list[dict[str, Any]]:
    return [{"url": f.url, "size": f.size, **f.fingerprint} for f in files]


def _read_json(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        with fs.open(path, "rb") as fh:
            return json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _publish_json(fs: Any, root: str, name: str, tmp_prefix: str, data: dict[str, Any]) -> None:
    tmp = f"{root}/{tmp_prefix}{uuid.uuid4().hex}.json"
    with fs.open(tmp, "wb") as fh:
        fh.write((json.dumps(data, indent=2) + "\n").encode())
    fs.mv(tmp, f"{root}/{name}")


def run_shard(
    cfg: BatchConfig,
    runner: Runner,
    log: Log,
    progress_every: float = 2.0,
    recorder: Recorder | None = None,
) -> dict[str, Any]:
    """Predict one shard; return its manifest. Raises InputError, TooManyRejected, I/O errors.

    `log` gets a `progress` event at most every `progress_every` seconds: the counts, and how
    far the shard is (`done` of `total` `unit`, bentos.batch.files.shard_size). `recorder`: the
    prediction log, which gets a sample of the valid rows (bentos.monitoring.predlog)."""
    import fsspec

    if not 0 <= cfg.shard_index < cfg.shard_count:
        raise InputError(f"shard index {cfg.shard_index} is outside 0..{cfg.shard_count - 1}")
    in_fs, files = list_inputs(cfg.input)
    fs, root = fsspec.core.url_to_fs(cfg.output)
    root = root.rstrip("/")
    names = _names(cfg)
    _check_shard_count(fs, root, cfg)
    keep = _keep(cfg, runner, in_fs, files)
    identity = {
        "model": runner.tag,
        "keep": list(keep),
        "inputs": _inputs_record(files),
        "shard_index": cfg.shard_index,
        "shard_count": cfg.shard_count,
        "chunk_rows": cfg.chunk_rows,
    }
    done = _read_json(fs, f"{root}/{names['success']}")
    if done and all(done.get(k) == v for k, v in identity.items()):
        log({"event": "skipped", "reason": "shard already complete", **_counts(done)})
        return {**done, "status": "skipped"}

    for leftover in fs.glob(f"{root}/{names['tmp_prefix']}*"):
        fs.rm(leftover)  # a crashed attempt's partial files: never visible, now gone
    fs.makedirs(f"{root}/_tmp", exist_ok=True)
    fs.makedirs(f"{root}/rejected", exist_ok=True)
    token = uuid.uuid4().hex
    tmp_part = f"{root}/{names['tmp_prefix']}{token}.parquet"
    tmp_rej = f"{root}/{names['tmp_prefix']}{token}.rejected.parquet"

    total, unit = shard_size(in_fs, files, cfg.shard_index, cfg.shard_count)
    threads = cfg.threads or usable_cpus()
    log({"event": "started", "total": total, "unit": unit, "files": len(files), "threads": threads})
    started, t0 = datetime.now(UTC), time.perf_counter()
    counts = {"rows_read": 0, "rows_written": 0, "rows_rejected": 0}
    unknown: dict[str, int] = {}  # categorical values outside the training levels, by column
    first_rejected: list[str] = []  # the first few reasons, for the failure's message
    read_bytes: dict[str, int] = {}  # per file, how far its chunks have come
    schema = runner.schema
    # A regression's answers: the number, and the forest's spread (bentos.runners).
    answers = ("prediction", "spread") if runner.spread else ("prediction",)
    out_schema = output_schema(schema.labels, keep, answers if schema.regression else ())
    with (
        fs.open(tmp_part, "wb") as part_fh,
        fs.open(tmp_rej, "wb") as rej_fh,
        pq.ParquetWriter(part_fh, out_schema) as part,
        pq.ParquetWriter(rej_fh, REJECTED_SCHEMA) as rejected,
    ):
        last_log = 0.0
        chunks = iter_shard(
            in_fs,
            files,
            list(dict.fromkeys([*schema.names, *keep])),
            cfg.shard_index,
            cfg.shard_count,
            cfg.chunk_rows,
        )
        for done_chunk in _in_threads(
            chunks, lambda chunk: _score(chunk, runner, out_schema, list(keep), recorder), threads
        ):
            for name, n in done_chunk.unknown.items():
                unknown[name] = unknown.get(name, 0) + n
            if done_chunk.table is not None:
                part.write_table(done_chunk.table)
            if done_chunk.rejected:
                rejected.write_table(rejections(done_chunk.source, done_chunk.rejected))
                first_rejected += [
                    f"{done_chunk.source} row {row}: {why}"
                    for row, why in done_chunk.rejected[: 3 - len(first_rejected)]
                ]
            counts["rows_read"] += done_chunk.rows_read
            counts["rows_written"] += done_chunk.rows_written
            counts["rows_rejected"] += len(done_chunk.rejected)
            read_bytes[done_chunk.source] = done_chunk.read_bytes
            now = time.perf_counter()
            if now - last_log >= progress_every:
                last_log = now
                done = counts["rows_read"] if unit == "rows" else sum(read_bytes.values())
                log(_progress(counts, done, total, unit, now - t0))

    manifest = {
        "manifest_version": MANIFEST_VERSION,
        **identity,
        **counts,
        "unknown_categories": unknown,
        "status": "complete",
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_s": round(time.perf_counter() - t0, 3),
        "outputs": {"predictions": names["part"], "rejected": names["rejected"]},
    }
    fs.mv(tmp_rej, f"{root}/{names['rejected']}")
    fraction = counts["rows_rejected"] / counts["rows_read"] if counts["rows_read"] else 0.0
    if fraction > cfg.max_reject_fraction:
        fs.rm(tmp_part)
        # Nothing was published but the rejected rows: the manifest says so.
        manifest.update(
            status="failed",
            reject_fraction=round(fraction, 6),
            rows_valid=counts["rows_written"],
            rows_written=0,
            outputs={"rejected": names["rejected"]},
        )
        _publish_json(fs, root, names["failed"], names["tmp_prefix"], manifest)
        output = cfg.output.rstrip("/")
        raise TooManyRejected(
            f"{counts['rows_rejected']} of {counts['rows_read']} rows rejected ({fraction:.2%}), "
            f"more than --max-reject-fraction {cfg.max_reject_fraction}; nothing was published. "
            f"First: {'; '.join(first_rejected)}. All of them: {output}/{names['rejected']} "
            f"(`bentos batch --show-rejected {output}`)",
            manifest,
        )
    fs.mv(tmp_part, f"{root}/{names['part']}")
    _publish_json(fs, root, names["success"], names["tmp_prefix"], manifest)
    if fs.exists(f"{root}/{names['failed']}"):
        fs.rm(f"{root}/{names['failed']}")
    return manifest


@dataclass(frozen=True)
class _Scored:
    """A chunk validated and predicted, ready to be written."""

    source: str
    table: pa.Table | None  # its predictions; None when no row was valid
    rejected: list[tuple[int, str]]  # (row, reason)
    rows_read: int
    rows_written: int
    read_bytes: int
    unknown: dict[str, int]


def _keep(cfg: BatchConfig, runner: Runner, fs: Any, files: list[InputFile]) -> dict[str, Any]:
    """The columns to copy beside each prediction, with their types (the first file's)."""
    available = columns_of(fs, files[0]) if files else {}
    if cfg.keep is None:
        names = [c for c in runner.schema.identifiers if c in available]
    else:
        names = list(dict.fromkeys(cfg.keep))
        clash = [n for n in names if n in OUTPUT_COLUMNS]
        if clash:
            raise InputError(
                f"--keep {', '.join(clash)}: the output has columns of that name "
                f"({', '.join(OUTPUT_COLUMNS)}); rename the input column"
            )
        missing = [n for n in names if n not in available]
        if missing:
            raise InputError(
                f"--keep: column(s) {', '.join(map(repr, missing))} not in {files[0].url}; "
                f"its columns are {', '.join(available)}"
            )
    return {n: available[n] for n in names}


def _score(
    chunk: Chunk,
    runner: Runner,
    out_schema: pa.Schema,
    keep: list[str],
    recorder: Recorder | None = None,
) -> _Scored:
    unknown: dict[str, int] = {}
    x, reasons = runner.schema.validate_frame(chunk.frame, unknown)
    ok = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
    table = None
    if ok.any():
        proba = runner.predict_proba(x[ok])
        kept = chunk.frame.loc[ok, keep] if keep else None
        table = predictions(chunk.source, chunk.rows[ok], proba, runner, out_schema, kept)
        if recorder is not None:
            _record(recorder, chunk, ok, proba, runner)
    bad_rows = [
        (int(r), why) for r, why in zip(chunk.rows[~ok], (w for w in reasons if w), strict=True)
    ]
    bad_rows += chunk.bad_lines
    return _Scored(
        chunk.source,
        table,
        bad_rows,
        len(reasons) + len(chunk.bad_lines),
        int(ok.sum()),
        chunk.read_bytes,
        unknown,
    )


def _record(
    recorder: Recorder, chunk: Chunk, ok: np.ndarray, proba: np.ndarray, runner: Runner
) -> None:
    """A sample of the chunk's valid rows into the prediction log, each row its own record,
    named by its file and row (`FILE#ROW`), as the output's source_file and source_row are."""
    picked = np.flatnonzero(np.random.default_rng().random(int(ok.sum())) < recorder.sample)
    if not len(picked):
        return
    rows = np.flatnonzero(ok)[picked]
    ids = [f"{chunk.source}#{r}" for r in chunk.rows[rows].tolist()]
    records = chunk.frame.iloc[rows].to_dict("records")
    recorder.record(ids, runner.tag, records, runner.labels_for(proba[picked]), proba[picked])


def _in_threads(
    chunks: Iterator[Chunk], score: Callable[[Chunk], _Scored], threads: int
) -> Iterator[_Scored]:
    """`score` of every chunk, in the chunks' order, computed by `threads` threads while this
    one reads the next chunks and writes the finished ones (the model, pyarrow's reading and
    writing release the GIL). At most `threads + 1` chunks are read and not yet written, so
    memory stays flat whatever the input's size. A worker's exception is raised here, at its
    chunk's turn: nothing after it is written, and the chunks in flight are dropped."""
    if threads <= 1:
        yield from map(score, chunks)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="bentos-batch") as pool:
        pending: deque[Future[_Scored]] = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(score, chunk))
                if len(pending) > threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by its cgroup's CPU quota (in
    Kubernetes, the container's CPU limit), rounded up; at least 1."""
    cpus = len(os.sched_getaffinity(0))
    for path, parse in (
        ("/sys/fs/cgroup/cpu.max", lambda text: text.split()),  # cgroup v2: "quota period"
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", lambda text: [text.strip(), _v1_period()]),
    ):
        try:
            quota, period = parse(Path(path).read_text())
        except (OSError, ValueError):
            continue
        if quota not in ("max", "-1") and int(period) > 0:
            cpus = min(cpus, -(-int(quota) // int(period)))
        break
    return max(cpus, 1)


def _v1_period() -> str:
    return Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()


def _progress(
    counts: dict[str, int], done: int, total: int, unit: str, elapsed: float
) -> dict[str, Any]:
    rate = done / max(elapsed, 1e-9)
    left = max(total - done, 0) / rate if rate > 0 else None
    return {
        "event": "progress",
        **counts,
        "done": done,
        "total": total,
        "unit": unit,
        "rows_per_s": round(counts["rows_read"] / max(elapsed, 1e-9)),
        "eta_s": None if left is None else round(left, 1),
    }


def _counts(m: dict[str, Any]) -> dict[str, Any]:
    return {
        k: m.get(k)
        for k in ("shard_index", "shard_count", "rows_read", "rows_written", "rows_rejected")
    }
