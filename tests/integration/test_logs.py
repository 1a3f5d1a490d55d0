"""One log format across the processes, as they run: the HTTP server (main process and workers),
the gRPC server and the batch job each write one JSON object per line when no terminal is
attached, with the same keys; the batch job on a real terminal (a pseudo-terminal) draws a
progress bar with the shard's total instead."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_batch import iris, run_job
from tests.support.terminal import on_a_terminal

KEYS = ["ts", "level", "logger", "process", "event", "message"]


def _records(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return records


@pytest.mark.parametrize("fixture, process", [("server", "server"), ("grpc_server", "grpc")])
def test_a_server_s_every_line_is_a_json_record_of_the_one_format(request, fixture, process):
    srv = request.getfixturevalue(fixture)
    records = _records(srv.log.read_text())
    for record in records:
        assert list(record)[: len(KEYS)] == KEYS, record
        assert record["process"] == process, record
    if process == "server":
        # BentoML's own records (its start-up line) are in the format too, not only ours.
        assert any(r["logger"].startswith("bentoml") for r in records), records
    else:
        assert any("gRPC listening" in r["message"] for r in records), records


def test_a_batch_job_writes_json_lines_with_its_shard_and_a_progress_line_with_the_total(
    job_env, tmp_path
):
    iris(300).to_parquet(tmp_path / "in.parquet", row_group_size=100)
    proc = run_job(
        job_env,
        "--input",
        tmp_path / "in.parquet",
        "--output",
        tmp_path / "out",
        "--shard-count",
        "3",
        "--shard-index",
        "1",
    )
    records = _records(proc.stdout)
    for record in records:
        assert list(record)[: len(KEYS)] == KEYS, record
        assert record["process"] == "batch" and record["shard_index"] == 1, record
        assert record["shard_count"] == 3, record
    events = {r["event"]: r for r in records}
    # Its total from the Parquet footers: the shard's one row group of the three.
    assert (events["started"]["total"], events["started"]["unit"]) == (100, "rows")
    progress = events["progress"]
    assert progress["total"] == 100 and progress["unit"] == "rows" and "eta_s" in progress
    summary = events["summary"]
    assert summary["rows_written"] == 100
    assert summary["metrics"]["rows"] == {"read": 100, "written": 100, "rejected": 0}
    assert summary["metrics"]["success"] is True
    assert summary["metrics"]["models"] == {
        "rf-classifier": job_env["BENTOS_RF_MODEL"].split(":")[1]
    }


def _on_a_terminal(env: dict, *args: str) -> tuple[int, str]:
    return on_a_terminal(["jobs.batch_predict", *args], env, timeout=60)


def test_on_a_terminal_the_batch_job_shows_a_bar_with_rows_of_the_total_and_time_left(
    job_env, tmp_path
):
    iris(300).to_parquet(tmp_path / "in.parquet", row_group_size=100)
    code, text = _on_a_terminal(
        job_env, "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out")
    )
    assert code == 0, text
    assert "300/300" in text and "rows" in text, text
    assert "shard 1/1" in text and "100%" in text, text
    assert "summary" in text and "rows_written=300" in text, text
    assert '{"ts"' not in text, text


def test_on_a_terminal_csv_progress_is_in_bytes_of_the_files(job_env, tmp_path):
    iris(300).to_csv(tmp_path / "in.csv", index=False)
    size = (tmp_path / "in.csv").stat().st_size
    code, text = _on_a_terminal(
        job_env, "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out")
    )
    assert code == 0, text
    assert "read" in text and "kB" in text, text
    assert f"{size / 1000:.1f}" in text, (size, text)
