"""The inference core (the data plane): the served models by name and version, and inference
through each model's batcher. Nothing here knows HTTP or gRPC; the transports decode a request,
call the core and encode its answer, and map the one error family (bentos.errors.ClientError)
once each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from bentos.errors import ClientError
from bentos.models import REPORT_DIR, REPORT_PAGE
from bentos.recorder import Recorder
from bentos.runners import Runner
from bentos.serving.batching import Batcher
from bentos.serving.metrics import Metrics
from bentos.settings import ServingSettings

# The Open Inference Protocol's platform names for the two models.
PLATFORMS = {"rf": "sklearn", "tflite": "tflite"}
# The kinds of file a training report holds (bentos.training.report), and their media types.
REPORT_MEDIA = {".html": "text/html; charset=utf-8", ".png": "image/png"}


@dataclass
class ServedModel:
    """A runner as the core serves it: under a name, at a version, through its batcher."""

    name: str
    route: str  # the JSON API's route for it
    runner: Runner
    batcher: Batcher
    # The runner's predict_proba, timed when metrics are on: what a batch call runs, and what a
    # transport that gives each call a thread of its own (the gRPC server) calls directly.
    predict: Callable[[np.ndarray], np.ndarray]

    @property
    def version(self) -> str:
        return self.runner.tag.split(":", 1)[1]

    @property
    def platform(self) -> str:
        return PLATFORMS.get(self.name, "unknown")

    def describe(self) -> dict[str, Any]:
        meta = self.runner.metadata
        return {
            "name": self.name,
            "route": self.route,
            "tag": self.runner.tag,
            # Why this version serves: the registry's champion (pinned by the last pull), the
            # newest in the store, or the tag asked for.
            "selected": self.runner.selected,
            "schema": self.runner.schema.to_dict(),
            "task": self.runner.schema.task,
            "labels": list(self.runner.schema.labels),
            "metrics": meta.get("metrics", {}),
            "parity": meta.get("parity"),
            "quantization": meta.get("quantization"),
            "backend": getattr(self.runner, "backend", "tflite"),
            "report": f"/models/{self.name}/report" if self._report_files else None,
        }

    def report_file(self, name: str = REPORT_PAGE) -> Path:
        """A file of the model's training report, by its plain name; a 404 naming the files
        there are otherwise. Only the names found in the report's folder are served, so no name
        a request makes up (`..`, a slash, an absolute path) reaches outside it."""
        files = self._report_files
        if not files:
            raise ClientError(
                404,
                f"model {self.name!r} ({self.runner.tag}) has no report: it was registered "
                "before training made reports; retrain it (`bentos train`, or the retrain job) "
                "to make one",
            )
        if name not in files:
            asked = name if len(name) <= 100 else name[:100] + "..."
            raise ClientError(
                404,
                f"the report of model {self.name!r} has no file {asked!r}; "
                f"it has {', '.join(sorted(files))}",
            )
        return files[name]

    @cached_property
    def _report_files(self) -> dict[str, Path]:
        # Listed once: a served model's folder does not change while it serves.
        folder = self.runner.path / REPORT_DIR
        if not folder.is_dir():
            return {}
        return {
            p.name: p
            for p in folder.iterdir()
            if p.suffix in REPORT_MEDIA and not p.is_symlink() and p.is_file()
        }


class Core:
    """The models a server serves, loaded once (a failure stops the process loudly)."""

    def __init__(
        self,
        runners: dict[str, tuple[str, Runner]],
        settings: ServingSettings,
        metrics: Metrics | None = None,
        log: Recorder | None = None,
    ):
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.models = {}
        for name, (route, runner) in runners.items():
            fn = runner.predict_proba
            if metrics is not None:
                fn = metrics.timed_model(name, fn)
            self.models[name] = ServedModel(name, route, runner, self._batcher(runner, fn), fn)
        if metrics is not None:
            for model in self.models.values():
                metrics.model_loaded(model.name, model.version, model.runner.created)

    def _batcher(self, runner: Runner, fn: Callable[[np.ndarray], np.ndarray]) -> Batcher:
        return Batcher(
            fn,
            max_batch_size=self.settings.max_batch_size,
            max_latency_ms=self.settings.max_latency_ms,
            inline_rows=runner.inline_rows,
        )

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The served model `name`, at `version` if one is asked for; a 404 otherwise."""
        model = self.models.get(name)
        if model is None:
            raise ClientError(
                404, f"unknown model {name!r}; the models are {', '.join(self.models)}"
            )
        if version and version != model.version:
            raise ClientError(
                404, f"model {name!r} has no version {version!r}; it serves {model.version!r}"
            )
        return model

    def counted(self, model: ServedModel, unknown: dict[str, int]) -> None:
        """Unknown categories validation found in a request (bentos.schema): counted by model
        and feature."""
        if unknown and self.metrics is not None:
            self.metrics.unknown_categories(model.name, unknown)

    async def infer(self, model: ServedModel, x: np.ndarray) -> np.ndarray:
        """Probabilities for the valid matrix `x` (the schema checked it at the edge); a 503
        (bentos.serving.batching.Overloaded) when the model's queue is too long."""
        return await model.batcher(x)

    def record(
        self,
        model: ServedModel,
        request_id: str,
        rows: Callable[[], Sequence[Any] | bytes],
        proba: np.ndarray,
        predictions: Sequence[Any] | None = None,
    ) -> None:
        """A sampled request into the prediction log, if there is one: `rows()` (the rows as
        received, or a JSON API body) is made only for the requests sampled. Never blocks, never
        raises."""
        log = self.log
        if log is None or not log.sampled():
            return
        if predictions is None:
            predictions = model.runner.labels_for(proba)
        log.record(request_id, model.runner.tag, rows(), predictions, proba)
