"""The service's operations as BentoML declares them: typed `@bentoml.api` methods, with pydantic
request and response models generated from a model's feature schema.

BentoML's clients (`bentoml.SyncHTTPClient`, `AsyncHTTPClient`) and `bentoml.depends` find the
methods through them; over HTTP their requests reach the same handler as curl's
(bentos.serving.middleware.Front), and a call in process runs the same core.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from bentos.schema import Feature, FeatureSchema
from bentos.serving.core import Core
from bentos.serving.openapi import example_row, field_schema


@dataclass(frozen=True)
class ApiTypes:
    row: type[BaseModel]  # one row: a number per feature, by the feature's name
    prediction: type[BaseModel]  # the answer: labels, probabilities, the model's tag


def _identifier(name: str, taken: set[str]) -> str:
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit() or ident.startswith("_"):
        ident = f"f_{ident}"
    while ident in taken:
        ident += "_"
    taken.add(ident)
    return ident


# The Python type of a field, by its column's kind: what BentoML's clients and Swagger show.
_TYPES: dict[str, Any] = {"numeric": float, "boolean": bool, "categorical": str, "datetime": str}


def _field(schema: FeatureSchema, f: Feature) -> tuple[Any, Any]:
    doc = field_schema(schema, f)
    kind: Any = _TYPES.get(f.kind, float)
    extra = {"format": doc["format"]} if "format" in doc else None
    if "x-levels" in doc:
        extra = {"x-levels": doc["x-levels"]}
    field = Field(
        alias=f.name,
        examples=[doc["example"]],
        description=doc.get("description"),
        json_schema_extra=extra,
    )
    # A model with kinds takes a missing value (null) in every field: optional, yet required to
    # be present, as the JSON route holds it.
    return (kind | None if schema.columns else kind), field


def api_types(schema: FeatureSchema, prefix: str) -> ApiTypes:
    """Models named `<prefix>Row` and `<prefix>Prediction` for the features and labels of
    `schema`; the example row is a typical value of each field."""
    taken: set[str] = set()
    fields: dict[str, Any] = {
        _identifier(f.name, taken): _field(schema, f) for f in schema.features
    }
    example = example_row(schema)

    def row_schema(doc: dict[str, Any]) -> None:
        # BentoML's HTTP client encodes an object by its schema's properties and drops every
        # other key (_bentoml_impl.serde), so a misspelt or extra feature never reached the
        # server, where curl's body with it gets a 400 naming it. Stated as oneOf (BentoML
        # flattens allOf and anyOf back into the schema), the same
        # constraint leaves the row as given, and the client gets curl's answer.
        doc["example"] = example
        if doc.pop("type", None) == "object":
            doc["oneOf"] = [{"type": "object"}]

    row = create_model(
        f"{prefix}Row",
        __config__=ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra=row_schema),
        **fields,
    )
    if schema.regression:
        prediction = create_model(
            f"{prefix}Prediction",
            predictions=(
                list[float],
                Field(description=f"one number per row: the predicted {schema.target}"),
            ),
            model=(str, Field(description="the model's tag")),
        )
        return ApiTypes(row, prediction)
    label_type: Any = Literal[tuple(schema.labels)] if schema.labels else str
    prediction = create_model(
        f"{prefix}Prediction",
        predictions=(list[label_type], Field(description="one label per row")),
        probabilities=(
            list[list[float]],
            Field(description=f"per row, a probability per class: {list(schema.labels)}"),
        ),
        model=(str, Field(description="the model's tag")),
    )
    return ApiTypes(row, prediction)


async def predict(core: Core, name: str, instances: list[BaseModel], types: ApiTypes) -> Any:
    """A `@bentoml.api` call made in process (bentoml.depends): the same schema, core and answer
    as the HTTP route."""
    model = core.model(name)
    rows = [r.model_dump(by_alias=True) for r in instances]
    unknown: dict[str, int] = {}
    x = model.runner.schema.validate_instances(rows, core.settings.max_rows, unknown)
    core.counted(model, unknown)
    proba = await core.infer(model, x)
    predictions = model.runner.labels_for(proba)
    # In process there are no headers: each call's log records get an id of their own.
    core.record(model, uuid.uuid4().hex, lambda: rows, proba, predictions)
    if model.runner.schema.regression:
        return types.prediction(predictions=predictions, model=model.runner.tag)
    return types.prediction(
        predictions=predictions,
        probabilities=proba.tolist(),
        model=model.runner.tag,
    )
