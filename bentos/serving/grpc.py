"""gRPC on port 3001: the Open Inference Protocol's `inference.GRPCInferenceService` and the
standard `grpc.health.v1` health service (what Kubernetes gRPC probes call).

    python -m bentos.serving.grpc --port 3001

It runs the two runners itself, in its own process (a second container of the same Pod, from
the same image), with the same validation, batching and responses as the HTTP service; see
docs/grpc.md for why it does not forward to the HTTP service. The protocol's stubs come from
the maintained `tritonclient` package, not from protobuf code of our own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from bentos.errors import BentosError, ExitCode, SettingsError
from bentos.serving import v2
from bentos.serving.app import Model, Models
from bentos.serving.batching import Overloaded
from bentos.serving.runtime import tune_gc
from bentos.settings import GrpcSettings, ServingSettings, load

log = logging.getLogger("bentos.serving.grpc")
SERVICE = "inference.GRPCInferenceService"
_RAW = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
}
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND}


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: Models):
        self.models = models

    async def _model(self, name: str, version: str, context: grpc.aio.ServicerContext) -> Model:
        model = self.models.by_name.get(name)
        if model is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown model {name!r}; the models are {', '.join(self.models.by_name)}",
            )
        served = v2.version_of(model.runner)
        if version and version != served:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {name!r} has no version {version!r}; it serves {served!r}",
            )
        return model

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        await self._model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):
        meta = v2.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(self, request, context):
        model = await self._model(request.name, request.version, context)
        meta = v2.model_metadata(model.name, model.runner)

        def tensors(items):
            return [pb.ModelMetadataResponse.TensorMetadata(**t) for t in items]

        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=tensors(meta["inputs"]),
            outputs=tensors(meta["outputs"]),
        )

    async def ModelConfig(self, request, context):
        # The gRPC metadata message has no parameters: the labels and feature names travel in
        # the model configuration, as Triton's clients expect to find them.
        model = await self._model(request.name, request.version, context)
        meta = v2.model_metadata(model.name, model.runner)
        n_features, n_classes = len(model.runner.schema.features), len(model.runner.schema.labels)
        config = mc.ModelConfig(
            name=model.name,
            platform=meta["platform"],
            max_batch_size=self.models.settings.max_rows,
            input=[mc.ModelInput(name=v2.INPUT, data_type=mc.TYPE_FP32, dims=[n_features])],
            output=[
                mc.ModelOutput(name="label", data_type=mc.TYPE_INT64, dims=[1]),
                mc.ModelOutput(name="probabilities", data_type=mc.TYPE_FP32, dims=[n_classes]),
            ],
            parameters={
                k: mc.ModelParameter(string_value=v) for k, v in meta["parameters"].items()
            },
        )
        return pb.ModelConfigResponse(config=config)

    async def ModelInfer(self, request, context):
        model = await self._model(request.model_name, request.model_version, context)
        try:
            x = self._features(model, request)
            wanted = v2.requested_outputs([{"name": o.name} for o in request.outputs] or None, True)
        except v2.V2Error as exc:
            await context.abort(_CODES[exc.status], exc.message)
        try:
            proba = await model.batcher(x)
        except Overloaded as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"overloaded, retry later: {exc}")
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=v2.version_of(model.runner), id=request.id
        )
        for out in v2.build_outputs(proba, wanted):
            response.outputs.add(name=out.name, datatype=out.datatype, shape=list(out.array.shape))
            response.raw_output_contents.append(
                out.array.astype(out.array.dtype.newbyteorder("<")).tobytes()
            )
        return response

    def _features(self, model: Model, request: pb.ModelInferRequest) -> np.ndarray:
        if len(request.inputs) != 1:
            raise v2.V2Error(
                400,
                f"the request has {len(request.inputs)} inputs; the model takes one, {v2.INPUT!r}",
            )
        tensor = request.inputs[0]
        if request.raw_input_contents:
            raw = request.raw_input_contents[0]
            dtype = _RAW.get(tensor.datatype)
            if dtype is None or len(raw) % dtype.itemsize:
                raise v2.V2Error(
                    400, f"input {tensor.name!r} has datatype {tensor.datatype}; FP32 is required"
                )
            data = np.frombuffer(raw, dtype=dtype)
        else:
            data = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
        return v2.check_features(
            model.runner,
            tensor.name,
            tensor.datatype,
            list(tensor.shape),
            data,
            self.models.settings.max_rows,
        )


def load_models(settings: ServingSettings) -> Models:
    """The same runners, settings and batching as the HTTP service."""
    from bentos.runners import RandomForestRunner, TFLiteRunner

    return Models(
        {
            "rf": (
                "/v2/models/rf/infer",
                RandomForestRunner(settings.rf_model, settings.rf_backend),
            ),
            "tflite": ("/v2/models/tflite/infer", TFLiteRunner(settings.tflite_model)),
        },
        settings,
    )


async def serve(host: str, port: int, grace: float, settings: ServingSettings) -> None:
    # Fails loudly, before the port opens, if a model is missing or changed.
    models = load_models(settings)
    tune_gc(models.settings.gc_gen0_threshold)
    limit = models.settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 64 << 20),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(models), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    # Reflection lets grpcurl-style tools list and call the services without .proto files.
    reflection.enable_server_reflection(
        (
            pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    for name in ("", SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC listening on %s:%d", host, port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Report NOT_SERVING first so probes and balancers stop sending, then let calls in flight end.
    for name in ("", SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load(GrpcSettings)
    except SettingsError as exc:
        log.error("%s", exc)
        return exc.exit_code
    parser = argparse.ArgumentParser(
        prog="python -m bentos.serving.grpc", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--grace",
        type=float,
        default=settings.grace_seconds,
        help="seconds calls in flight get to finish after SIGTERM",
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.grace, settings.serving))
    except BentosError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
