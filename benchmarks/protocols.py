"""The protocols side by side: the JSON API, V2 REST (JSON and binary tensors) and V2 gRPC,
each loaded by the same kind of load generator, on this machine. Loopback only.

    BENTOML_HOME=/path/with/synthetic/models .venv/bin/python -m benchmarks.protocols --repeat 3

Every target is the forest (`rf`), loaded twice, by two generators of the same closed loop
(`benchmarks.loadgen`), each used for every protocol: Python asyncio clients sending prebuilt
request bytes, one connection each (aiohttp for HTTP, grpc.aio for gRPC), and h2load (C, one
thread, HTTP/1.1 or HTTP/2: the `_h2load` targets), which costs the shared cores far less per
request, so that it measures the servers rather than the generator. The HTTP targets share one
`bentoml serve .` (2 workers); the gRPC server runs as shipped (`grpc`: its default workers)
and with one worker (`grpc_1w_h2load`: what the second adds). Only one server runs while it is
measured. Prints one table (medians over --repeat runs, each cell also as a ratio to REST JSON
under the same generator at the same rows and clients) and writes every run to --json.
"""

from __future__ import annotations

import json
import statistics

import numpy as np

from benchmarks import loadgen
from benchmarks.online import _bodies
from benchmarks.servers import Process, bentoml_serve, grpc_serve

HTTP_TARGETS = (
    "rest_json",
    "v2_json",
    "v2_binary",
    "rest_json_h2load",
    "v2_json_h2load",
    "v2_binary_h2load",
)
# Each gRPC target with the server it needs: as shipped, or with one worker.
GRPC_TARGETS = {"grpc": "grpc", "grpc_h2load": "grpc", "grpc_1w_h2load": "grpc_1w"}
TARGETS = HTTP_TARGETS + tuple(GRPC_TARGETS)
INFER = "/inference.GRPCInferenceService/ModelInfer"


def baseline(target: str) -> str:
    """REST JSON under the same generator."""
    return "rest_json_h2load" if target.endswith("_h2load") else "rest_json"


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


def _grpc_frame(message: bytes) -> bytes:
    """A gRPC message on the wire: not compressed, its length, itself."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _answer_bytes(servers: dict[str, Process], bodies) -> dict[str, int]:
    """The length of one real answer's body on each protocol (gRPC: framed), for h2load's check
    that answers came back, not errors."""
    import grpc
    import httpx

    instances, v2_json, x, _ = bodies
    sizes = {}
    if "service" in servers:
        url = servers["service"].url
        body, headers = v2_binary_body(x)
        for name, path, content, hdrs in (
            ("rest_json", "/predict", instances, {"content-type": "application/json"}),
            ("v2_json", "/v2/models/rf/infer", v2_json, {"content-type": "application/json"}),
            ("v2_binary", "/v2/models/rf/infer", body, headers),
        ):
            reply = httpx.post(url + path, content=content, headers=hdrs)
            reply.raise_for_status()
            sizes[name] = len(reply.content)
    if "grpc" in servers:
        with grpc.insecure_channel(servers["grpc"].address) as channel:
            call = channel.unary_unary(INFER)  # bytes in, bytes out
            sizes["grpc"] = len(_grpc_frame(call(grpc_body(x), timeout=10)))
    return sizes


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
    env = {"BENTOS_GRPC_WORKERS": "1"} if kind == "grpc_1w" else None
    return {"grpc": grpc_serve(env).wait_ready()}


def cell(
    target: str, servers, bodies, clients: int, duration: float, answers: dict[str, int]
) -> loadgen.Result:
    instances, v2_json, x, _ = bodies
    rows = x.shape[0]
    protocol = "grpc" if target in GRPC_TARGETS else target.removesuffix("_h2load")
    if protocol == "grpc":
        address = servers["grpc"].address
        if target == "grpc":
            return loadgen.run_grpc_raw(
                address, INFER, grpc_body(x), concurrency=clients, duration=duration, rows=rows
            )
        return loadgen.run_h2load(
            f"http://{address}{INFER}",
            _grpc_frame(grpc_body(x)),
            headers={"content-type": "application/grpc", "te": "trailers"},
            concurrency=clients,
            duration=duration,
            rows=rows,
            http2=True,
            answer_bytes=answers["grpc"] // 2,
        )
    path, body, headers = {
        "rest_json": ("/predict", instances, {"content-type": "application/json"}),
        "v2_json": ("/v2/models/rf/infer", v2_json, {"content-type": "application/json"}),
        "v2_binary": ("/v2/models/rf/infer", *v2_binary_body(x)),
    }[protocol]
    url = servers["service"].url + path
    if target.endswith("_h2load"):
        return loadgen.run_h2load(
            url,
            body,
            headers=headers,
            concurrency=clients,
            duration=duration,
            rows=rows,
            answer_bytes=answers[protocol] // 2,
        )
    return loadgen.run(
        url, body, headers=headers, concurrency=clients, duration=duration, rows=rows
    )


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
        *(
            (kind, [t for t in targets if GRPC_TARGETS.get(t) == kind])
            for kind in dict.fromkeys(GRPC_TARGETS.values())
        ),
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
                    answers = _answer_bytes(servers, bodies[rows])
                    for clients in args.clients:
                        for target in members:
                            r = cell(target, servers, bodies[rows], clients, args.duration, answers)
                            results.setdefault((target, rows, clients), []).append(r)
                            loadgen.print_run(repeat, args.repeat, target, rows, clients, r)
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
        base = results.get((baseline(target), rows, clients))
        row["x rest_json"] = round(row["req/s"] / med(base, "req/s"), 2) if base else None
        table.append({"target": target, "rows": rows, "clients": clients, **row})
    return table


if __name__ == "__main__":
    main()
