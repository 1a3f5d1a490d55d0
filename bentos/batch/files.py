"""Batch files: find the inputs, split them into shards, stream one shard in bounded chunks;
and the tables the job writes (predictions, rejected rows).

The partition is a pure function of the sorted file list: a Parquet row group, or a run of
`chunk_rows` CSV rows, is a unit, and unit k of file i belongs to shard (i + k) % shard_count.
So shards are disjoint, together cover every row, and need no coordination or pre-count.
"""

from __future__ import annotations

import csv
import glob as _glob
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bentos.errors import InputError, InputReadError
from bentos.runners import Runner

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class InputFile:
    path: str  # as the filesystem names it
    url: str  # as the user would (with protocol), for output row ids
    format: str
    size: int
    fingerprint: dict[str, Any]


@dataclass
class Chunk:
    source: str  # the file's URL
    rows: np.ndarray  # row number within the file (0-based, header excluded), per row of frame
    frame: pd.DataFrame  # the feature columns, possibly as text
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # unparseable CSV rows
    read_bytes: int = 0  # how far into the file this chunk's end is (for progress in bytes)


def list_inputs(url: str) -> tuple[Any, list[InputFile]]:
    """A file, a directory (its CSV/Parquet files, recursively) or a glob; sorted."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if _glob.has_magic(path):
        paths = fs.glob(path)
    elif fs.isdir(path):
        paths = [p for p in fs.find(path) if _format(p)]
    elif fs.exists(path):
        paths = [path]
    else:
        raise InputError(f"input {url!r}: no such file or directory")
    paths = sorted(p for p in paths if not _hidden(p))
    unknown = [p for p in paths if not _format(p)]
    if unknown:
        raise InputError(
            f"input {unknown[0]!r}: not .csv or .parquet; allowed: {', '.join(FORMATS)}"
        )
    if not paths:
        raise InputError(f"input {url!r}: no .csv or .parquet files found")
    files = []
    for p in paths:
        info = fs.info(p)
        stamp = {k: _plain(info[k]) for k in ("mtime", "ETag", "etag", "md5") if k in info}
        files.append(
            InputFile(p, fs.unstrip_protocol(p), _format(p), int(info.get("size") or 0), stamp)
        )
    return fs, files


def _format(path: str) -> str | None:
    return next((fmt for ext, fmt in FORMATS.items() if path.lower().endswith(ext)), None)


def _hidden(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith(("_", "."))


def _plain(v: Any) -> Any:
    return v if isinstance(v, int | float | str) else str(v)


def shard_of(file_index: int, unit: int, shard_count: int) -> int:
    return (file_index + unit) % shard_count


def shard_size(fs: Any, files: list[InputFile], shard: int, shard_count: int) -> tuple[int, str]:
    """A shard's total for its progress, and the unit: rows from the Parquet footers when every
    input is Parquet; bytes otherwise (a CSV's rows are unknown until read, and each shard reads
    every CSV whole to find its own units)."""
    if not all(f.format == "parquet" for f in files):
        return sum(f.size for f in files), "bytes"
    total = 0
    for i, f in enumerate(files):
        with _reading(f), fs.open(f.path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
        total += sum(
            meta.row_group(rg).num_rows
            for rg in range(meta.num_row_groups)
            if shard_of(i, rg, shard_count) == shard
        )
    return total, "rows"


def iter_shard(
    fs: Any, files: list[InputFile], names: list[str], shard: int, shard_count: int, chunk_rows: int
) -> Iterator[Chunk]:
    for i, f in enumerate(files):
        with _reading(f):
            reader = _parquet if f.format == "parquet" else _csv
            yield from reader(fs, f, i, names, shard, shard_count, chunk_rows)


@contextmanager
def _reading(f: InputFile) -> Iterator[None]:
    """A file that cannot be read becomes an InputReadError naming it."""
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputReadError(f"{f.url}: cannot be read as {f.format}: {exc}") from exc


def _missing(url: str, present: list[str], names: list[str]) -> None:
    missing = [n for n in names if n not in present]
    if missing:
        raise InputError(
            f"{url}: missing column(s) {', '.join(map(repr, missing))}; the model needs: {', '.join(names)}"
        )


def _parquet(fs, f: InputFile, i: int, names, shard: int, count: int, chunk_rows: int):
    with fs.open(f.path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        _missing(f.url, pf.schema_arrow.names, names)
        offset, total = 0, max(pf.metadata.num_rows, 1)
        for rg in range(pf.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            if shard_of(i, rg, count) == shard:
                start = offset
                for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=[rg], columns=names):
                    rows = np.arange(start, start + batch.num_rows, dtype=np.int64)
                    start += batch.num_rows
                    yield Chunk(f.url, rows, batch.to_pandas(), read_bytes=f.size * start // total)
            offset += n


def _csv(fs, f: InputFile, i: int, names, shard: int, count: int, chunk_rows: int):
    bad: list[tuple[int, str]] = []

    def invalid(row: Any) -> str:
        # pyarrow numbers lines from 1 and counts the header: data row = line - 2.
        number = -1 if row.number is None else row.number - 2
        why = f"malformed CSV line ({row.actual_columns} fields, expected {row.expected_columns})"
        bad.append((number, why))
        return "skip"

    with fs.open(f.path, "rb") as fh:
        header = fh.readline().decode("utf-8", "replace")
        _missing(f.url, next(csv.reader([header]), []), names)
        fh.seek(0)
        reader = pacsv.open_csv(
            fh,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 22),
            parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
            # Features read as text and parsed by the schema: one bad cell rejects its row,
            # where type inference would fail the whole block.
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), include_columns=names
            ),
        )
        next_row = 0  # the first data row number not yet seen
        for batch in reader:
            lines, bad[:] = sorted(bad), []
            rows = _row_numbers(next_row, batch.num_rows, {r for r, _ in lines})
            next_row = max([next_row - 1, *rows[-1:].tolist(), *(r for r, _ in lines)]) + 1
            frame = batch.to_pandas()
            units = rows // chunk_rows
            for unit in sorted(set(units.tolist()) | {r // chunk_rows for r, _ in lines}):
                if shard_of(i, unit, count) != shard:
                    continue
                mask = units == unit
                mine = [(r, why) for r, why in lines if r // chunk_rows == unit]
                yield Chunk(f.url, rows[mask], frame[mask].reset_index(drop=True), mine, fh.tell())


def _row_numbers(start: int, n: int, skipped: set[int]) -> np.ndarray:
    """Row numbers of `n` parsed rows from `start`, stepping over the skipped (bad) ones."""
    if not skipped:
        return np.arange(start, start + n, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    row = start
    for k in range(n):
        while row in skipped:
            row += 1
        out[k] = row
        row += 1
    return out


# -- output tables ----------------------------------------------------------------------------


REJECTED_SCHEMA = pa.schema(
    [("source_file", pa.string()), ("source_row", pa.int64()), ("reason", pa.string())]
)


OUTPUT_COLUMNS = ("source_file", "source_row", "prediction", "probabilities", "spread", "model")


def columns_of(fs: Any, f: InputFile) -> dict[str, pa.DataType]:
    """A file's columns and their types (a CSV's are text: the job reads its cells as text)."""
    with _reading(f), fs.open(f.path, "rb") as fh:
        if f.format == "parquet":
            arrow = pq.ParquetFile(fh).schema_arrow
            return {name: arrow.field(name).type for name in arrow.names}
        header = fh.readline().decode("utf-8", "replace")
    return dict.fromkeys(next(csv.reader([header]), []), pa.string())


def output_schema(
    labels: tuple[Any, ...],
    keep: dict[str, pa.DataType] | None = None,
    regression: tuple[str, ...] = (),
) -> pa.Schema:
    """The predictions' columns; `keep`: input columns copied beside each prediction. A
    regression's (`regression`: its answers' names, "prediction" and perhaps "spread", as
    bentos.serving.v2.model_outputs gives them) are float32 numbers instead of a label and
    probabilities."""
    if regression:
        return pa.schema(
            [
                ("source_file", pa.string()),
                ("source_row", pa.int64()),
                *(keep or {}).items(),
                *((name, pa.float32()) for name in regression),
                ("model", pa.string()),
            ],
            metadata={"task": "regression"},
        )
    label_type = pa.int64() if all(isinstance(v, int) for v in labels) else pa.string()
    return pa.schema(
        [
            ("source_file", pa.string()),
            ("source_row", pa.int64()),
            *(keep or {}).items(),
            ("prediction", label_type),
            ("probabilities", pa.list_(pa.float32(), len(labels))),
            ("model", pa.string()),
        ],
        metadata={"class_labels": json.dumps(list(labels))},
    )


def predictions(
    source: str,
    rows: np.ndarray,
    proba: np.ndarray,
    runner: Runner,
    schema: pa.Schema,
    kept: pd.DataFrame | None = None,
) -> pa.Table:
    n, k = proba.shape
    copied = {}
    for name in kept.columns if kept is not None else ():
        copied[name] = pa.array(kept[name], schema.field(name).type, from_pandas=True)
    if runner.schema.regression:
        answers = {
            name: pa.array(np.ascontiguousarray(proba[:, i], dtype=np.float32))
            for i, name in enumerate(("prediction", "spread"))
            if name in schema.names
        }
        return pa.table(
            {
                "source_file": pa.repeat(pa.scalar(source, pa.string()), n),
                "source_row": pa.array(rows, pa.int64()),
                **copied,
                **answers,
                "model": pa.repeat(pa.scalar(runner.tag, pa.string()), n),
            },
            schema=schema,
        )
    flat = pa.array(np.ascontiguousarray(proba, dtype=np.float32).ravel())
    # Built in Arrow's C code, not from a Python object per row: a list of 65,536 strings took
    # about 15 ms a column and held the GIL that the other chunks' threads wait for.
    labels = pa.array(list(runner.schema.labels), schema.field("prediction").type)
    return pa.table(
        {
            "source_file": pa.repeat(pa.scalar(source, pa.string()), n),
            "source_row": pa.array(rows, pa.int64()),
            **copied,
            "prediction": labels.take(np.argmax(proba, axis=1)),
            "probabilities": pa.FixedSizeListArray.from_arrays(flat, k),
            "model": pa.repeat(pa.scalar(runner.tag, pa.string()), n),
        },
        schema=schema,
    )


def rejections(source: str, bad: list[tuple[int, str]]) -> pa.Table:
    return pa.table(
        {
            "source_file": [source] * len(bad),
            "source_row": [r for r, _ in bad],
            "reason": [why for _, why in bad],
        },
        schema=REJECTED_SCHEMA,
    )


def read_rejected(output: str) -> Iterator[tuple[str, int, str]]:
    """Every rejected row a run wrote into `output` (OUTPUT/rejected/*.parquet), by file and
    row: (source_file, source_row, reason). The folder is checked at once, before the first
    row is asked for; the rows are read with pyarrow, a batch at a time."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(output)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise InputError(f"{output}: no such output folder")
    parts = sorted(fs.glob(f"{root}/rejected/part-*.parquet"))
    if not parts:
        raise InputError(f"{output} holds no rejected rows (no rejected/part-*.parquet)")

    def rows() -> Iterator[tuple[str, int, str]]:
        for part in parts:
            with fs.open(part, "rb") as fh:
                for batch in pq.ParquetFile(fh).iter_batches(columns=REJECTED_SCHEMA.names):
                    columns = (batch.column(n).to_pylist() for n in REJECTED_SCHEMA.names)
                    yield from zip(*columns, strict=True)

    return rows()
