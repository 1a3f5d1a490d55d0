"""Slow senders cannot take the capacity: a body must arrive within the body timeout (else a
408), and a request still sending its body holds none of the slots model work needs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import time

import httpx
import pytest

from tests.support.monitoring import scrape
from tests.support.strategies import ROW

PER_WORKER = 3  # BENTOS_MAX_CONCURRENCY
WORKERS = 2  # service.py's default


@pytest.fixture(scope="module")
def small(serve, pinned):
    env = {**pinned, "BENTOS_MAX_CONCURRENCY": str(PER_WORKER), "BENTOS_BODY_TIMEOUT_SECONDS": "3"}
    srv = serve(env).wait_ready()
    yield srv
    srv.stop()


def _slow(srv, n: int) -> list[socket.socket]:
    """n connections that send their headers and a few bytes of a declared 500-byte body."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 500\r\n\r\n{"instances": ['
        )
        socks.append(s)
    return socks


def test_twice_the_slots_in_slow_senders_leave_predict_answering_within_a_second(small):
    slow = _slow(small, 2 * PER_WORKER * WORKERS)
    try:
        time.sleep(0.3)
        with httpx.Client(base_url=small.url, timeout=10) as client:
            for _ in range(20):
                t0 = time.monotonic()
                resp = client.post("/predict", json={"instances": [ROW]})
                took = time.monotonic() - t0
                assert resp.status_code == 200, resp.text
                assert took < 1.0, took
    finally:
        for s in slow:
            s.close()


def _response(s: socket.socket) -> str:
    """One whole HTTP response: its head and then content-length bytes of body, which may come
    in separate segments."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def _slow_reply(srv) -> tuple[str, float]:
    """The answer to one slow sender (`_slow`), and the seconds it took to come."""
    (s,) = _slow(srv, 1)
    try:
        s.settimeout(10)
        t0 = time.monotonic()
        reply = _response(s)
        return reply, time.monotonic() - t0
    finally:
        s.close()


def test_a_body_that_does_not_arrive_in_time_is_a_json_408(small):
    reply, took = _slow_reply(small)
    assert reply.startswith("HTTP/1.1 408"), reply
    assert '"error":"the request body did not arrive within 3 s"' in reply
    assert 2.5 < took < 8, took  # the configured 3 s, not BentoML's 30 s request timeout


def _client_gone(srv) -> float:
    """Requests to /predict whose clients left before their answer, as /metrics counts them."""
    return sum(
        value
        for sample, value in scrape(srv.url + "/metrics").items()
        if sample.startswith("bentos_rejected_requests_total{")
        and 'reason="client_gone"' in sample
        and 'route="/predict"' in sample
    )


def _sigterm(srv) -> tuple[float, list[str]]:
    """Seconds a SIGTERM (to every process of the server, as Process.stop sends it) takes to
    stop the server, and the error lines of its log."""
    t0 = time.monotonic()
    os.killpg(srv.proc.pid, signal.SIGTERM)
    srv.proc.wait(60)
    took = time.monotonic() - t0
    lines = srv.log.read_text(errors="replace").splitlines()
    srv.stop()
    return took, [line for line in lines if '"level": "error"' in line or "Traceback" in line]


def test_clients_that_pipeline_requests_and_leave_unread_are_not_errors_nor_slow_a_stop(
    serve, pinned
):
    """Clients that pipeline requests, never read an answer and close: uvicorn answered the
    request in hand to the closed connection, and each logged a server error with a traceback
    (bentos.serving.protocol). Now their answers are dropped and counted as `client_gone`."""
    idle, srv = serve(pinned), serve(pinned)
    srv.wait_ready(), idle.wait_ready()
    idle_stop, _ = _sigterm(idle)
    body = json.dumps({"instances": [ROW] * 64}).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    socks = []
    try:
        for _ in range(600):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills fast: never read
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.send(request * 20)
            socks.append(s)
        time.sleep(0.5)
        # A client that reads is answered meanwhile (after the backlog ahead of it).
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
    finally:
        for s in socks:  # at once, with a reset: they vanish, their answers unread
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    time.sleep(1.0)
    assert _client_gone(srv) > 0
    took, errors = _sigterm(srv)
    assert errors == [], errors[:3]
    # Not a timing benchmark: a bound. A worker that waited out its timeout took 30 s.
    assert took < idle_stop + 3, (took, idle_stop)


def test_clients_that_leave_mid_body_are_counted_and_do_not_hold_up_a_stop(serve, pinned):
    """BentoML's request timeout waits for an answer that a request whose client left never
    gave: a stop then waited 30 s for it. Each such request now ends at once, counted as
    `client_gone`, and the server stops about as fast as an idle one."""
    srv = serve({**pinned, "BENTOS_BODY_TIMEOUT_SECONDS": "3"}).wait_ready()
    try:
        gone = _slow(srv, 2 * PER_WORKER * WORKERS)
        time.sleep(0.3)
        for s in gone:
            s.close()
        time.sleep(0.5)
        counted = _client_gone(srv)
        assert counted == len(gone)
    finally:
        t0 = time.monotonic()
        srv.stop()
        took = time.monotonic() - t0
    assert took < 5, f"the stop took {took:.1f} s"


@pytest.mark.parametrize(
    ("bentoml_config", "expected"),
    [
        # As service.py sets BentoML up: Front answers /predict ahead of BentoML's layers, and
        # keeps BentoML's request timeout itself.
        ("", '"error":"the request was not answered within 1 s"'),
        # An access log asked for in BENTOML_CONFIG: BentoML's layers (its access log, its
        # timeout) see every request again.
        (
            "    logging:\n      access:\n        enabled: true\n",
            "Not able to process the request in 1",
        ),
    ],
    ids=["ahead-of-bentoml", "through-bentoml"],
)
def test_a_request_past_bentoml_s_timeout_gets_a_504_on_either_path(
    serve, pinned, tmp_path, bentoml_config, expected
):
    config = tmp_path / "bentoml.yaml"
    config.write_text(
        "services:\n  tabular-classifier:\n    traffic:\n      timeout: 1\n" + bentoml_config
    )
    env = {**pinned, "BENTOML_CONFIG": str(config), "BENTOS_BODY_TIMEOUT_SECONDS": "5"}
    srv = serve(env).wait_ready()
    try:
        reply, took = _slow_reply(srv)
        assert reply.startswith("HTTP/1.1 504"), reply
        assert expected in reply, reply
        assert 0.9 < took < 4, took  # the 1 s timeout, not the body's 5 s
        # Requests that arrive whole are answered as before.
        resp = httpx.post(srv.url + "/predict", json={"instances": [ROW]}, timeout=10)
        assert resp.status_code == 200, resp.text
    finally:
        srv.stop()
