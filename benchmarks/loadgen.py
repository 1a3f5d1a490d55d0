"""Closed-loop load generators for loopback benchmarks: HTTP (aiohttp, wrk or h2load) and gRPC
(grpc.aio or h2load).

Each of `concurrency` clients sends its next request as soon as the previous answer arrives,
until `duration` seconds or `max_requests` requests, whichever comes first. `run` (HTTP) and
`run_grpc_raw` (gRPC) are the same design in the same asyncio loop: prebuilt request bytes,
one connection per client, the answer read whole and not decoded, so that the generator's own
cost per request is of the same kind for every protocol. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import numpy as np


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    rows_per_request: int
    latencies_ms: np.ndarray
    statuses: dict[int, int]
    percentiles: dict[float, float] | None = None  # when the generator reports only these

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows_per_request

    def pct(self, q: float) -> float:
        if self.percentiles is not None:
            return self.percentiles[q]
        if not len(self.latencies_ms):
            return float("nan")
        return float(np.percentile(self.latencies_ms, q))

    def row(self) -> dict[str, float]:
        return {
            "req/s": round(self.rps, 1),
            "rows/s": round(self.rows_per_s, 1),
            "p50 ms": round(self.pct(50), 2),
            "p90 ms": round(self.pct(90), 2),
            "p99 ms": round(self.pct(99), 2),
            "errors": self.errors,
        }


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not (host in {"localhost", "::1"} or host.startswith("127.")):
        raise ValueError(f"load is only ever sent to loopback addresses, not {host!r}")


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The collector off while a cell runs: its pauses in the generator would show as the
    server's latency (a cell's garbage is a few MB)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _run(url, body, headers, concurrency, duration, max_requests, rows, warmup):
    _check_loopback(url)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    sent = 0
    bodies = itertools.cycle(body if isinstance(body, list) else [body])
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> tuple[int, float]:
            t0 = time.perf_counter()
            async with session.post(url, data=next(bodies), headers=headers) as resp:
                await resp.read()
                return resp.status, (time.perf_counter() - t0) * 1000

        # Warm-up: open the connections and let the server settle; not counted.
        end_warm = time.perf_counter() + warmup
        while time.perf_counter() < end_warm:
            await asyncio.gather(*(one() for _ in range(concurrency)), return_exceptions=True)

        async def client() -> None:
            nonlocal errors, sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                try:
                    status, ms = await one()
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(ms)
                else:
                    errors += 1

        # The clock starts after the collection: in a large process (the test suite's) it took
        # the whole of a 1 s cell, which then sent nothing.
        with _no_gc():
            start = time.perf_counter()
            deadline = start + duration
            await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return Result(len(latencies), errors, seconds, rows, np.array(latencies), statuses)


def run(
    url: str,
    body: bytes | list[bytes],
    *,
    concurrency: int,
    duration: float = 10.0,
    max_requests: int = 1_000_000,
    rows: int = 1,
    headers: dict[str, str] | None = None,
    warmup: float = 1.0,
) -> Result:
    """A closed loop of `concurrency` clients; a list of bodies is sent in turn."""
    headers = headers or {"content-type": "application/json"}
    return asyncio.run(_run(url, body, headers, concurrency, duration, max_requests, rows, warmup))


async def _run_grpc(address, model, x, concurrency, duration, max_requests, warmup):
    import tritonclient.grpc.aio as tgrpc

    _check_loopback("http://" + address)
    latencies: list[float] = []
    errors = 0
    sent = 0
    client = tgrpc.InferenceServerClient(address)
    inp = tgrpc.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)

    async def one() -> float:
        t0 = time.perf_counter()
        await client.infer(model, [inp])
        return (time.perf_counter() - t0) * 1000

    end_warm = time.perf_counter() + warmup
    while time.perf_counter() < end_warm:
        await asyncio.gather(*(one() for _ in range(concurrency)), return_exceptions=True)
    start = time.perf_counter()
    deadline = start + duration

    async def worker() -> None:
        nonlocal errors, sent
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            try:
                latencies.append(await one())
            except Exception:  # any RPC failure is an error of this cell
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    await client.close()
    ok = len(latencies)
    return Result(ok, errors, seconds, x.shape[0], np.array(latencies), {0: ok})


def run_grpc(
    address: str,
    model: str,
    x: np.ndarray,
    *,
    concurrency: int,
    duration: float = 10.0,
    max_requests: int = 1_000_000,
    warmup: float = 1.0,
) -> Result:
    """The same closed loop over gRPC (tritonclient's asyncio client): ModelInfer on `model`."""
    return asyncio.run(_run_grpc(address, model, x, concurrency, duration, max_requests, warmup))


async def _run_grpc_raw(address, method, body, concurrency, duration, max_requests, warmup):
    import grpc

    _check_loopback("http://" + address)
    latencies: list[float] = []
    errors = 0
    sent = 0
    # One channel per client, each on its own TCP connection (no shared subchannel pool), as
    # the HTTP generators hold one keep-alive connection per client: the server sees the same
    # number of connections, and several server processes on one SO_REUSEPORT port share them.
    channels = [
        grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_receive_message_length", -1),
            ],
        )
        for _ in range(concurrency)
    ]
    # No serializers: the prebuilt request bytes go out as they are, the answer comes back as
    # bytes, as aiohttp's read() of an HTTP body.
    calls = [ch.unary_unary(method) for ch in channels]

    async def one(call) -> float:
        t0 = time.perf_counter()
        await call(body, timeout=60)
        return (time.perf_counter() - t0) * 1000

    end_warm = time.perf_counter() + warmup
    while time.perf_counter() < end_warm:
        await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)

    async def client(call) -> None:
        nonlocal errors, sent
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            try:
                latencies.append(await one(call))
            except grpc.aio.AioRpcError:
                errors += 1

    with _no_gc():  # the clock starts after the collection, as in _run
        start = time.perf_counter()
        deadline = start + duration
        await asyncio.gather(*(client(c) for c in calls))
    seconds = time.perf_counter() - start
    for ch in channels:
        await ch.close()
    ok = len(latencies)
    return Result(ok, errors, seconds, 0, np.array(latencies), {0: ok})


def run_grpc_raw(
    address: str,
    method: str,
    body: bytes,
    *,
    concurrency: int,
    duration: float = 10.0,
    max_requests: int = 1_000_000,
    rows: int = 1,
    warmup: float = 1.0,
) -> Result:
    """The closed loop of `run`, over gRPC (grpc.aio): `body`, a serialized request message,
    sent to `method` (`/package.Service/Method`) again and again."""
    result = asyncio.run(
        _run_grpc_raw(address, method, body, concurrency, duration, max_requests, warmup)
    )
    result.rows_per_request = rows
    return result


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- One body per line: one line is sent every time; several are sent in turn.
local bodies = {}
for line in io.lines(os.getenv("BENTOS_WRK_BODY")) do bodies[#bodies + 1] = line end
wrk.body = bodies[1]
if #bodies > 1 then
  local i = 0
  request = function()
    i = i % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[i])
  end
end
done = function(summary, latency, requests)
  io.write(string.format("BENTOS %d %d %d %d %d %f %f %f %f\\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.duration, latency.mean, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), 0))
end
"""


def run_wrk(
    url: str,
    body: bytes | list[bytes],
    *,
    concurrency: int,
    duration: float = 10.0,
    rows: int = 1,
    warmup: float = 1.0,
) -> Result:
    """The same closed loop driven by wrk (C, one thread): far less client CPU than Python, so
    the server, not the load generator, is what is measured. Needs `wrk` on PATH. A list of
    bodies (single-line JSON each) is sent in turn, as traffic whose rows differ."""
    import os
    import subprocess
    import tempfile

    _check_loopback(url)
    with tempfile.TemporaryDirectory() as tmp:
        script, payload = os.path.join(tmp, "post.lua"), os.path.join(tmp, "body.json")
        with open(script, "w") as fh:
            fh.write(_WRK_SCRIPT)
        bodies = body if isinstance(body, list) else [body]
        if any(b"\n" in b for b in bodies):
            raise ValueError("wrk bodies are read one per line: serialize them without newlines")
        with open(payload, "wb") as fh:
            fh.write(b"\n".join(bodies) + b"\n")
        env = {**os.environ, "BENTOS_WRK_BODY": payload}

        def wrk(seconds: float) -> str:
            return subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{concurrency}",
                    f"-d{max(1, round(seconds))}s",
                    "--timeout",
                    "30s",
                    "-s",
                    script,
                    url,
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        if warmup:
            wrk(warmup)
        line = next(x for x in wrk(duration).splitlines() if x.startswith("BENTOS "))
    n, sock_err, status_err, dur_us, _mean, p50, p90, p99, _ = (float(v) for v in line.split()[1:])
    ok = int(n - status_err)
    # wrk reports percentiles, not samples: keep them as a three-point distribution.
    result = Result(ok, int(sock_err + status_err), dur_us / 1e6, rows, np.array([]), {200: ok})
    result.percentiles = {50: p50 / 1000, 90: p90 / 1000, 99: p99 / 1000}
    return result


def run_h2load(
    url: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    concurrency: int,
    duration: float = 10.0,
    rows: int = 1,
    warmup: float = 1.0,
    http2: bool = False,
    answer_bytes: int = 1,
) -> Result:
    """The same closed loop driven by h2load (nghttp2's, C, one thread): one native generator for
    both transports, HTTP/1.1 (`http2=False`) and HTTP/2 without TLS, which is what gRPC rides on
    (`http2=True`, with the gRPC framing in `body`). One connection per client, one request in
    flight on each. Needs `h2load` on PATH (Debian: nghttp2-client).

    A request counts as answered when its status is 2xx and, on average, at least
    `answer_bytes` of body came back per request: a gRPC error is an HTTP 200 with no body
    (its status is in the trailers, which h2load does not read), so the bytes tell them apart."""
    import os
    import re
    import shutil
    import subprocess
    import tempfile

    _check_loopback(url)
    if shutil.which("h2load") is None:
        raise RuntimeError("h2load is not on PATH: apt-get install nghttp2-client")
    with tempfile.TemporaryDirectory() as tmp:
        payload, log = os.path.join(tmp, "body"), os.path.join(tmp, "log")
        with open(payload, "wb") as fh:
            fh.write(body)
        args = ["h2load", "-t1", f"-c{concurrency}", "-m1", "-D", f"{duration:g}"]
        args += ["--warm-up-time", f"{warmup:g}", "-d", payload, "--log-file", log]
        for name, value in (headers or {}).items():
            args += ["-H", f"{name}: {value}"]
        if not http2:
            args.append("--h1")
        out = subprocess.run(
            [*args, url], capture_output=True, text=True, check=True, timeout=duration + 60
        ).stdout
        # Each line: start (us), status, latency (us); the measured phase only.
        samples = np.loadtxt(log, dtype=np.int64, ndmin=2)
    counts = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", out).groups()
    statuses = [
        int(v)
        for v in re.search(
            r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out
        ).groups()
    ]
    data = int(re.search(r"traffic: .*?, [^,]*\((\d+)\) data", out).group(1))
    ok = statuses[0] if data >= statuses[0] * answer_bytes else 0
    errors = statuses[0] - ok + sum(statuses[1:]) + int(counts[1]) + int(counts[2])
    latencies = samples[:, 2] / 1000 if len(samples) else np.array([])
    return Result(ok, errors, duration, rows, latencies, {200: ok})


def print_run(repeat: int, repeats: int, target: str, rows: int, clients: int, r: Result) -> None:
    """One cell's progress line on stderr, as every grid benchmark prints it."""
    print(
        f"run {repeat + 1}/{repeats} {target:13} rows={rows:<3} clients={clients:<3} "
        f"{r.rps:8.1f} req/s p99 {r.pct(99):7.2f} ms errors {r.errors}",
        file=sys.stderr,
    )


def grid_args(allowed: tuple[str, ...], clients: list[int]) -> argparse.Namespace:
    """The command line of a benchmark over targets x rows x clients (benchmarks.online,
    benchmarks.protocols): `args.targets` is the list asked for, each one of `allowed`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", default=",".join(allowed))
    parser.add_argument("--clients", type=int, nargs="+", default=clients)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(allowed)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; allowed: {', '.join(allowed)}")
    return args
