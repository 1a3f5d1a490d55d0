"""Batch prediction, one shard per run: `python -m jobs.batch_predict --input URL --output URL`.

Every flag defaults to its setting (bentos.settings.BatchSettings), so a Kubernetes Indexed Job
needs no arguments: BENTOS_BATCH_INPUT, BENTOS_BATCH_OUTPUT, BENTOS_BATCH_MODEL,
BENTOS_BATCH_CHUNK_ROWS, BENTOS_BATCH_RF_BACKEND, BENTOS_BATCH_MAX_REJECT_FRACTION; the shard
index defaults to JOB_COMPLETION_INDEX (set by Kubernetes) and the shard count to
BENTOS_SHARD_COUNT (set by the manifest to `completions`).

Exit codes (bentos.errors.ExitCode, the same for every command):
  0  the shard is complete (or was already complete)
  1  an input could not be read or the output could not be written
  2  bad arguments or settings, or input that cannot be used at all (missing column, no files)
  3  more rows were rejected than --max-reject-fraction allows (reasons in OUTPUT/rejected/)
  4  the model is missing or fails its integrity check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from bentos.errors import BentosError, ExitCode, SettingsError, exit_code
from bentos.settings import RF_BACKENDS, BatchSettings, load


def _parser(settings: BatchSettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.batch_predict",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input", default=settings.input, help="CSV/Parquet file, folder or glob; any fsspec URL"
    )
    p.add_argument("--output", default=settings.output, help="output folder; any fsspec URL")
    p.add_argument("--model", choices=("rf", "edge"), default=settings.model)
    p.add_argument("--shard-index", type=int, default=settings.shard_index)
    p.add_argument("--shard-count", type=int, default=settings.shard_count)
    p.add_argument("--chunk-rows", type=int, default=settings.chunk_rows)
    p.add_argument("--rf-backend", choices=RF_BACKENDS, default=settings.rf_backend)
    p.add_argument("--max-reject-fraction", type=float, default=settings.max_reject_fraction)
    return p


class _Reporter:
    """A progress bar for people at a terminal; JSON lines for log collectors otherwise."""

    def __init__(self, shard: int, count: int):
        self.base = {"shard_index": shard, "shard_count": count}
        self.tty = sys.stdout.isatty()
        self._progress = None
        if self.tty:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()
            )
            self._task = self._progress.add_task(f"shard {shard}/{count}: starting", total=None)
            self._progress.start()

    def __call__(self, event: dict[str, Any]) -> None:
        if self._progress is not None and event.get("event") == "progress":
            self._progress.update(
                self._task,
                description=f"shard {self.base['shard_index']}/{self.base['shard_count']}: "
                f"{event['rows_read']:,} rows read, {event['rows_rejected']:,} rejected, "
                f"{event['rows_per_s']:,} rows/s",
            )
            return
        self.emit(event)

    def emit(self, event: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        line = {"ts": round(time.time(), 3), **self.base, **event}
        print(json.dumps(line, default=str), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load(BatchSettings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    parser = _parser(settings)
    args = parser.parse_args(argv)
    if not args.input or not args.output:
        parser.print_usage(sys.stderr)
        print(
            "error: --input and --output are required (or BENTOS_BATCH_INPUT/OUTPUT)",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    if args.shard_count < 1 or not 0 <= args.shard_index < args.shard_count:
        print(
            f"error: shard index {args.shard_index} must be in 0..{args.shard_count - 1}",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    if args.chunk_rows < 1 or not 0 <= args.max_reject_fraction <= 1:
        print(
            "error: --chunk-rows must be positive and --max-reject-fraction in [0, 1]",
            file=sys.stderr,
        )
        return ExitCode.USAGE

    from bentos.batch.shard import BatchConfig, run_shard
    from bentos.errors import TooManyRejected
    from bentos.runners import RandomForestRunner, TFLiteRunner

    report = _Reporter(args.shard_index, args.shard_count)
    cfg = BatchConfig(
        input=args.input,
        output=args.output,
        shard_index=args.shard_index,
        shard_count=args.shard_count,
        chunk_rows=args.chunk_rows,
        max_reject_fraction=args.max_reject_fraction,
    )
    try:
        runner = (
            RandomForestRunner(settings.rf_model, args.rf_backend)
            if args.model == "rf"
            else TFLiteRunner(settings.tflite_model)
        )
        manifest = run_shard(cfg, runner, report)
    except TooManyRejected as exc:
        report.emit({"event": "summary", **_summary(exc.manifest), "error": str(exc)})
        return exc.exit_code
    except (BentosError, OSError) as exc:
        report.emit({"event": "error", "error": getattr(exc, "message", None) or str(exc)})
        return exit_code(exc)
    report.emit({"event": "summary", **_summary(manifest)})
    return ExitCode.OK


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("status", "rows_read", "rows_written", "rows_rejected", "model", "duration_s")
    return {k: m.get(k) for k in keys}


if __name__ == "__main__":
    sys.exit(main())
