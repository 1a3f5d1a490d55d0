"""The prediction log (bentos.monitoring.predlog) on a real local folder: what is written, what
a window reads back, and that a full buffer drops and counts rather than waits."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from bentos.monitoring.predlog import PredictionLog, inputs, part_name, part_time, read_window


def _log(tmp_path, **kw) -> tuple[PredictionLog, list[tuple[str, int]]]:
    counted: list[tuple[str, int]] = []
    log = PredictionLog(
        str(tmp_path / "log"), source="http", count=lambda o, n: counted.append((o, n)), **kw
    )
    return log, counted


def test_a_stopped_log_writes_every_row_it_was_given(tmp_path):
    spent: list[float] = []
    log, counted = _log(tmp_path, spent=spent.append)
    proba = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    rows = [{"sex": "male", "age": None}, {"sex": "female", "age": 3.5}]
    log.record("req-1", "rf-classifier:abc", rows, ["yes", "no"], proba)
    log.record(
        ["f.csv#7"], "rf-classifier:abc", [{"sex": "x", "age": float("nan")}], [1], proba[:1]
    )
    log.close()
    table = read_window(str(tmp_path / "log"), datetime.now(UTC) - timedelta(minutes=1))
    assert table.num_rows == 3
    got = table.to_pylist()
    assert [r["request_id"] for r in got] == ["req-1", "req-1", "f.csv#7"]
    assert [r["row"] for r in got] == [0, 1, 0]
    assert inputs(table) == [*rows, {"sex": "x", "age": None}]
    assert [r["prediction"] for r in got] == ["yes", "no", "1"]
    assert got[0]["probabilities"] == [0.25, 0.75]
    assert {r["source"] for r in got} == {"http"}
    assert counted == [("written", 3)]
    assert log.written == 3 and log.dropped == 0
    # The writing thread's CPU for the part, handed to the metrics as it is spent.
    assert len(spent) == 1 and spent[0] > 0 and log.cpu_seconds == spent[0]


def test_a_json_api_body_is_kept_once_per_request_and_read_back_as_its_rows(tmp_path):
    """The JSON API hands over its body as received (it validated whole): the part holds it once,
    on the request's first row, and `inputs` gives each row its own fields, in order with rows
    logged one by one (gRPC, batch) in the same part."""
    log, _ = _log(tmp_path)
    proba = np.full((3, 2), 0.5, dtype=np.float32)
    first = [{"sex": "male", "age": None}, {"sex": "female", "age": 3.5}, {"sex": "?", "age": 1}]
    log.record("a", "m:1", json.dumps({"instances": first}).encode(), ["x", "y", "x"], proba)
    log.record("b", "m:1", [{"sex": "female", "age": 40.0}], ["y"], proba[:1])
    second = [{"age": 2, "sex": "male"}]
    log.record("c", "m:1", json.dumps({"instances": second}).encode(), ["x"], proba[:1])
    log.close()
    (part,) = (tmp_path / "log").rglob("*.parquet")
    stored = pq.read_table(part)
    assert stored.column("input").null_count == 4  # the body's rows: no text of their own
    assert stored.column("body").null_count == 3  # each body once, on its first row
    table = read_window(str(tmp_path / "log"), datetime.now(UTC) - timedelta(minutes=1))
    assert inputs(table) == [*first, {"sex": "female", "age": 40.0}, *second]
    assert table.column("row").to_pylist() == [0, 1, 2, 0, 0]
    # Rows cut from their request's first row are an error, not another request's fields.
    assert inputs(table.slice(3)) == [{"sex": "female", "age": 40.0}, *second]
    with pytest.raises(ValueError, match="row 1 of request 'a' without its request's body"):
        inputs(table.slice(1, 3))


def test_a_full_buffer_drops_and_counts_instead_of_waiting(tmp_path):
    # A part is written only at close: the buffer holds 5 rows, so the rest is dropped.
    log, counted = _log(tmp_path, buffer_rows=5, part_rows=1000, part_seconds=3600)
    proba = np.full((2, 2), 0.5, dtype=np.float32)
    t0 = time.perf_counter()
    for i in range(10):
        log.record(f"r{i}", "m:1", [{"a": 1}, {"a": 2}], ["x", "y"], proba)
    assert time.perf_counter() - t0 < 1.0  # never waits for storage
    log.close()
    assert log.dropped == 16 and log.written == 4
    assert ("dropped", 2) in counted and counted[-1] == ("written", 4)


def test_parts_roll_by_rows_and_are_named_by_their_last_row(tmp_path):
    log, _ = _log(tmp_path, part_rows=4)
    proba = np.full((2, 2), 0.5, dtype=np.float32)
    for i in range(6):
        log.record(f"r{i}", "m:1", [{"a": i}, {"a": i}], ["x", "x"], proba)
        time.sleep(0.05)
    log.close()
    parts = sorted((tmp_path / "log").rglob("part-*.parquet"))
    assert len(parts) >= 2
    assert sum(pq.read_metadata(p).num_rows for p in parts) == 12
    for p in parts:
        last = max(pq.read_table(p).column("time").to_pylist())
        assert part_time(p.name) == last
    assert not list((tmp_path / "log").rglob(".*.tmp"))  # no half-written part is left


def test_a_window_skips_rows_and_parts_before_it(tmp_path):
    log, _ = _log(tmp_path)
    log.record("old", "m:1", [{"a": 1}], ["x"], np.ones((1, 1), np.float32))
    log.close()
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert read_window(str(tmp_path / "log"), later).num_rows == 0
    assert read_window(str(tmp_path / "nothing-here"), later).num_rows == 0


def test_storage_that_fails_is_counted_not_raised(tmp_path):
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log's folder should be")
    log, counted = _log(tmp_path)
    log.record("r", "m:1", [{"a": 1}], ["x"], np.ones((1, 1), np.float32))
    log.close()
    assert log.failed == 1 and counted == [("failed", 1)]


@pytest.mark.parametrize("ms", [0, 7, 999])
def test_a_part_name_carries_its_time_to_the_millisecond(ms):
    when = datetime(2026, 12, 5, 13, 45, 1, ms * 1000, tzinfo=UTC)
    name = part_name(when, "host-a", 12, 3)
    assert name.startswith("2026-12-05/part-20261205T134501")
    assert part_time(name) == when
