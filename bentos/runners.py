"""The two model runners: load a registered model, turn a valid float matrix into its answers.

A classifier answers probabilities [rows, classes]; a regression (the schema's task) answers
[rows, 1 or 2]: the prediction in the target's units, and for the forest the spread of its
trees' predictions. The method keeps one name, `predict_proba`, for every door's batching and
timing. Runners assume valid input (the schema checked it at the edge) and know nothing of HTTP.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from bentos import logs
from bentos.models import RF_PACKED_FILE, StoredModel, open_model
from bentos.schema import FeatureSchema
from bentos.settings import RF_BACKENDS


class Runner:
    """What the service and the batch job need from a model."""

    tag: str
    schema: FeatureSchema
    metadata: dict[str, Any]
    path: Path  # the model's folder, in whichever store it was opened from
    created: float  # when the model was registered (unix seconds)
    selected: dict[str, Any]  # why this version (bentos.models.resolve): champion, latest, tag
    # Rows a call may take in the event loop rather than a thread (bentos.serving.batching): only for
    # models that answer in microseconds.
    inline_rows: int = 0
    # A regression's answers have a second column, the spread of the model's own predictions
    # (the forest's trees).
    spread: bool = False

    def __init__(self, stored: StoredModel):
        self.tag = stored.tag
        self.schema = stored.schema
        self.metadata = stored.metadata
        self.path = stored.file.parent
        self.created = stored.created
        self.selected = stored.selected

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def labels_for(self, proba: np.ndarray) -> list[Any]:
        """Each row's answer: its label, or a regression's number (as its float32 prints, the
        precision the model answered in, not float64's digits of that float32)."""
        if self.schema.regression:
            return [float(str(v)) for v in proba[:, 0]]
        labels = self.schema.labels
        return [labels[i] for i in proba.argmax(axis=1).tolist()]


class RandomForestRunner(Runner):
    """The forest packed into 8-byte nodes (`packed`, bentos.forest, the online default) or
    scikit-learn's own (`sklearn`); BENCHMARKS.md has the figures."""

    BACKENDS = RF_BACKENDS
    spread = True

    def __init__(self, model: Any = "rf-classifier:latest", backend: str = "packed"):
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: allowed are {', '.join(self.BACKENDS)}")
        self.backend = backend
        if backend == "packed":
            from bentos.forest import PackedForest  # compiles the walk: only when used

            stored = open_model(model, RF_PACKED_FILE)
            super().__init__(stored)
            self._impl: Any = PackedForest.from_bytes(stored.file.read_bytes())
            self.inline_rows = 256  # microseconds a row
        else:
            import joblib

            stored = open_model(model)
            super().__init__(stored)
            # Safe only because open_model verified this pickle is the one we registered.
            self._impl = joblib.load(stored.file)
            self._impl.n_jobs = 1  # one request must not fan out over every core of the pod

        self._regression = self.schema.regression

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not self._regression:
            return self._impl.predict_proba(x)
        if self.backend == "packed":
            return self._impl.predict_regression(x)
        trees = np.stack([t.predict(x) for t in self._impl.estimators_])
        return np.column_stack([trees.mean(axis=0), trees.std(axis=0)]).astype(np.float32)


class TFLite:
    """A TFLite flatbuffer run by ai_edge_litert: no TensorFlow at serving time. Registered or
    not (training checks a converted model before it registers it).

    An Interpreter is not thread-safe, so each thread gets its own (created on first use).
    """

    def __init__(self, content: bytes):
        self._content = content
        self._local = threading.local()
        self._interpreter()  # fail now, not on the first request

    def _interpreter(self) -> _Interp:
        interp = getattr(self._local, "interp", None)
        if interp is None:
            interp = self._local.interp = _Interp(self._content)
        return interp

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self._interpreter().run(x)

    def tensor_details(self) -> dict[str, Any]:
        interp = self._interpreter().interpreter
        return {
            "inputs": [_describe(d) for d in interp.get_input_details()],
            "outputs": [_describe(d) for d in interp.get_output_details()],
        }


class TFLiteRunner(Runner):
    """The registered TFLite model."""

    def __init__(self, model: Any = "tflite-classifier:latest"):
        stored = open_model(model)
        super().__init__(stored)
        self.model = TFLite(stored.file.read_bytes())
        self.inline_rows = 256  # a small MLP: microseconds a call
        # The network's input from the feature matrix: filled, indicators, one-hot
        # (bentos.schema.dense); schemas from before kinds have none, and need none.
        dense = self.schema.dense
        self._dense = None if dense is None else dense.apply
        # A regression's network answers the standardized target (bentos.training.tflite).
        scale = self.metadata.get("target_scale") if self.schema.regression else None
        self._scale = None if scale is None else (float(scale["mean"]), float(scale["std"]))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self._dense is not None:
            x = self._dense(x)
        out = self.model.predict_proba(x)
        if self._scale is not None:
            mean, std = self._scale
            out = (out.astype(np.float64) * std + mean).astype(np.float32)
        return out


_native_logged = False


class _Interp:
    def __init__(self, content: bytes):
        from ai_edge_litert.interpreter import Interpreter

        global _native_logged
        if _native_logged:
            self.interpreter = Interpreter(model_content=content, num_threads=1)
            self.interpreter.allocate_tensors()
        else:
            # The first interpreter of a process is made at load, before requests: what LiteRT
            # prints then goes into the log as records (bentos.logs).
            with logs.native_stderr(logging.getLogger("bentos.litert")):
                self.interpreter = Interpreter(model_content=content, num_threads=1)
                self.interpreter.allocate_tensors()
            _native_logged = True
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self._rows = int(self._in["shape"][0])

    def run(self, x: np.ndarray) -> np.ndarray:
        interp = self.interpreter
        if x.shape[0] != self._rows:
            interp.resize_tensor_input(self._in["index"], [x.shape[0], x.shape[1]])
            interp.allocate_tensors()
            self._rows = x.shape[0]
            self._in = interp.get_input_details()[0]
            self._out = interp.get_output_details()[0]
        interp.set_tensor(self._in["index"], _quantize(x, self._in))
        interp.invoke()
        return _dequantize(interp.get_tensor(self._out["index"]), self._out)


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y.astype(np.float32, copy=True)


def _describe(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero = detail["quantization"]
    return {
        "name": detail["name"],
        "index": int(detail["index"]),
        "shape": [int(v) for v in detail["shape_signature"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "quantization": {"scale": float(scale), "zero_point": int(zero)},
    }
