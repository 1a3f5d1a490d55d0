"""The protocols side by side: the JSON API, V2 REST (JSON and binary tensors) and V2 gRPC,
each loaded by the same kind of load generator, on this machine. Loopback only.

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.protocols --repeat 3

Every target is the forest (`rf`), loaded by `benchmarks.loadgen`'s closed loop: Python
asyncio clients sending prebuilt request bytes, one connection each (aiohttp for HTTP,
grpc.aio for gRPC), so the generator's own cost per request is of the same kind everywhere.
`rest_json_wrk` is the JSON API again under wrk, to check the Python generator against an
independent one. The HTTP targets share one `bentoml serve .` (2 workers); the gRPC server is
one process (`grpc`) and, for equal process counts, two on one port (`grpc_x2`: SO_REUSEPORT,
the kernel spreading the clients' connections). Only one server runs while it is measured.
Prints one table (medians over --repeat runs, each cell also as a ratio to `rest_json` at the
same rows and clients) and writes every run to --json.
"""

from __future__ import annotations

import json
import statistics
import sys

import numpy as np

from benchmarks import loadgen
from benchmarks.online import _bodies
from benchmarks.servers import Process, bentoml_serve, free_port, grpc_serve

HTTP_TARGETS = ("rest_json", "rest_json_wrk", "v2_json", "v2_binary")
GRPC_TARGETS = ("grpc", "grpc_x2")
TARGETS = HTTP_TARGETS + GRPC_TARGETS
BASELINE = "rest_json"
INFER = "/inference.GRPCInferenceService/ModelInfer"


def v2_binary_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The body tritonclient.http sends by default: the JSON header, then the raw tensor, and
    every output asked for as binary."""
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([inp])
    headers = {"content-type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return body, headers


def grpc_body(x: np.ndarray, model: str = "rf") -> bytes:
    """A ModelInferRequest as tritonclient.grpc builds it: raw little-endian contents."""
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    return request.SerializeToString()


def _check_answers(servers: dict[str, Process], x: np.ndarray) -> None:
    """Every protocol answers the same labels for the same rows before it is loaded: a fast
    wrong answer is no figure."""
    import httpx
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    labels = []
    if "service" in servers:
        url = servers["service"].url
        body, headers = v2_binary_body(x)
        reply = httpx.post(url + "/v2/models/rf/infer", content=body, headers=headers)
        reply.raise_for_status()
        n = int(reply.headers["inference-header-content-length"])
        result = httpclient.InferResult.from_response_body(reply.content, header_length=n)
        labels.append(result.as_numpy("label"))
    if "grpc" in servers:
        client = grpcclient.InferenceServerClient(servers["grpc"].address)
        inp = grpcclient.InferInput("features", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        labels.append(client.infer("rf", [inp]).as_numpy("label"))
        client.close()
    for other in labels[1:]:
        np.testing.assert_array_equal(other, labels[0])


def start(kind: str) -> dict[str, Process]:
    if kind == "http":
        return {"service": bentoml_serve(".").wait_ready()}
    port = free_port()
    processes = 2 if kind == "grpc_x2" else 1
    started = [grpc_serve(port=port) for _ in range(processes)]
    for p in started:
        p.wait_ready()
    return {"grpc": started[0], **{f"grpc{i}": p for i, p in enumerate(started[1:], 1)}}


def cell(target: str, servers, bodies, clients: int, duration: float) -> loadgen.Result:
    instances, v2_json, x, _ = bodies
    rows = x.shape[0]
    if target in GRPC_TARGETS:
        return loadgen.run_grpc_raw(
            servers["grpc"].address,
            INFER,
            grpc_body(x),
            concurrency=clients,
            duration=duration,
            rows=rows,
        )
    url = servers["service"].url
    if target == "rest_json_wrk":
        return loadgen.run_wrk(
            url + "/predict", instances, concurrency=clients, duration=duration, rows=rows
        )
    if target == "v2_binary":
        body, headers = v2_binary_body(x)
        return loadgen.run(
            url + "/v2/models/rf/infer",
            body,
            headers=headers,
            concurrency=clients,
            duration=duration,
            rows=rows,
        )
    path, body = {
        "rest_json": ("/predict", instances),
        "v2_json": ("/v2/models/rf/infer", v2_json),
    }[target]
    return loadgen.run(url + path, body, concurrency=clients, duration=duration, rows=rows)


def main() -> None:
    args = loadgen.grid_args(TARGETS, [1, 16])
    targets = args.targets

    from bentos.models import open_model
    from bentos.settings import ModelSettings, load

    schema = open_model(load(ModelSettings).rf_model).schema
    bodies = {rows: _bodies(schema, rows) for rows in args.rows}
    # One server (or server pair) up at a time; each measures its targets, then stops.
    groups: list[tuple[str, list[str]]] = [
        ("http", [t for t in targets if t in HTTP_TARGETS]),
        *((t, [t]) for t in GRPC_TARGETS if t in targets),
    ]
    results: dict[tuple[str, int, int], list[loadgen.Result]] = {}
    for repeat in range(args.repeat):
        for kind, members in groups:
            if not members:
                continue
            servers = start(kind)
            try:
                _check_answers(servers, bodies[args.rows[-1]][2])
                for rows in args.rows:
                    for clients in args.clients:
                        for target in members:
                            r = cell(target, servers, bodies[rows], clients, args.duration)
                            results.setdefault((target, rows, clients), []).append(r)
                            print(
                                f"run {repeat + 1}/{args.repeat} {target:13} rows={rows:<3} "
                                f"clients={clients:<3} {r.rps:8.1f} req/s p99 {r.pct(99):7.2f} ms "
                                f"errors {r.errors}",
                                file=sys.stderr,
                            )
            finally:
                for srv in servers.values():
                    srv.stop()

    table = summarize(results)
    print(
        f"\n{'target':13} {'rows':>4} {'clients':>7} {'req/s':>9} {'rows/s':>10} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6} {'x rest_json':>11}"
    )
    for row in table:
        print(
            f"{row['target']:13} {row['rows']:>4} {row['clients']:>7} {row['req/s']:>9.1f} "
            f"{row['rows/s']:>10.1f} {row['p50 ms']:>8.2f} {row['p99 ms']:>8.2f} "
            f"{row['errors']:>6} {row['x rest_json'] or '':>11}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "table": table,
                    "runs": {
                        f"{t}/{r}/{c}": [x.row() for x in rs] for (t, r, c), rs in results.items()
                    },
                },
                indent=2,
            )
        )


def summarize(results: dict[tuple[str, int, int], list[loadgen.Result]]) -> list[dict]:
    def med(rs: list[loadgen.Result], key: str) -> float:
        return statistics.median(r.row()[key] for r in rs)

    def order(key: tuple[str, int, int]) -> tuple[int, int, int]:
        return key[1], key[2], TARGETS.index(key[0])

    table = []
    for key in sorted(results, key=order):
        target, rows, clients = key
        rs = results[key]
        row = {k: med(rs, k) for k in ("req/s", "rows/s", "p50 ms", "p90 ms", "p99 ms")}
        row["errors"] = sum(r.errors for r in rs)
        base = results.get((BASELINE, rows, clients))
        row["x rest_json"] = round(row["req/s"] / med(base, "req/s"), 2) if base else None
        table.append({"target": target, "rows": rows, "clients": clients, **row})
    return table


if __name__ == "__main__":
    main()
