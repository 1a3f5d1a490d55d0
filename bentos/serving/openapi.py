"""The service's own OpenAPI document (GET /openapi.json), built from the served schemas.

BentoML's /docs.json lists mounted routes without their bodies; clients, gateways and
schema-driven testers (schemathesis) need the request and response shapes, so they are here.
"""

from __future__ import annotations

from typing import Any

from bentos.schema import Feature, FeatureSchema

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "row": {"type": "integer", "nullable": True},
                    "field": {"type": "string", "nullable": True},
                    "message": {"type": "string"},
                },
            },
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "the input does not fit the model's schema; `error` names the row and field",
        404: "unknown model or version",
        408: "the body did not arrive within the body timeout",
        413: "the body is over the byte limit",
        429: "more concurrent requests than the service takes",
        503: "the model's queue is too long; retry later",
    }
    return {str(c): _json(_ERROR, text[c]) for c in codes}


_JSON_TYPES = {"numeric": "number", "boolean": "boolean", "categorical": "string"}


def field_schema(schema: FeatureSchema, feature: Feature) -> dict[str, Any]:
    """One field of an input row, as OpenAPI 3.0 states it: its type, whether it may be null
    (a missing value), and for a categorical field its known levels, as a description and
    examples rather than an enum, since an unseen level is accepted (as the unknown level)."""
    doc: dict[str, Any] = {"type": _JSON_TYPES.get(feature.kind, "string")}
    if feature.kind == "numeric" and feature.min is not None:
        doc["description"] = f"{feature.dtype}, seen {feature.min}..{feature.max}"
    elif feature.kind == "boolean":
        doc["description"] = "true or false"
    elif feature.kind == "datetime":
        doc["format"] = "date-time"
        doc["description"] = "an ISO-8601 date or time, such as 2024-05-31 or 2024-05-31T13:45:00"
    elif feature.kind == "categorical":
        levels = next(c.levels for c in schema.columns if c.name == feature.name)
        shown = ", ".join(levels[:20]) + (
            f" (and {len(levels) - 20} more)" if len(levels) > 20 else ""
        )
        doc["description"] = (
            f"one of the training levels: {shown}; any other text is the unknown level"
        )
        doc["x-levels"] = list(levels)
    if schema.columns:  # kinds: every field may be missing
        doc["nullable"] = True
        doc["description"] = doc.get("description", feature.kind) + "; null when missing"
    doc["example"] = feature.example if feature.example is not None else feature.min
    return doc


def _instances(schema: FeatureSchema, max_rows: int) -> dict[str, Any]:
    row = {
        "type": "object",
        "required": schema.names,
        "additionalProperties": False,
        "properties": {f.name: field_schema(schema, f) for f in schema.features},
    }
    return {
        "type": "object",
        "required": ["instances"],
        "additionalProperties": False,
        "properties": {
            "instances": {"type": "array", "minItems": 1, "maxItems": max_rows, "items": row}
        },
    }


def _v2_example(schema: FeatureSchema) -> list[dict[str, Any]]:
    from bentos.serving.v2 import inputs

    row = example_row(schema)
    if schema.plain:
        return [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [1, len(row)],
                "data": list(row.values()),
            }
        ]
    return [{**i, "shape": [1], "data": [row[i["name"]]]} for i in inputs(schema)]


def example_row(schema: FeatureSchema) -> dict[str, Any]:
    return {f.name: f.example if f.example is not None else f.min for f in schema.features}


def _predictions(schema: FeatureSchema) -> dict[str, Any]:
    label = (
        {"type": "integer"}
        if all(isinstance(v, int) for v in schema.labels)
        else {"type": "string"}
    )
    return {
        "type": "object",
        "required": ["predictions", "probabilities", "model"],
        "properties": {
            "predictions": {"type": "array", "items": {**label, "enum": list(schema.labels)}},
            "probabilities": {
                "type": "array",
                "items": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": len(schema.labels),
                },
            },
            "model": {"type": "string"},
        },
    }


def _v2_request(n_features: int, max_rows: int) -> dict[str, Any]:
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string", "enum": ["features"]},
            "datatype": {"type": "string", "enum": ["FP32"]},
            "shape": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 2,
                "maxItems": 2,
                "example": [1, n_features],
            },
            "data": {
                "type": "array",
                "items": {"type": "number"},
                "maxItems": max_rows * n_features,
            },
        },
    }
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "enum": ["label", "probabilities"]}},
                },
            },
        },
    }


def document(models: dict[str, tuple[str, FeatureSchema]], max_rows: int) -> dict[str, Any]:
    """models: V2 name -> (JSON route, schema)."""
    paths: dict[str, Any] = {}
    for name, (route, schema) in models.items():
        paths[route] = {
            "post": {
                "operationId": f"predict_{name}",
                "summary": f"Predict with the {name} model",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _instances(schema, max_rows),
                            "example": {"instances": [example_row(schema)]},
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        _predictions(schema), "a label and the class probabilities per row"
                    ),
                    **_errors(400, 408, 413, 429, 503),
                },
            }
        }
    n_features = len(next(iter(models.values()))[1].features)
    paths["/v2/models/{model}/infer"] = {
        "post": {
            "operationId": "v2_infer",
            "summary": "Open Inference Protocol (V2) inference",
            "parameters": [
                {
                    "name": "model",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(models)},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _v2_request(n_features, max_rows)}},
            },
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["model_name", "outputs"]}, "the outputs"
                ),
                **_errors(400, 404, 413, 429, 503),
            },
        }
    }
    paths["/v2/models/{model}/infer"]["post"]["requestBody"]["content"]["application/json"][
        "example"
    ] = {"inputs": _v2_example(next(iter(models.values()))[1])}
    paths["/v2/models/{model}/infer"]["post"]["responses"]["408"] = _errors(408)["408"]
    model = {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(models)},
    }
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    name = {**model, "name": "name"}
    file = {
        "name": "file",
        "in": "path",
        "required": True,
        "description": "a file of the report, by the name its page links it with",
        "schema": {"type": "string", "example": "confusion_matrix.png"},
    }
    object_ = {"type": "object"}
    gets = {
        "/models": ("list_models", "each model's tag, feature schema, labels and metrics", [], 200),
        "/openapi.json": ("openapi", "this document", [], 200),
        "/metrics": ("metrics", "Prometheus metrics (text exposition format)", [], 200),
        "/livez": ("livez", "liveness (BentoML's probe)", [], 200),
        "/readyz": ("readyz", "readiness: 200 once both models are loaded", [], 200),
        "/models/{name}/report": (
            "model_report",
            "the served model's training report (HTML): metrics, curves, importances, parity",
            [name],
            404,
        ),
        "/models/{name}/report/{file}": (
            "model_report_file",
            "a file of the served model's training report (its pictures, PNG)",
            [name, file],
            404,
        ),
        "/v2": ("v2_server_metadata", "the server's name, version and extensions", [], 200),
        "/v2/health/live": ("v2_live", "the server is live", [], 200),
        "/v2/health/ready": ("v2_ready", "the server is ready", [], 200),
        "/v2/models/{model}": ("v2_model_metadata", "a model's tensors and versions", [model], 404),
        "/v2/models/{model}/ready": ("v2_model_ready", "a model is ready", [model], 404),
        "/v2/models/{model}/versions/{version}": (
            "v2_model_version_metadata",
            "a model version's tensors",
            [model, version],
            404,
        ),
        "/v2/models/{model}/versions/{version}/ready": (
            "v2_model_version_ready",
            "a model version is ready",
            [model, version],
            404,
        ),
    }
    for path, (op, summary, params, error) in gets.items():
        responses = {"200": _json(object_, summary)}
        if error == 404:
            responses.update(_errors(404))
        paths[path] = {
            "get": {
                "operationId": op,
                "summary": summary,
                "parameters": params,
                "responses": responses,
            }
        }
    paths["/metrics"]["get"]["responses"]["200"] = {
        "description": "Prometheus metrics",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    html = {"text/html": {"schema": {"type": "string"}}}
    paths["/models/{name}/report"]["get"]["responses"]["200"]["content"] = html
    paths["/models/{name}/report/{file}"]["get"]["responses"]["200"]["content"] = {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        **html,
    }
    for path in ("/models/{name}/report", "/models/{name}/report/{file}"):
        paths[path]["get"]["responses"]["404"]["description"] = (
            "unknown model, a model registered without a report, or no such file in its report"
        )
    for probe in ("/livez", "/readyz"):
        paths[probe]["get"]["responses"]["200"] = {
            "description": paths[probe]["get"]["summary"],
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tabular-classifier",
            "version": "1",
            "description": "The JSON API, the Open Inference Protocol (V2) over REST, and the probes.",
        },
        "paths": paths,
    }
