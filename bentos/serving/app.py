"""The HTTP transport: the JSON API, the Open Inference Protocol's REST routes, /models, the
OpenAPI document and /metrics. Each route decodes, calls the inference core (bentos.serving.core)
and encodes; the error family is mapped to a status and a JSON body once, in `failure`.

The hot routes (`HOT`: predictions) are functions of the request's scope and body that give an
`Answer`: bentos.serving.middleware.Front calls them itself, ahead of any framework; the rest is
a plain Starlette app, which Front reaches ahead of BentoML's own router (docs/service-design.md
has why and the figures). The error bodies are ours, and every client error is a 4xx whose
message names the row and field.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

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
Headers = list[tuple[bytes, bytes]]


class Answer(NamedTuple):
    """A response as the hot routes make it: bentos.serving.middleware.Front sends it as two
    ASGI messages, and their Starlette routes (the app on its own, as the unit tests use it)
    wrap it in a Response."""

    status: int
    content: bytes
    headers: Headers  # the content type and any others, but the length


# A hot route's handler: the core, the request's ASGI scope and its whole body in, an answer out.
Call = Callable[[Core, dict, bytes], Awaitable[Answer]]
_JSON = (b"content-type", b"application/json")


def json_answer(body: object, status: int = 200, rid: str | None = None) -> Answer:
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    # The id as it came (bytes read as latin-1, so written back the same way).
    headers = [_JSON] if rid is None else [_JSON, (b"x-request-id", rid.encode("latin-1"))]
    return Answer(status, content, headers)


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def failure(exc: Exception, scope: dict) -> Answer:
    """The error family to its status and JSON body, and anything else to a JSON 500 (logged: a
    500 is a bug, never a client's doing): the one mapping of every HTTP route."""
    if isinstance(exc, ClientError):
        return json_answer(exc.to_dict(), exc.status)
    if isinstance(exc, ClientDisconnect):
        return Answer(499, b"", [])
    # The client's request id (or a new one), in the log line and in the answer, so that one
    # can be found from the other.
    rid = request_id(scope)
    log.error(
        "%s %s failed",
        scope["method"],
        scope["path"],
        exc_info=exc,
        extra={
            "event": "request_failed",
            "request_id": rid,
            "model": _model_of(scope),
        },
    )
    return json_answer(
        {"error": "internal error; it is logged on the server", "request_id": rid}, 500, rid
    )


def _model_of(scope: dict) -> str | None:
    """The model a request names in its path (/v2/models/{model}/...), for the log."""
    parts = scope["path"].split("/")
    return parts[3] if len(parts) > 3 and parts[1:3] == ["v2", "models"] else None


async def answer(call: Call, core: Core, scope: dict, body: bytes) -> Answer:
    """`call`'s answer, or its failure's (`failure`): never raises but for cancellation."""
    try:
        return await call(core, scope, body)
    except Exception as exc:
        return failure(exc, scope)


def _response(answer: Answer) -> Response:
    response = Response(answer.content, status_code=answer.status)
    response.raw_headers.extend(answer.headers)
    return response


def _route(handler: Handler) -> Handler:
    """A Starlette endpoint whose errors are mapped by `failure`."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return _response(failure(exc, request.scope))

    return endpoint


def _hot(call: Call) -> Handler:
    """A hot route as a Starlette endpoint: the body read here, then the very call that
    bentos.serving.middleware.Front makes."""

    async def endpoint(request: Request) -> Response:
        try:
            core = _core(request)
            body = await read_body(request, core.settings.max_body_bytes)
        except Exception as exc:
            return _response(failure(exc, request.scope))
        return _response(await answer(call, core, request.scope, body))

    return endpoint


def _core(request: Request) -> Core:
    return request.app.state.core


def declared_too_large(declared: bytes | str | None, max_bytes: int) -> ClientError | None:
    """A 413 for a body whose declared length is over `max_bytes`, refused before it is read."""
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and int(declared) > max_bytes
    ):
        shown = declared.decode() if isinstance(declared, bytes) else declared
        return ClientError(413, f"request body is {shown} bytes; the limit is {max_bytes}")
    return None


def too_large(max_bytes: int) -> ClientError:
    return ClientError(413, f"request body exceeds the limit of {max_bytes} bytes")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refusing bodies over `max_bytes` (413) before holding them whole.

    Straight from the ASGI receive channel: Starlette's stream() generator around it cost a
    measurable share of a one-row prediction (BENCHMARKS.md, "Choices")."""
    refused = declared_too_large(request.headers.get("content-length"), max_bytes)
    if refused is not None:
        raise refused
    chunks, size, more = [], 0, True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def header(scope: dict, name: bytes) -> bytes | None:
    """A request header's value (names arrive lower-cased), without building a Request."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def request_id(scope: dict) -> str:
    """The client's x-request-id, or a new one: logged predictions are joined to their true
    labels by it, and the answer carries it back in the same header."""
    rid = header(scope, b"x-request-id")
    # 32 random hex digits, as uuid4().hex gives, without building a UUID.
    return rid.decode("latin-1") if rid else os.urandom(16).hex()


async def predict_json(
    core: Core, model: ServedModel, body: bytes, rid: str, spread: bool = False
) -> Answer:
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
    return json_answer(answer, rid=rid)


_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


def _flag(scope: dict, name: str) -> bool:
    """A yes/no query parameter; a 400 naming it for any other value."""
    query = scope.get("query_string")
    if not query:  # most requests: no query to parse
        return False
    # As Starlette reads a query: the last of a repeated name wins.
    value = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)).get(name)
    if value is None or value.lower() in _FALSE:
        return False
    if value.lower() in _TRUE:
        return True
    raise InputError(
        f"query parameter {name!r} must be true or false, got {value[:50]!r}",
        [(None, name, "not a boolean")],
    )


def _predict(name: str) -> Call:
    async def predict(core: Core, scope: dict, body: bytes) -> Answer:
        model = core.model(name)
        spread = _flag(scope, "spread")
        return await predict_json(core, model, body, request_id(scope), spread)

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


async def v2_infer(core: Core, scope: dict, body: bytes) -> Answer:
    # /v2/models/{model}[/versions/{version}]/infer, as route_of matched it.
    parts = scope["path"].split("/")
    model = core.model(parts[3], parts[5] if len(parts) == 7 else None)
    length = header(scope, b"inference-header-content-length")
    decoded = v2.rest_request(body, None if length is None else length.decode("latin-1"))
    unknown: dict[str, int] = {}
    x = v2.features(model.runner.schema, decoded, core.settings.max_rows, unknown)
    core.counted(model, unknown)
    proba = await core.infer(model, x)
    rid = request_id(scope)
    schema = model.runner.schema
    core.record(model, rid, lambda: v2.rows(schema, decoded), proba)
    outs = v2.outputs(proba, decoded.outputs, model.runner.schema)
    content, headers = v2.rest_response(model.name, model.version, decoded.id, outs)
    encoded = [(k.encode(), v.encode()) for k, v in headers.items()]
    return Answer(200, content, [*encoded, (b"x-request-id", rid.encode("latin-1"))])


# The hot routes, by the route template bentos.serving.middleware.route_of gives: what Front
# answers itself, and what the app's own routes below answer the same way.
HOT: dict[str, Call] = {
    "/predict": _predict("rf"),
    "/predict_edge": _predict("tflite"),
    "/v2/models/{model}/infer": v2_infer,
    "/v2/models/{model}/versions/{version}/infer": v2_infer,
}


def routes() -> list[Route]:
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    table: list[tuple[str, Handler, str]] = [
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
    ]
    hot = [Route(path, _hot(call), methods=["POST"]) for path, call in HOT.items()]
    return hot + [Route(path, _route(handler), methods=[method]) for path, handler, method in table]


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
