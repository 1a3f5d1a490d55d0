"""gRPC on port 3001: the Open Inference Protocol's `inference.GRPCInferenceService` and the
standard `grpc.health.v1` health service (what Kubernetes gRPC probes call).

    python -m bentos.serving.grpc --port 3001

It runs the two runners itself (a second container of the same Pod, from the same image), with
the same validation and responses as the HTTP service; see docs/grpc.md for why it does not
forward to the HTTP service. The protocol's stubs come from the maintained `tritonclient`
package, not from protobuf code of our own.

Processes: a supervisor forks `--workers` servers (BENTOS_GRPC_WORKERS, 2, as the HTTP service
has two workers) that bind the one port with SO_REUSEPORT, so the kernel spreads connections
over them, and serves their metrics, added up, on the metrics port. Each is a grpc.aio server
on uvloop whose calls go through the models' batchers, as the HTTP service's do
(bentos.serving.core). Why asynchronous: the synchronous `grpc.server` held a thread of its pool
for each call whose message had not arrived, so a few clients that sent headers and part of a
message stopped a worker; here such a call costs a coroutine and is dropped after a deadline
(bentos.serving.grpc_calls, docs/reliability.md). If a worker dies, the supervisor stops the
others and exits with its code, so the container restarts whole rather than serving on with
fewer processes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Sequence

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from bentos import logs
from bentos.errors import BentosError, ExitCode, SettingsError, exit_code
from bentos.recorder import Recorder
from bentos.registry import local_models
from bentos.schema import TENSOR
from bentos.serving import v2
from bentos.serving.core import Core
from bentos.serving.grpc_calls import Calls
from bentos.serving.metrics import Metrics
from bentos.serving.runtime import tune_gc
from bentos.settings import GrpcSettings, ServingSettings, load

# Triton's model configuration names for the protocol's datatypes (BYTES is its TYPE_STRING).
_CONFIG_TYPES = {
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BOOL": "TYPE_BOOL",
    "BYTES": "TYPE_STRING",
    "INT64": "TYPE_INT64",
}

log = logging.getLogger("bentos.serving.grpc")
SERVICE = "inference.GRPCInferenceService"


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: Core):
        self.core = core

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        self.core.model(request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):
        meta = v2.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

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
            input=[
                mc.ModelInput(
                    name=i["name"],
                    data_type=getattr(mc, _CONFIG_TYPES[i["datatype"]]),
                    dims=[n_features] if i["name"] == TENSOR else [1],
                )
                for i in meta["inputs"]
            ],
            output=[
                mc.ModelOutput(
                    name=o["name"],
                    data_type=getattr(mc, _CONFIG_TYPES[o["datatype"]]),
                    dims=[n_classes] if o["name"] == "probabilities" else [1],
                )
                for o in meta["outputs"]
            ],
            parameters={
                k: mc.ModelParameter(string_value=v) for k, v in meta["parameters"].items()
            },
        )
        return pb.ModelConfigResponse(config=config)

    async def ModelInfer(self, request, context):
        model = self.core.model(request.model_name, request.model_version)
        decoded = v2.grpc_request(request)
        unknown: dict[str, int] = {}
        x = v2.features(model.runner.schema, decoded, self.core.settings.max_rows, unknown)
        self.core.counted(model, unknown)
        # Through the model's batcher, as on HTTP: small calls that arrive together share one
        # model call in the event loop, large ones run in a thread, and a call whose client has
        # gone before its turn is skipped.
        proba = await self.core.infer(model, x)
        # The client's x-request-id (or a new one), back in the answer's metadata: logged
        # predictions are joined to their true labels by it.
        rid = dict(context.invocation_metadata() or ()).get("x-request-id") or uuid.uuid4().hex
        await context.send_initial_metadata((("x-request-id", rid),))
        schema = model.runner.schema
        self.core.record(model, rid, lambda: v2.rows(schema, decoded), proba)
        outs = v2.outputs(proba, decoded.outputs, model.runner.schema)
        return v2.grpc_response(model.name, model.version, decoded.id, outs)


def load_models(
    settings: ServingSettings, metrics: Metrics | None = None, log: Recorder | None = None
) -> Core:
    """The same runners, settings, batching and prediction log as the HTTP service."""
    from bentos.runners import RandomForestRunner, TFLiteRunner

    return Core(
        {
            "rf": ("/predict", RandomForestRunner(settings.rf_model, settings.rf_backend)),
            "tflite": ("/predict_edge", TFLiteRunner(settings.tflite_model)),
        },
        settings,
        metrics,
        log,
    )


def _serve_metrics(host: str, port: int, folder: str) -> None:
    """The workers' metrics, added up (prometheus_client's multiprocess mode), on `port`."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    start_http_server(port, addr=host, registry=registry)


def _worker_metrics() -> Metrics:
    """This worker's metrics, written to the supervisor's PROMETHEUS_MULTIPROC_DIR."""
    from prometheus_client import Counter, Gauge, Histogram, values

    # Values go to files in the folder, whatever imported prometheus_client before it was set.
    # The worker never forks, so its pid is read once: by default every update of every value
    # asks the kernel for it, which was a fifth of the GIL time of a call.
    pid = os.getpid()
    values.ValueClass = values.MultiProcessValue(lambda: pid)
    return Metrics(Counter, Histogram, Gauge)


def _worker(host: str, port: int, grace: float, settings: GrpcSettings) -> None:
    # SIGTERM and SIGINT stay blocked (as the supervisor forked it) until the event loop has its
    # handlers: one that comes while the models load waits for them.
    serving = settings.serving
    try:
        # Fails loudly, before the port opens, if a model is missing or changed.
        metrics = _worker_metrics()
        # Made in the worker: its writer thread would not survive the fork. It writes what it
        # holds when the worker exits.
        from bentos.monitoring.predlog import from_settings

        core = load_models(
            serving,
            metrics,
            from_settings("grpc", metrics.prediction_log, metrics.prediction_log_cpu),
        )
    except BentosError as exc:
        log.error("%s", exc)
        sys.exit(exc.exit_code)
    tune_gc(serving.gc_gen0_threshold)
    uvloop.run(_serve(core, host, port, grace, settings))


async def _serve(core: Core, host: str, port: int, grace: float, settings: GrpcSettings) -> None:
    serving = settings.serving
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", serving.max_body_bytes),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(grace * 1000)),
            # What held streams may cost (docs/reliability.md): streams per connection (HTTP/2's
            # SETTINGS_MAX_CONCURRENT_STREAMS), connections per worker, a connection without
            # calls closed after the idle timeout, and one that has not said it speaks HTTP/2
            # within the message timeout.
            ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
            ("grpc.max_allowed_incoming_connections", settings.max_connections),
            ("grpc.max_connection_idle_ms", int(settings.idle_timeout_seconds * 1000)),
            ("grpc.server_handshake_timeout_ms", int(settings.message_timeout_seconds * 1000)),
        ],
    )
    calls = Calls(settings, core.metrics)
    calls.register(
        server,
        pb_grpc.add_GRPCInferenceServiceServicer_to_server,
        InferenceServicer(core),
        admit=True,
    )
    health = health_aio.HealthServicer()
    calls.register(server, health_pb2_grpc.add_HealthServicer_to_server, health, admit=False)
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
    log.info("gRPC listening on %s:%d (worker %d)", host, port, os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    await stop.wait()
    # Report NOT_SERVING first so probes and balancers stop sending, then let calls in flight end.
    for name in ("", SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    # grpc's own graceful stop also waits, up to 20 s (fixed in grpc core), for each client to
    # acknowledge its goodbye, and until the grace ends for streams such as health's Watch: a
    # client that held calls and went silent would hold the stop that long. So it waits only
    # for the calls this server answers, then cuts what remains.
    stopping = asyncio.ensure_future(server.stop(grace))
    await calls.ended(grace)
    await server.stop(None)
    await stopping


def serve(host: str, port: int, grace: float, metrics_port: int, settings: GrpcSettings) -> int:
    """The supervisor: start the workers, serve their metrics, and wait. SIGTERM (or SIGINT)
    goes on to every worker, which drains; a worker that exits on its own stops them all."""
    folder = tempfile.mkdtemp(prefix="bentos-grpc-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # read by the workers' prometheus_client
    # Signals wait until the handlers are in place, here and in each worker (which takes them
    # with sigwait): a SIGTERM at start-up is never lost nor acted on by the wrong process.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    context = multiprocessing.get_context("fork")  # before any gRPC object exists in this process
    workers = [
        context.Process(target=_worker, args=(host, port, grace, settings), name=f"grpc-{i}")
        for i in range(settings.workers)
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.pid is not None and w.exitcode is None:
                os.kill(w.pid, signal.SIGTERM)

    try:
        for w in workers:
            w.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            _serve_metrics(host, metrics_port, folder)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%d: %s", host, metrics_port, exc)
            return ExitCode.IO
        code = ExitCode.OK
        running = {w.sentinel: w for w in workers}
        while running:
            for sentinel in multiprocessing.connection.wait(list(running)):
                w = running.pop(sentinel)
                w.join()
                if stopping:
                    continue
                log.error("gRPC worker %d exited with %s; stopping the others", w.pid, w.exitcode)
                code = w.exitcode if w.exitcode and w.exitcode > 0 else 1
                stop()
        return code
    finally:
        stop()
        for w in workers:
            if w.pid is not None:
                w.join()
        shutil.rmtree(folder, ignore_errors=True)


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
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.workers,
        help="server processes on the one port (BENTOS_GRPC_WORKERS)",
    )
    parser.add_argument(
        "--registry", default=settings.serving.registry, help="pull its champions, serve them"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    settings = settings.model_copy(update={"workers": args.workers})
    try:  # a missing model is one line and exit 4 here, not a worker's traceback
        models = (settings.serving.rf_model, settings.serving.tflite_model)
        for line in local_models(models, args.registry):
            log.info("%s", line)
    except (BentosError, OSError) as exc:
        log.error("%s", exc)
        return exit_code(exc)
    return serve(args.host, args.port, args.grace, args.metrics_port, settings)


if __name__ == "__main__":
    sys.exit(main())
