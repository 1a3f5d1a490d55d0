"""The gRPC server (bentos.serving.grpc) against clients that hold calls open: raw HTTP/2
connections (tests.support.held) that send a call's headers and the first bytes of its message
and then wait. A held call costs the server a coroutine until BENTOS_GRPC_MESSAGE_TIMEOUT_SECONDS
drops it, and counts against nothing that real calls need (docs/reliability.md, "Slow and
vanishing clients")."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import tritonclient.grpc as tgrpc
from tritonclient.grpc import service_pb2 as pb

from benchmarks.servers import Process
from tests.support.held import HeldCalls, timed_calls
from tests.support.monitoring import scrape

DEADLINE_EXCEEDED, INVALID_ARGUMENT = "4", "3"


def _rejected(reason: str, route: str = "ModelInfer") -> str:
    return f'bentos_rejected_requests_total{{reason="{reason}",route="{route}",transport="grpc"}}'


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def _errors(srv: Process) -> list[str]:
    lines = srv.log.read_text(errors="replace").splitlines()
    return [line for line in lines if "ERROR" in line or "Traceback" in line]


def test_a_thousand_held_calls_leave_the_server_answering_and_are_dropped_at_the_deadline(
    grpc_start,
):
    srv = grpc_start(BENTOS_GRPC_MESSAGE_TIMEOUT_SECONDS="4")
    workers = srv.children()
    client = tgrpc.InferenceServerClient(srv.address)
    timed_calls(client)  # the channel is up before the streams come
    before = sum(_rss_mib(p) for p in workers)
    with HeldCalls(srv.address, connections=1000) as held:
        assert held.refused_connections == 0
        took, rss = [], []
        while held.held == 1000 or not took:  # until the deadline drops them
            held.read(0.25)
            took.append(max(timed_calls(client)))
            rss.append(sum(_rss_mib(p) for p in workers))
            # A client that connects now is answered too.
            if len(took) == 4:
                fresh = tgrpc.InferenceServerClient(srv.address)
                took.append(max(timed_calls(fresh)))
                fresh.close()
        # The answers leave at the deadline; on a loaded machine the last ones take a moment
        # more to reach this one reading thread.
        for _ in range(20):
            held.read(0.5)
            if sum(held.statuses.values()) == 1000:
                break
        # Every held call was answered DEADLINE_EXCEEDED at its deadline, none refused earlier.
        assert held.statuses == {DEADLINE_EXCEEDED: 1000}, held.statuses
    client.close()
    assert len(took) >= 8  # the calls below ran throughout the 4 s the streams were held
    assert max(took) < 1.0, took
    # Memory: bounded (a held call costs tens of KiB, not a thread) and flat while held.
    assert max(rss) - before < 100, (before, rss)
    assert max(rss[len(rss) // 2 :]) - rss[len(rss) // 2] < 16, rss
    assert scrape(srv.metrics_url)[_rejected("body_timeout")] == 1000
    assert _errors(srv) == []


def test_streams_and_connections_past_their_limits_are_refused_and_earlier_clients_answered(
    grpc_start,
):
    srv = grpc_start(
        BENTOS_GRPC_WORKERS="1",
        BENTOS_GRPC_MAX_STREAMS_PER_CONNECTION="10",
        BENTOS_GRPC_MAX_CONNECTIONS="20",
        BENTOS_GRPC_MESSAGE_TIMEOUT_SECONDS="30",
    )
    client = tgrpc.InferenceServerClient(srv.address)
    timed_calls(client)
    with HeldCalls(srv.address, connections=40, streams=15) as held:
        held.read(1.0)
        # Connections past the worker's 20 (the client's among them) are closed as they come.
        assert 0 < held.open_connections < 20, held.open_connections
        # On one that stays, 10 calls are held and the other 5 refused (REFUSED_STREAM).
        assert held.held == 10 * held.open_connections
        assert held.statuses.get("reset", 0) >= 5 * held.open_connections
        assert max(timed_calls(client)) < 1.0
        kept = held.held
    # Their clients left before the message came: counted as such, and no server error.
    for _ in range(50):
        if scrape(srv.metrics_url).get(_rejected("client_gone"), 0) >= kept:
            break
        time.sleep(0.1)
    assert scrape(srv.metrics_url)[_rejected("client_gone")] == kept
    assert _errors(srv) == []
    client.close()


def test_past_the_waiting_calls_kept_the_longest_waiting_are_dropped_and_fresh_calls_answered(
    grpc_start,
):
    srv = grpc_start(BENTOS_GRPC_WORKERS="1", BENTOS_GRPC_MAX_WAITING_CALLS="100")
    client = tgrpc.InferenceServerClient(srv.address)
    with HeldCalls(srv.address, connections=300) as held:
        held.read(1.0)
        # The worker keeps 100; the 200 that had waited longest were dropped at once ...
        assert held.held == 100, held.statuses
        assert held.statuses == {DEADLINE_EXCEEDED: 200}, held.statuses
        # ... and calls whose message comes at once get in: the first of them takes the place
        # of one more held call, the next the place it left.
        assert max(timed_calls(client)) < 1.0
        held.read(0.5)
        assert held.held == 99
    client.close()
    assert _errors(srv) == []


def test_a_call_that_ends_without_its_message_is_invalid_argument(grpc_start):
    srv = grpc_start(BENTOS_GRPC_WORKERS="1")
    with HeldCalls(srv.address, connections=2, streams=3, message=b"", end=True) as held:
        held.read(1.0)
        assert held.statuses == {INVALID_ARGUMENT: 6}, held.statuses
    assert scrape(srv.metrics_url)[_rejected("invalid_input")] == 6


def _late_call(address: str, release: threading.Event) -> pb.ModelInferResponse:
    """A ModelInfer call whose message is sent only once `release` is set (on the wire a unary
    call is a stream of one message: the server cannot tell them apart)."""
    request = pb.ModelInferRequest(model_name="rf")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([5.1, 3.5, 1.4, 0.2])

    def message():
        release.wait()
        yield request

    with grpc.insecure_channel(address) as channel:
        call = channel.stream_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        return call(message(), timeout=30)


def test_sigterm_after_vanished_clients_and_amid_held_calls_stops_promptly(grpc_start):
    idle = grpc_start()
    t0 = time.perf_counter()
    idle.proc.send_signal(signal.SIGTERM)  # the supervisor only, as the kubelet does
    assert idle.proc.wait(60) == 0
    idle_stop = time.perf_counter() - t0

    srv = grpc_start(BENTOS_GRPC_MESSAGE_TIMEOUT_SECONDS="2")
    # A burst of clients that held calls and left.
    with HeldCalls(srv.address, connections=300, streams=3) as held:
        held.read(0.5)
        assert held.held == 900
    # While the signal comes: 200 more that hold calls and never answer the server's goodbye,
    # and a real call whose message is on its way.
    release = threading.Event()
    with HeldCalls(srv.address, connections=200) as held, ThreadPoolExecutor(1) as pool:
        late = pool.submit(_late_call, srv.address, release)
        held.read(0.5)
        t0 = time.perf_counter()
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        release.set()
        # The call in flight is answered: the stop waits for the calls it has begun ...
        assert late.result(30).outputs[0].name == "label"
        assert srv.proc.wait(60) == 0
        stop = time.perf_counter() - t0
    # ... and no longer than a held call's message timeout (2 s) for those that never come;
    # not grpc's 20 s for a goodbye nor the 25 s grace. Not a timing benchmark: a bound.
    assert stop < idle_stop + 2 + 3, (stop, idle_stop)
    assert _errors(srv) == []
