"""The one log format (bentos.logs): JSON lines with the same keys for every process, context
fields, exceptions in two keys; readable text on a real terminal (a pseudo-terminal here)."""

from __future__ import annotations

import io
import json
import logging
import os
import pty

import pytest

from bentos import logs


@pytest.fixture
def logger():
    """A logger of this project's, restored afterwards (configure replaces the root's handlers)."""
    root, ours = logging.getLogger(), logging.getLogger("bentos")
    handlers, levels = list(root.handlers), (root.level, ours.level)
    yield logging.getLogger("bentos.test")
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    ours.setLevel(levels[1])


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_the_same_keys_for_every_process(logger):
    for process in ("server", "grpc", "batch", "retrain"):
        out = io.StringIO()
        logs.configure(process, stream=out, fmt="json", level="info")
        logs.event(logger, "summary", rows_read=3, model="rf-classifier:abc")
        (line,) = _lines(out)
        assert list(line)[:6] == ["ts", "level", "logger", "process", "event", "message"]
        assert line["process"] == process and line["level"] == "info"
        assert line["event"] == "summary" and line["rows_read"] == 3
        assert line["model"] == "rf-classifier:abc" and line["logger"] == "bentos.test"
        assert line["ts"].endswith("Z") and "T" in line["ts"]


def test_context_fields_reach_every_record_of_the_block_and_no_later_one(logger):
    out = io.StringIO()
    logs.configure("batch", stream=out, fmt="json", level="info")
    with logs.context(shard_index=2, shard_count=4):
        logger.info("inside")
        logger.info("with its own", extra={"model": "m"})
    logger.info("after")
    inside, own, after = _lines(out)
    assert (inside["shard_index"], inside["shard_count"]) == (2, 4)
    assert own["shard_index"] == 2 and own["model"] == "m"
    assert "shard_index" not in after and after["event"] == "log"


def test_an_exception_becomes_its_message_and_one_traceback_string(logger):
    out = io.StringIO()
    logs.configure("server", stream=out, fmt="json", level="info")
    try:
        raise ValueError("bad thing")
    except ValueError:
        logger.exception("failed", extra={"event": "request_failed", "request_id": "r1"})
    (line,) = _lines(out)
    assert line["level"] == "error" and line["error"] == "bad thing"
    assert line["request_id"] == "r1" and "Traceback" in line["traceback"]
    assert "ValueError: bad thing" in line["traceback"]


def test_on_a_terminal_records_are_readable_lines_and_json_elsewhere(logger):
    leader, follower = pty.openpty()
    terminal = os.fdopen(follower, "w", buffering=1)
    try:
        assert logs.is_json(terminal, "auto") is False
        assert logs.is_json(io.StringIO(), "auto") is True
        assert logs.is_json(terminal, "json") is True  # BENTOS_LOG_FORMAT wins
        logs.configure("batch", stream=terminal, fmt="auto", level="info")
        logs.event(logger, "summary", rows_read=120, metrics={"success": True})
        text = os.read(leader, 4096).decode()
    finally:
        terminal.close()
        os.close(leader)
    assert not text.lstrip().startswith("{")
    assert "INFO" in text and "summary" in text and "rows_read=120" in text
    assert 'metrics={"success": true}' in text


def test_this_project_s_level_is_its_own_and_libraries_stay_at_warning(logger):
    out = io.StringIO()
    logs.configure("batch", stream=out, fmt="json", level="debug")
    logger.debug("ours")
    assert [line["message"] for line in _lines(out)] == ["ours"]
    out = io.StringIO()
    logs.configure("batch", stream=out, fmt="json", level="info")
    logging.getLogger("somelibrary").info("chatter")
    logging.getLogger("somelibrary").warning("worth seeing")
    logger.debug("hidden")
    assert [line["message"] for line in _lines(out)] == ["worth seeing"]
