"""The HTTP transport: the JSON API, the Open Inference Protocol's REST routes, /models, the
OpenAPI document and /metrics. Each route decodes, calls the inference core (bentos.serving.core)
and encodes; the error family is mapped to a status and a JSON body once, in `_route`.

A plain Starlette app, reached through bentos.serving.middleware.Routes ahead of BentoML's own
router (docs/service-design.md has why and the figures): the error bodies are ours, and every
client error is a 4xx whose message names the row and field.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from bentos.errors import ClientError, InputError
from bentos.models import REPORT_PAGE
from bentos.schema import parse_json
from bentos.serving import openapi, v2
from bentos.serving.core import REPORT_MEDIA, Core, ServedModel
from bentos.serving.metrics import latest_bentoml

log = logging.getLogger("bentos.serving")
Handler = Callable[[Request], Awaitable[Response]]


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _route(handler: Handler) -> Handler:
    """The error family to its status and JSON body, and anything else to a JSON 500 (logged:
    a 500 is a bug, never a client's doing)."""

    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientError as exc:
            return json_response(exc.to_dict(), exc.status)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception:
            # The client's request id (or a new one), in the log line and in the answer, so that
            # one can be found from the other.
            rid = request_id(request)
            log.exception(
                "%s %s failed",
                request.method,
                request.url.path,
                extra={
                    "event": "request_failed",
                    "request_id": rid,
                    "model": request.path_params.get("model"),
                },
            )
            body = {"error": "internal error; it is logged on the server", "request_id": rid}
            return json_response(body, 500, {"x-request-id": rid})

    return answer


def _core(request: Request) -> Core:
    return request.app.state.core


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refusing bodies over `max_bytes` (413) before holding them whole.

    Straight from the ASGI receive channel: Starlette's stream() generator around it cost a
    measurable share of a one-row prediction (BENCHMARKS.md, "Choices")."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ClientError(413, f"request body is {declared} bytes; the limit is {max_bytes}")
    chunks, size, more = [], 0, True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > max_bytes:
            raise ClientError(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def request_id(request: Request) -> str:
    """The client's x-request-id, or a new one: logged predictions are joined to their true
    labels by it, and the answer carries it back in the same header."""
    return request.headers.get("x-request-id") or uuid.uuid4().hex


async def predict_json(
    core: Core, model: ServedModel, body: bytes, rid: str, spread: bool = False
) -> Response:
    """The JSON API: {"instances": [...]} in, predictions and probabilities out (a
    regression: predictions, and with `spread` the forest's trees' spread per row)."""
    # Refused before the body is read into rows: nothing it holds could make it answerable.
    if spread and not (model.runner.schema.regression and model.runner.spread):
        raise InputError(
            f"spread: only a regression forest's answers have one (its trees' spread); "
            f"model {model.name!r} is a {model.runner.schema.task} "
            f"{'forest' if model.runner.spread else 'network'}",
            [(None, "spread", "not available")],
        )
    unknown: dict[str, int] = {}
    parsed = parse_json(body)
    x = model.runner.schema.validate_body(parsed, core.settings.max_rows, unknown)
    core.counted(model, unknown)
    proba = await core.infer(model, x)
    predictions = model.runner.labels_for(proba)
    # The body as received (it validated whole): the log keeps it as it is (predlog).
    core.record(model, rid, lambda: body, proba, predictions)
    answer: dict[str, Any] = {"predictions": predictions}
    if not model.runner.schema.regression:
        # The model's own numbers (float32 for the packed forest and TFLite), unrounded:
        # orjson writes each in its shortest exact form (BENCHMARKS.md, "Choices": orjson);
        # it needs them contiguous, which a batch's slice of rows is.
        answer["probabilities"] = proba if proba.flags.c_contiguous else np.ascontiguousarray(proba)
    elif spread:
        answer["spread"] = np.ascontiguousarray(proba[:, 1])
    answer["model"] = model.runner.tag
    return json_response(answer, headers={"x-request-id": rid})


_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


def _flag(request: Request, name: str) -> bool:
    """A yes/no query parameter; a 400 naming it for any other value."""
    if not request.scope.get("query_string"):  # most requests: no query to parse
        return False
    value = request.query_params.get(name)
    if value is None or value.lower() in _FALSE:
        return False
    if value.lower() in _TRUE:
        return True
    raise InputError(
        f"query parameter {name!r} must be true or false, got {value[:50]!r}",
        [(None, name, "not a boolean")],
    )


def _predict(name: str) -> Handler:
    async def predict(request: Request) -> Response:
        core = _core(request)
        model = core.model(name)
        spread = _flag(request, "spread")
        body = await read_body(request, core.settings.max_body_bytes)
        return await predict_json(core, model, body, request_id(request), spread)

    return predict


async def list_models(request: Request) -> Response:
    return json_response({"models": [m.describe() for m in _core(request).models.values()]})


# The report's page carries user data (class labels, feature names, the data's source), escaped
# when it was written; the policy is a second fence: no script, nothing from elsewhere.
_REPORT_HEADERS = {
    "content-security-policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "base-uri 'self'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",  # the served model, and so its report, changes with a rollout
}


def _report_response(file: Path, content: bytes | None = None) -> Response:
    # Small files (tens of KB) on local disk: read in the event loop, as a thread hop would
    # cost more than the read.
    return Response(
        file.read_bytes() if content is None else content,
        media_type=REPORT_MEDIA[file.suffix],
        headers=_REPORT_HEADERS,
    )


async def report_page(request: Request) -> Response:
    """The served model's training report. Its page links its pictures relative to its own
    folder (.../report/); this URL has no trailing slash, so a <base> puts them under it."""
    page = _core(request).model(request.path_params["name"]).report_file()
    content = page.read_bytes().replace(b"<head>", b'<head><base href="report/">', 1)
    return _report_response(page, content)


async def report_file(request: Request) -> Response:
    model = _core(request).model(request.path_params["name"])
    return _report_response(model.report_file(request.path_params["file"] or REPORT_PAGE))


async def openapi_document(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


async def metrics(request: Request) -> Response:
    content, media_type = latest_bentoml()
    return Response(content, media_type=media_type)


# -- Open Inference Protocol (V2) REST ------------------------------------------------------------


def _model(request: Request) -> ServedModel:
    return _core(request).model(request.path_params["model"], request.path_params.get("version"))


async def v2_server_metadata(request: Request) -> Response:
    return json_response(v2.server_metadata())


async def v2_live(request: Request) -> Response:
    return json_response({"live": True})


async def v2_ready(request: Request) -> Response:
    ready = getattr(request.app.state, "core", None) is not None
    return json_response({"ready": ready}, 200 if ready else 503)


async def v2_model_metadata(request: Request) -> Response:
    return json_response(v2.model_metadata(_model(request)))


async def v2_model_ready(request: Request) -> Response:
    return json_response({"name": _model(request).name, "ready": True})


async def v2_infer(request: Request) -> Response:
    core = _core(request)
    model = _model(request)
    body = await read_body(request, core.settings.max_body_bytes)
    decoded = v2.rest_request(body, request.headers.get("inference-header-content-length"))
    unknown: dict[str, int] = {}
    x = v2.features(model.runner.schema, decoded, core.settings.max_rows, unknown)
    core.counted(model, unknown)
    proba = await core.infer(model, x)
    rid = request_id(request)
    schema = model.runner.schema
    core.record(model, rid, lambda: v2.rows(schema, decoded), proba)
    outs = v2.outputs(proba, decoded.outputs, model.runner.schema)
    content, headers = v2.rest_response(model.name, model.version, decoded.id, outs)
    return Response(content, headers={**headers, "x-request-id": rid})


def routes() -> list[Route]:
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    table: list[tuple[str, Handler, str]] = [
        ("/predict", _predict("rf"), "POST"),
        ("/predict_edge", _predict("tflite"), "POST"),
        ("/models", list_models, "GET"),
        ("/models/{name}/report", report_page, "GET"),
        # Any rest of the path, slashes included, so that every name reaches the one check
        # (ServedModel.report_file) and gets its JSON 404.
        ("/models/{name}/report/{file:path}", report_file, "GET"),
        ("/openapi.json", openapi_document, "GET"),
        ("/docs.json", openapi_document, "GET"),  # what BentoML's Swagger UI at / reads
        ("/metrics", metrics, "GET"),
        ("/v2", v2_server_metadata, "GET"),
        ("/v2/health/live", v2_live, "GET"),
        ("/v2/health/ready", v2_ready, "GET"),
        *((p, v2_model_metadata, "GET") for p in (model, versioned)),
        *((p + "/ready", v2_model_ready, "GET") for p in (model, versioned)),
        *((p + "/infer", v2_infer, "POST") for p in (model, versioned)),
    ]
    return [Route(path, _route(handler), methods=[method]) for path, handler, method in table]


def create_app(core: Core | None = None) -> Starlette:
    app = Starlette(routes=routes())
    if core is not None:
        attach(app, core)
    return app


def attach(app: Starlette, core: Core) -> None:
    """Serve `core`'s models from `app`; the document is built once, from their schemas."""
    app.state.core = core
    document = openapi.document(
        {m.name: (m.route, m.runner.schema) for m in core.models.values()},
        core.settings.max_rows,
    )
    app.state.openapi = orjson.dumps(document)
