"""Batch prediction, one shard per run: `python -m jobs.batch_predict --input URL --output URL`.

Example (shard 0 of 4; `bentos batch` is the same command):
  bentos batch --input s3://bucket/in/ --output s3://bucket/out/ --shard-count 4 --shard-index 0

Every flag defaults to its setting (bentos.settings.BatchSettings), so a Kubernetes Indexed Job
needs no arguments: BENTOS_BATCH_INPUT, BENTOS_BATCH_OUTPUT, BENTOS_BATCH_MODEL,
BENTOS_BATCH_CHUNK_ROWS, BENTOS_BATCH_RF_BACKEND, BENTOS_BATCH_MAX_REJECT_FRACTION,
BENTOS_BATCH_THREADS; the shard index defaults to JOB_COMPLETION_INDEX (set by Kubernetes) and
the shard count to BENTOS_SHARD_COUNT (set by the manifest to `completions`).

Exit codes (bentos.errors.ExitCode, the same for every command):
  0  the shard is complete (or was already complete)
  1  an input could not be read or the output could not be written
  2  bad arguments or settings, or input that cannot be used at all (missing column, no files)
  3  more rows were rejected than --max-reject-fraction allows (reasons in OUTPUT/rejected/)
  4  the model is missing or fails its integrity check
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from bentos import jobmetrics, logs
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
    p.add_argument(
        "--keep",
        default=settings.keep,
        metavar="COLUMNS",
        help="input columns copied beside each prediction, comma-separated (default: the "
        "identifier columns the model saw in training, when present; '' for none)",
    )
    p.add_argument(
        "--registry",
        default=settings.registry,
        metavar="URL",
        help="pull its champions first and score with them (default: BENTOS_REGISTRY)",
    )
    p.add_argument(
        "--show-rejected",
        metavar="OUTPUT",
        help="print the rows an earlier run rejected into OUTPUT, and why; then exit",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=settings.threads,
        help="chunks predicted at once (default: the CPUs this process may use)",
    )
    return p


log = logging.getLogger("bentos.batch")


class _Reporter:
    """The job's events: one JSON line each in a pod (bentos.logs); on a terminal, readable
    lines and a progress bar with the shard's total, rate and time left."""

    def __init__(self, shard: int, count: int):
        self.shard = f"shard {shard + 1}/{count}"
        self.tty = not logs.is_json(sys.stdout)
        self._bar: Any = None
        self._task: Any = None

    @property
    def every(self) -> float:
        return 0.25 if self.tty else 2.0

    def __call__(self, event: dict[str, Any]) -> None:
        name = event.pop("event")
        if self.tty and name == "started":
            self._start(event["total"], event["unit"])
            return
        if self._bar is not None and name == "progress":
            rate = f"{event['rows_per_s']:,} rows/s"
            self._bar.update(self._task, completed=event["done"], rate=rate)
            return
        self.emit(name, **event)

    def _start(self, total: int, unit: str) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        amount = MofNCompleteColumn() if unit == "rows" else DownloadColumn()
        self._bar = Progress(
            TextColumn(self.shard),
            BarColumn(),
            TaskProgressColumn(),
            amount,
            TextColumn(unit if unit == "rows" else "read"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=_console(),
        )
        self._task = self._bar.add_task("", total=total, rate="")
        self._bar.start()

    def emit(self, name: str, **fields: Any) -> None:
        if self._bar is not None:
            if name in ("summary", "skipped"):
                self._bar.update(self._task, completed=self._bar.tasks[0].total)
            self._bar.stop()
            self._bar = None
        logs.event(log, name, **fields)


def _console() -> Any:
    from rich.console import Console

    return Console(file=sys.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    # The start imports some 1,300 modules, and meanwhile Python's collector walks their
    # objects again and again: off until the shard starts (BENCHMARKS.md, "Batch"), then on,
    # with what the start made set aside (gc.freeze) so that later collections skip it.
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    try:
        settings = load(BatchSettings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    parser = _parser(settings)
    args = parser.parse_args(argv)
    if args.show_rejected:
        return _show_rejected(args.show_rejected)
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
    if (
        args.chunk_rows < 1
        or not 0 <= args.max_reject_fraction <= 1
        or (args.threads is not None and args.threads < 1)
    ):
        print(
            "error: --chunk-rows and --threads must be positive and --max-reject-fraction in [0, 1]",
            file=sys.stderr,
        )
        return ExitCode.USAGE

    if args.model == "rf" and args.rf_backend == "packed":
        _compile_walk_in_background()
    from bentos.batch.shard import BatchConfig, run_shard
    from bentos.errors import TooManyRejected
    from bentos.runners import RandomForestRunner, TFLiteRunner

    logs.configure("batch", stream=sys.stdout)
    logs.set_context(shard_index=args.shard_index, shard_count=args.shard_count)
    report = _Reporter(args.shard_index, args.shard_count)
    cfg = BatchConfig(
        input=args.input,
        output=args.output,
        shard_index=args.shard_index,
        shard_count=args.shard_count,
        chunk_rows=args.chunk_rows,
        max_reject_fraction=args.max_reject_fraction,
        threads=args.threads,
        keep=None
        if args.keep is None
        else tuple(n.strip() for n in args.keep.split(",") if n.strip()),
    )
    t0, model, code = time.perf_counter(), None, ExitCode.OK
    manifest: dict[str, Any] = {}
    try:
        if args.registry:
            from bentos.registry import pull_champions

            pull_champions(args.registry)
        runner = (
            RandomForestRunner(settings.rf_model, args.rf_backend)
            if args.model == "rf"
            else TFLiteRunner(settings.tflite_model)
        )
        model = runner.tag
        from bentos.monitoring.predlog import from_settings

        recorder = from_settings("batch")
        gc.freeze()
        gc.enable()
        try:
            manifest = run_shard(
                cfg, runner, report, progress_every=report.every, recorder=recorder
            )
        finally:
            if recorder is not None:
                recorder.close()  # the sampled rows are written before the job ends
        error = None
    except TooManyRejected as exc:
        manifest, error, code = exc.manifest, str(exc), exc.exit_code
    except (BentosError, OSError) as exc:
        error, code = getattr(exc, "message", None) or str(exc), exit_code(exc)
    figures = jobmetrics.figures(
        rows={k: manifest.get(f"rows_{k}", 0) for k in ("read", "written", "rejected")},
        duration_s=time.perf_counter() - t0,
        success=code == ExitCode.OK,
        models=jobmetrics.model_versions([model] if model else []),
    )
    if manifest:
        summary = {**_summary(manifest), "metrics": figures}
        report.emit("summary", **summary, **({"error": error} if error else {}))
    else:
        report.emit("error", error=error, metrics=figures)
    if settings.pushgateway:
        grouping = {"shard": str(args.shard_index)}
        try:
            jobmetrics.push(settings.pushgateway, "batch", figures, grouping)
        except OSError as exc:  # the figures are in the summary; the shard's result stands
            logs.event(log, "push_failed", f"pushgateway {settings.pushgateway}: {exc}")
    return code


def _show_rejected(output: str) -> int:
    """The rejected rows of a run, a tab-separated line each: file, row, reason."""
    from bentos.batch.files import read_rejected

    try:
        rows = read_rejected(output)
        print("source_file\tsource_row\treason")
        shown = 0
        for source, row, reason in rows:
            print(f"{source}\t{row}\t{reason}")
            shown += 1
    except (BentosError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    print(f"{shown} rejected row(s) in {output}", file=sys.stderr)
    return ExitCode.OK


def _compile_walk_in_background() -> None:
    """Import bentos.forest, which loads the walk's machine code (or compiles it, a second or
    two, where none was kept: bentos.native), in a thread, while this one imports the rest,
    lists the input and opens the model; the runner's own import then waits for it."""
    import importlib
    import threading

    threading.Thread(target=importlib.import_module, args=("bentos.forest",), daemon=True).start()


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("status", "rows_read", "rows_written", "rows_rejected", "model", "duration_s")
    summary = {k: m.get(k) for k in keys}
    if m.get("unknown_categories"):  # values of a categorical column never seen in training
        summary["unknown_categories"] = m["unknown_categories"]
    return summary


if __name__ == "__main__":
    sys.exit(main())
