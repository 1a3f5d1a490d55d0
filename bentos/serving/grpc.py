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
import time
import uuid
from collections.abc import Coroutine, Sequence
from functools import partial
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from bentos import logs
from bentos.errors import BentosError, ClientError, ExitCode, SettingsError
from bentos.schema import TENSOR
from bentos.serving import v2
from bentos.serving.core import Core
from bentos.serving.metrics import Metrics
from bentos.serving.runtime import tune_gc
from bentos.settings import GrpcSettings, ServingSettings, load

log = logging.getLogger("bentos.serving.grpc")
SERVICE = "inference.GRPCInferenceService"
# The error family (bentos.errors.ClientError) to gRPC status codes, once.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
_STATUS = {code: status for status, code in _CODES.items()}


def _rpc(method):
    """Map the error family once, and count and time every call (by RPC name) when metrics are
    on; an unexpected error is logged and answered INTERNAL, never dropped."""

    async def call(self, request, context):
        t0 = time.perf_counter()
        status = 200
        try:
            return await method(self, request, context)
        except ClientError as exc:
            status = exc.status
            await context.abort(
                _CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message
            )
        except grpc.aio.AbortError:
            raise
        except Exception:
            status = 500
            metadata = dict(context.invocation_metadata() or ())
            request_id = metadata.get("x-request-id") or uuid.uuid4().hex
            log.exception(
                "%s failed",
                method.__name__,
                extra={
                    "event": "request_failed",
                    "request_id": request_id,
                    "model": getattr(request, "model_name", None) or None,
                },
            )
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error (request id {request_id}); it is logged on the server",
            )
        finally:
            if self.core.metrics is not None:
                seconds = time.perf_counter() - t0
                self.core.metrics.observe("grpc", method.__name__, status, seconds)

    call.__name__ = method.__name__
    return call


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: Core):
        self.core = core

    @_rpc
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    @_rpc
    async def ModelReady(self, request, context):
        self.core.model(request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    @_rpc
    async def ServerMetadata(self, request, context):
        meta = v2.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    @_rpc
    async def ModelMetadata(self, request, context):
        meta = v2.model_metadata(self.core.model(request.name, request.version))

        def tensors(items):
            return [pb.ModelMetadataResponse.TensorMetadata(**t) for t in items]

        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=tensors(meta["inputs"]),
            outputs=tensors(meta["outputs"]),
        )

    @_rpc
    async def ModelConfig(self, request, context):
        # The gRPC metadata message has no parameters: the labels and feature names travel in
        # the model configuration, as Triton's clients expect to find them.
        model = self.core.model(request.name, request.version)
        meta = v2.model_metadata(model)
        n_features, n_classes = len(model.runner.schema.features), len(model.runner.schema.labels)
        config = mc.ModelConfig(
            name=model.name,
            platform=meta["platform"],
            max_batch_size=self.core.settings.max_rows,
            input=[mc.ModelInput(name=TENSOR, data_type=mc.TYPE_FP32, dims=[n_features])],
            output=[
                mc.ModelOutput(name="label", data_type=mc.TYPE_INT64, dims=[1]),
                mc.ModelOutput(name="probabilities", data_type=mc.TYPE_FP32, dims=[n_classes]),
            ],
            parameters={
                k: mc.ModelParameter(string_value=v) for k, v in meta["parameters"].items()
            },
        )
        return pb.ModelConfigResponse(config=config)

    @_rpc
    async def ModelInfer(self, request, context):
        model = self.core.model(request.model_name, request.model_version)
        decoded = v2.grpc_request(request)
        x = v2.features(model.runner.schema, decoded, self.core.settings.max_rows)
        proba = await self.core.infer(model, x)
        outs = v2.outputs(proba, decoded.outputs)
        return v2.grpc_response(model.name, model.version, decoded.id, outs)


def load_models(settings: ServingSettings, metrics: Metrics | None = None) -> Core:
    """The same runners, settings and batching as the HTTP service."""
    from bentos.runners import RandomForestRunner, TFLiteRunner

    return Core(
        {
            "rf": ("/predict", RandomForestRunner(settings.rf_model, settings.rf_backend)),
            "tflite": ("/predict_edge", TFLiteRunner(settings.tflite_model)),
        },
        settings,
        metrics,
    )


def _metrics(host: str, port: int) -> Metrics:
    """This process's metrics, in a registry of its own served on `port` (/metrics)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

    registry = CollectorRegistry()
    start_http_server(port, addr=host, registry=registry)
    return Metrics(
        partial(Counter, registry=registry),
        partial(Histogram, registry=registry),
        partial(Gauge, registry=registry),
    )


async def serve(
    host: str, port: int, grace: float, metrics_port: int, settings: ServingSettings
) -> None:
    # Fails loudly, before the port opens, if a model is missing or changed.
    core = load_models(settings, _metrics(host, metrics_port))
    tune_gc(settings.gc_gen0_threshold)
    limit = settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 64 << 20),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core), server)
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


def _run(main: Coroutine[Any, Any, None]) -> None:
    """On uvloop where it is installed (the Bento has it, for uvicorn): grpc.aio's calls cost
    less on it (BENCHMARKS.md, "Protocols, side by side")."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    logs.configure("grpc")
    try:
        settings = load(GrpcSettings)
    except SettingsError as exc:
        log.error("%s", exc)
        return exc.exit_code
    parser = argparse.ArgumentParser(
        prog="python -m bentos.serving.grpc",
        description=__doc__.splitlines()[0],
        epilog="example (`bentos grpc` is the same command):\n"
        "  bentos grpc --port 3001 --metrics-port 3002",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--grace",
        type=float,
        default=settings.grace_seconds,
        help="seconds calls in flight get to finish after SIGTERM",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=settings.metrics_port, help="Prometheus /metrics"
    )
    args = parser.parse_args(argv)
    try:
        _run(serve(args.host, args.port, args.grace, args.metrics_port, settings.serving))
    except BentosError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
