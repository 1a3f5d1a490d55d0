"""The benchmarks stay runnable: a few seconds of the online benchmark, for real, against the
session's models. Its figures are not asserted (timing is not a test), only that it ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.servers import ROOT


@pytest.fixture
def env(trained, bentoml_home) -> dict[str, str]:
    """The session's models, pinned (other tests register newer versions)."""
    return {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home),
        "BENTOS_RF_MODEL": trained.rf_tag,
        "BENTOS_TFLITE_MODEL": trained.tflite_tag,
    }


def _benchmark(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m benchmarks.MODULE ARGS...` from the checkout, with the session's models."""
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_online_benchmark_runs_every_http_target_briefly(env, tmp_path):
    out = tmp_path / "online.json"
    proc = _benchmark(
        "online",
        *("--targets", "flask,bentoml,floor,noop,predict,v2_rest,grpc"),
        *("--clients", "2", "--rows", "3"),
        *("--duration", "1", "--json", str(out)),
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    cells = {row["target"]: row for row in report["table"]}
    assert set(cells) == {"flask", "bentoml", "floor", "noop", "predict", "v2_rest", "grpc"}
    for target, row in cells.items():
        assert row["req/s"] > 0 and row["errors"] == 0, (target, row)
        assert abs(row["rows/s"] - row["req/s"] * 3) < 1  # both rounded to 0.1
    assert cells["flask"]["x flask"] == 1.0
    assert report["serving_bytes"] > 0 and report["tensorflow_bytes"] > report["serving_bytes"]
    assert "cold start" in proc.stdout
    # The report turns the same file into BENCHMARKS.md's table; the bar cells (1 and 64 rows,
    # 1 and 16 clients) were not part of this short run, and it says so rather than failing.
    shown = _benchmark("report", str(out), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "| predict | 3 | 2 |" in shown.stdout
    assert "| errors in every cell | 0.00 | == 0 | yes |" in shown.stdout
    assert (
        "| /predict >= 80% of the no-op ceiling (1 row, 16 clients) | not measured |"
        in shown.stdout
    )


def test_protocol_benchmark_loads_each_protocol_with_the_same_generator(env, tmp_path):
    out = tmp_path / "protocols.json"
    proc = _benchmark(
        "protocols",
        "--targets",
        "rest_json,v2_binary,grpc,rest_json_h2load,grpc_h2load,grpc_1w_h2load",
        *("--clients", "2", "--rows", "3", "--duration", "1", "--json", str(out)),
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = {row["target"]: row for row in json.loads(out.read_text())["table"]}
    assert set(cells) == {
        "rest_json",
        "v2_binary",
        "grpc",
        "rest_json_h2load",
        "grpc_h2load",
        "grpc_1w_h2load",
    }
    for target, row in cells.items():
        assert row["req/s"] > 0 and row["errors"] == 0, (target, row)
        assert abs(row["rows/s"] - row["req/s"] * 3) < 1
    # Each generator's cells are ratios to REST JSON under that same generator.
    assert cells["rest_json"]["x rest_json"] == 1.0
    assert cells["rest_json_h2load"]["x rest_json"] == 1.0
    h2load = cells["grpc_h2load"]["req/s"] / cells["rest_json_h2load"]["req/s"]
    assert cells["grpc_h2load"]["x rest_json"] == round(h2load, 2)


def test_h2load_counts_a_grpc_error_as_an_error_not_an_answer(grpc_server):
    """A gRPC error is an HTTP 200 with no body (its status is in the trailers): h2load's
    cells must not count it as served."""
    from benchmarks import loadgen

    result = loadgen.run_h2load(
        f"http://{grpc_server.address}/inference.GRPCInferenceService/ModelInfer",
        b"\x00\x00\x00\x00\x02\x0a\x00",  # a ModelInferRequest naming no model: NOT_FOUND
        headers={"content-type": "application/grpc", "te": "trailers"},
        concurrency=1,
        duration=1,
        warmup=0,
        http2=True,
        answer_bytes=20,
    )
    assert result.requests == 0 and result.errors > 0


def test_ab_comparison_runs_two_variants_side_by_side(env):
    proc = _benchmark(
        "ab",
        "noop=benchmarks.variants.noop_service:Noop/predict",
        "one-call-per-request=./predict?BENTOS_MAX_BATCH_SIZE=1",
        *("--rounds", "1", "--duration", "1", "--clients", "2", "--bodies", "3"),
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round 1 one-call-per-request" in proc.stdout
    assert "errors 0" in proc.stdout and "errors 1" not in proc.stdout
    assert "one-call-per-request     median" in proc.stdout


def test_forest_benchmark_times_every_backend_on_every_case(env, trained):
    # 256 varied rows, not 4,096: scikit-learn takes milliseconds a call, and this is a smoke run.
    proc = _benchmark(
        "forest", "--model", trained.rf_tag, "--repeat", "3", "--varied-rows", "256", env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert len(rows) == 9, proc.stdout  # same x2, varied x4, cold x2, chunk
    for row in rows:
        assert all(float(v) > 0 for v in row[-3:]), row  # packed, sklearn, their ratio


def test_batch_benchmark_times_the_baselines_and_the_job_on_two_sizes(env, trained, tmp_path):
    proc = _benchmark(
        "batch",
        *("--rows", "3000", "6000", "--model", trained.rf_tag, "--workdir", str(tmp_path)),
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for what in (
        "scikit-learn predict_proba (baseline)",
        "packed forest alone, 1 thread(s)",
        "packed forest alone, 2 thread(s)",
        "job end to end, walk compiled cold",
    ):
        (row,) = [line for line in lines if line.startswith(what)]
        assert float(row.split()[-4 if "job" in what else -2]) > 0, row  # its rows/s
    jobs = [line.split() for line in lines if line.startswith("job end to end, default flags")]
    assert [row[6] for row in jobs] == ["3000", "6000"]
    assert all(row[-1] == "MiB" and float(row[-2]) > 0 for row in jobs), jobs
    assert "peak RSS 6,000 / 3,000 rows:" in proc.stdout


def test_load_generators_send_a_list_of_bodies_in_turn():
    import shutil
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from benchmarks import loadgen

    received: list[bytes] = []

    class Record(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    bodies = [b'{"instances": [1]}', b'{"instances": [2]}', b'{"instances": [3]}']
    # wrk drives the benchmarks where it is installed, the Python generator elsewhere (CI).
    generators = [loadgen.run] + ([loadgen.run_wrk] if shutil.which("wrk") else [])
    try:
        for run in generators:
            received.clear()
            result = run(url, bodies, concurrency=1, duration=1, warmup=0)
            assert result.errors == 0 and result.requests >= 3, run.__name__
            assert set(received) == set(bodies), run.__name__
    finally:
        server.shutdown()


def test_ab_variants_name_a_target_a_path_and_an_environment():
    from benchmarks.ab import _variant

    assert _variant("after=./predict") == ("after", ".", "/predict", {})
    assert _variant("noop=benchmarks.variants.noop_service:Noop/noop?A=1&B=2") == (
        "noop",
        "benchmarks.variants.noop_service:Noop",
        "/noop",
        {"A": "1", "B": "2"},
    )
    assert _variant("before=/tmp/old//predict") == ("before", "/tmp/old", "/predict", {})


def test_predlog_writer_benchmark_times_both_forms_of_input(capsys):
    from benchmarks import predlog_writer

    predlog_writer.main(["--part-rows", "640", "--repeat", "1"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| rows/request | rows: table |") and len(table) == 4
    for line, rows in zip(table[2:], (1, 64), strict=True):
        cells = [float(c.split()[0].replace(",", "")) for c in line.strip("|").split("|")]
        assert cells[0] == rows and all(c > 0 for c in cells[1:])
        assert cells[-1] < cells[-2]  # the body as logged (zstd) is smaller than uncompressed
