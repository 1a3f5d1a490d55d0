"""The JSON prediction API: check the request, run the model, build the response.

A plain Starlette app, mounted on the BentoML service (see service.py for why), so that the
error bodies are ours: every client error is a 4xx whose message names the row and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bentos.errors import InputError
from bentos.runners import Runner
from bentos.schema import parse_json
from bentos.serving import openapi, v2
from bentos.serving.batching import Batcher, Overloaded
from bentos.settings import ServingSettings


class RequestTooLarge(Exception):
    pass


@dataclass
class Model:
    """A runner as the API serves it: its route name and its batcher."""

    name: str
    route: str
    runner: Runner
    batcher: Batcher


class Models:
    """What the service hands the API once both models are loaded."""

    def __init__(self, runners: dict[str, tuple[str, Runner]], settings: ServingSettings):
        self.settings = settings
        self.by_name = {
            name: Model(
                name,
                route,
                runner,
                Batcher(
                    runner.predict_proba,
                    max_batch_size=settings.max_batch_size,
                    max_latency_ms=settings.max_latency_ms,
                    inline_rows=runner.inline_rows,
                ),
            )
            for name, (route, runner) in runners.items()
        }
        # Built once: the document depends only on the loaded schemas and the settings.
        self.openapi = openapi.document(
            {name: (m.route, m.runner.schema) for name, m in self.by_name.items()},
            settings.max_rows,
        )


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refusing bodies over `max_bytes` before holding them whole.

    Straight from the ASGI receive channel: Starlette's stream() generator around it cost a
    measurable share of a one-row prediction (BENCHMARKS.md, "Choices")."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestTooLarge(f"request body is {declared} bytes; the limit is {max_bytes}")
    chunks, size, more = [], 0, True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > max_bytes:
            raise RequestTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json(request: Request, max_bytes: int) -> Any:
    body = await read_body(request, max_bytes)
    try:
        return parse_json(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"malformed JSON: {exc}", [(None, None, "malformed JSON")]) from None


def _models(request: Request) -> Models:
    return request.app.state.models


async def _predict(request: Request, name: str) -> Response:
    models = _models(request)
    model = models.by_name[name]
    try:
        body = await read_json(request, models.settings.max_body_bytes)
        if not isinstance(body, dict) or "instances" not in body:
            raise InputError(
                'the body must be a JSON object {"instances": [{feature: value, ...}, ...]}',
                [(None, "instances", "missing")],
            )
        unknown = sorted(set(body) - {"instances"})
        if unknown:
            raise InputError(
                f"unknown top-level field(s) {', '.join(map(repr, unknown))}; only 'instances' is allowed",
                [(None, k, "unknown field") for k in unknown],
            )
        x = model.runner.schema.validate_instances(body["instances"], models.settings.max_rows)
    except RequestTooLarge as exc:
        return _error(413, str(exc))
    except InputError as exc:
        return JSONResponse(exc.to_dict(), status_code=400)
    try:
        proba = await model.batcher(x)
    except Overloaded as exc:
        return _error(503, f"overloaded, retry later: {exc}")
    body = {
        "predictions": model.runner.labels_for(proba),
        # The model's own numbers (float32 for the packed forest and TFLite), unrounded: orjson
        # writes each in its shortest exact form, itself (BENCHMARKS.md, "Choices": orjson);
        # it needs them contiguous, which a batch's slice of rows is.
        "probabilities": proba if proba.flags.c_contiguous else np.ascontiguousarray(proba),
        "model": model.runner.tag,
    }
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


async def predict(request: Request) -> Response:
    return await _predict(request, "rf")


async def predict_edge(request: Request) -> Response:
    return await _predict(request, "tflite")


async def list_models(request: Request) -> Response:
    out = []
    for model in _models(request).by_name.values():
        meta = model.runner.metadata
        out.append(
            {
                "name": model.name,
                "route": model.route,
                "tag": model.runner.tag,
                "schema": model.runner.schema.to_dict(),
                "labels": list(model.runner.schema.labels),
                "metrics": meta.get("metrics", {}),
                "parity": meta.get("parity"),
                "quantization": meta.get("quantization"),
                "backend": getattr(model.runner, "backend", "tflite"),
            }
        )
    return JSONResponse({"models": out})


# -- Open Inference Protocol (V2) REST ------------------------------------------------------------


def _v2_model(request: Request) -> Model:
    models = _models(request)
    name = request.path_params["model"]
    model = models.by_name.get(name)
    if model is None:
        raise v2.V2Error(404, f"unknown model {name!r}; the models are {', '.join(models.by_name)}")
    version = request.path_params.get("version")
    if version is not None and version != v2.version_of(model.runner):
        raise v2.V2Error(
            404,
            f"model {name!r} has no version {version!r}; it serves {v2.version_of(model.runner)!r}",
        )
    return model


def _v2_error(exc: v2.V2Error) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def v2_server_metadata(request: Request) -> Response:
    return JSONResponse(v2.server_metadata())


async def v2_live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def v2_ready(request: Request) -> Response:
    ready = getattr(request.app.state, "models", None) is not None
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def v2_model_metadata(request: Request) -> Response:
    try:
        model = _v2_model(request)
    except v2.V2Error as exc:
        return _v2_error(exc)
    return JSONResponse(v2.model_metadata(model.name, model.runner))


async def v2_model_ready(request: Request) -> Response:
    try:
        model = _v2_model(request)
    except v2.V2Error as exc:
        return _v2_error(exc)
    return JSONResponse({"name": model.name, "ready": True})


async def v2_infer(request: Request) -> Response:
    settings = _models(request).settings
    try:
        model = _v2_model(request)
        body = await read_body(request, settings.max_body_bytes)
        req, binary = v2.decode_rest(body, request.headers.get("inference-header-content-length"))
        name, datatype, shape, data = v2.rest_input(req, binary)
        x = v2.check_features(model.runner, name, datatype, shape, data, settings.max_rows)
        params = req.get("parameters") or {}
        wanted = v2.requested_outputs(
            req.get("outputs"), bool(params.get("binary_data_output", False))
        )
    except RequestTooLarge as exc:
        return _error(413, str(exc))
    except v2.V2Error as exc:
        return _v2_error(exc)
    try:
        proba = await model.batcher(x)
    except Overloaded as exc:
        return _error(503, f"overloaded, retry later: {exc}")
    request_id = req.get("id") if isinstance(req.get("id"), str) else None
    content, headers = v2.encode_rest(
        model.name, v2.version_of(model.runner), request_id, v2.build_outputs(proba, wanted)
    )
    return Response(content, headers=headers)


async def openapi_document(request: Request) -> Response:
    return JSONResponse(_models(request).openapi)


def create_app() -> Starlette:
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/predict_edge", predict_edge, methods=["POST"]),
            Route("/models", list_models, methods=["GET"]),
            Route("/openapi.json", openapi_document, methods=["GET"]),
            Route("/v2", v2_server_metadata, methods=["GET"]),
            Route("/v2/health/live", v2_live, methods=["GET"]),
            Route("/v2/health/ready", v2_ready, methods=["GET"]),
            *(Route(p, v2_model_metadata, methods=["GET"]) for p in (model, versioned)),
            *(Route(p + "/ready", v2_model_ready, methods=["GET"]) for p in (model, versioned)),
            *(Route(p + "/infer", v2_infer, methods=["POST"]) for p in (model, versioned)),
        ],
    )
