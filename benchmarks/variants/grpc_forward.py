"""Variant for the gRPC placement probe: a gRPC server that forwards ModelInfer to the HTTP
service's V2 route over loopback instead of running the models itself. Benchmark only."""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp
import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc


class Forwarder(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, http_url: str):
        self.url = http_url
        self.session: aiohttp.ClientSession | None = None

    async def ModelInfer(self, request, context):
        if self.session is None:
            self.session = aiohttp.ClientSession()
        tensor = request.inputs[0]
        raw = request.raw_input_contents[0]
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": tensor.name,
                        "datatype": tensor.datatype,
                        "shape": list(tensor.shape),
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        async with self.session.post(
            f"{self.url}/v2/models/{request.model_name}/infer",
            data=head + raw,
            headers={"Inference-Header-Content-Length": str(len(head))},
        ) as resp:
            body = await resp.read()
            if resp.status != 200:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, body.decode())
            n = int(resp.headers["Inference-Header-Content-Length"])
        meta, blob = json.loads(body[:n]), body[n:]
        response = pb.ModelInferResponse(
            model_name=meta["model_name"], model_version=meta["model_version"]
        )
        offset = 0
        for out in meta["outputs"]:
            size = out["parameters"]["binary_data_size"]
            response.outputs.add(name=out["name"], datatype=out["datatype"], shape=out["shape"])
            response.raw_output_contents.append(blob[offset : offset + size])
            offset += size
        return response


async def main(port: int, http_url: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Forwarder(http_url), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http", required=True)
    args = parser.parse_args()
    np.seterr(all="ignore")
    asyncio.run(main(args.port, args.http))
