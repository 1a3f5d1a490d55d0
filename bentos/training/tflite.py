"""The Keras model and its TFLite conversion, with the parity check against Keras.

TensorFlow is imported here only: it is a training-time dependency, never a serving one.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bentos.errors import ConversionError

QUANTIZE_MODES = ("dynamic", "float16", "int8")


def tensorflow() -> Any:
    """TensorFlow, imported without its C++ start-up lines unless BENTOS_LOG_LEVEL=debug.

    On a machine without a GPU, TensorFlow 2.21 writes "Could not find cuda drivers", a oneDNN
    note and "failed call to cuInit" to stderr on every run. TF_CPP_MIN_LOG_LEVEL=3 silences
    the later ones only: the first are written before absl's logging reads it. So the import
    writes into a file rather than stderr, replayed if the import fails.
    """
    import sys
    import tempfile

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    from bentos.settings import LogSettings, load

    if load(LogSettings).level == "debug":
        import tensorflow as tf

        return tf
    # TensorFlow reads its log level from the environment, and from nowhere else.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf


@dataclass(frozen=True)
class Parity:
    agreement: float  # share of hold-out rows where TFLite and Keras pick the same class
    keras_accuracy: float
    tflite_accuracy: float
    max_abs_diff: float  # largest probability difference over the hold-out split

    @property
    def accuracy_drop(self) -> float:
        return self.keras_accuracy - self.tflite_accuracy

    def failures(self, mode: str) -> list[str]:
        out = []
        if self.agreement < 0.99:
            out.append(f"argmax agreement {self.agreement:.4f} < 0.99")
        if self.accuracy_drop > 0.01:
            out.append(f"accuracy drop {self.accuracy_drop:.4f} > 0.01")
        if mode == "float16" and self.max_abs_diff > 1e-3:
            out.append(f"max abs probability difference {self.max_abs_diff:.2e} > 1e-3")
        return out

    def to_dict(self) -> dict[str, float]:
        return {
            "argmax_agreement": self.agreement,
            "keras_accuracy": self.keras_accuracy,
            "tflite_accuracy": self.tflite_accuracy,
            "accuracy_drop": self.accuracy_drop,
            "max_abs_diff": self.max_abs_diff,
        }


def train_keras(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    seed: int,
    epochs: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    balanced: bool = False,
) -> Any:
    """A small MLP whose first layer normalizes, so raw feature values go in (online and edge).
    `on_epoch(epoch, logs)` is called after each epoch (1-based), for progress.

    `n_classes` 0 makes a regression: one linear output, trained on `y` already standardized
    (`TargetScale`): the graph's numbers stay near 1 whatever the target's units, which float16
    constants and int8 outputs need; the host turns the output back into the target's units."""
    tf = tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    x = x.astype(np.float32)
    # Centre on the mean rounded to float16 first: float16 quantization stores every constant
    # in float16, and a mean like 5.84 would then be off by up to 0.002, a visible shift for a
    # feature whose spread is 0.8. The rounded centre is exact in float16, and what remains for
    # the Normalization layer to remove is a small residual mean.
    mean = x.mean(axis=0)
    # (The inputs come standardized, bentos.schema.dense; a mean past float16's range is kept.)
    centre = np.where(np.abs(mean) < 60000, mean.astype(np.float16).astype(np.float32), mean)
    shift = keras.layers.Rescaling(1.0, offset=-centre, name="centre")
    # A column constant in training (a level or an indicator never seen there) keeps its scale:
    # dividing by a zero spread would make a value seen at serving time ten million times larger.
    variance = (x - centre).var(axis=0)
    variance[variance == 0] = 1.0
    norm = keras.layers.Normalization(
        mean=(x - centre).mean(axis=0), variance=variance, name="normalize"
    )
    model = keras.Sequential(
        [
            keras.Input(shape=(x.shape[1],), name="features"),
            shift,
            norm,
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(n_classes, activation="softmax", name="probabilities")
            if n_classes
            else keras.layers.Dense(1, name="prediction"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss="sparse_categorical_crossentropy" if n_classes else "mean_squared_error",
        metrics=["accuracy"] if n_classes else [],
    )
    batch = 16 if len(x) < 1000 else 128
    callbacks = []
    if on_epoch is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, dict(logs or {}))
            )
        )
    # Balanced: each class weighs n / (classes x its rows), as scikit-learn's "balanced" does.
    weights = None
    if balanced and n_classes:
        counts = np.bincount(y, minlength=n_classes)
        weights = {i: len(y) / (n_classes * c) for i, c in enumerate(counts) if c}
    fit: dict[str, Any] = {}
    if not n_classes:
        # A regression network overfits a small table within the default epochs (diabetes,
        # 353 rows: hold-out R² 0.37 after 30 epochs, below zero after 100): the last tenth of
        # the training rows (already shuffled by the split) judges each epoch, and the weights
        # of the best one are kept. `epochs` is then at most.
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=10, restore_best_weights=True
            )
        )
        fit["validation_split"] = 0.1
    model.fit(
        x,
        y,
        epochs=epochs,
        **fit,
        batch_size=batch,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
        class_weight=weights,
    )
    return model


def default_epochs(n_rows: int) -> int:
    # About 1,000 optimizer steps whatever the table's size: enough for a small MLP, and few
    # enough that the weights stay small (large weights amplify float16/int8 rounding).
    return int(min(100, max(10, 100_000 // max(n_rows, 1))))


def convert(model: Any, mode: str, representative: np.ndarray) -> bytes:
    """Keras to TFLite with builtin ops only, so a device needs no TF Select (Flex) delegate."""
    tf = tensorflow()

    if mode not in QUANTIZE_MODES:
        raise ConversionError(
            f"unknown quantization {mode!r}: allowed are {', '.join(QUANTIZE_MODES)}"
        )
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        rows = representative[:500].astype(np.float32)

        def samples():
            for row in rows:
                yield [row[None, :]]

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return _silently(converter.convert)
    except Exception as exc:  # the converter raises several unrelated types
        raise ConversionError(f"TFLite conversion ({mode}) with builtin ops failed: {exc}") from exc


def float32_size(model: Any) -> int:
    """Size of the same model converted without quantization, for the size ratio."""
    tf = tensorflow()

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return len(_silently(converter.convert))


def _silently(convert: Any) -> bytes:
    # The converter prints the exported SavedModel's signature to stdout on every call.
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(convert())


@dataclass(frozen=True)
class TargetScale:
    """A regression's target as the network sees it, standardized by the training rows' mean
    and standard deviation; `restore` gives the target's units back (on the host)."""

    mean: float
    std: float

    @classmethod
    def fit(cls, y: np.ndarray) -> TargetScale:
        std = float(np.std(y))
        return cls(float(np.mean(y)), std if std > 0 else 1.0)

    def apply(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, np.float64) - self.mean) / self.std).astype(np.float32)

    def restore(self, out: np.ndarray) -> np.ndarray:
        return (np.asarray(out, np.float64).reshape(-1) * self.std + self.mean).astype(np.float32)


@dataclass(frozen=True)
class RegressionParity:
    """The converted model's predictions against Keras's, in the target's units."""

    max_abs_diff: float
    mean_abs_diff: float
    scale: float  # the target's standard deviation in training
    keras_rmse: float
    tflite_rmse: float

    @property
    def mean_diff_share(self) -> float:
        return self.mean_abs_diff / self.scale

    def failures(self, mode: str) -> list[str]:
        # int8 rounds the inputs, every activation and the output to 256 steps of their
        # ranges: on the diabetes table the mean difference was 2.65% of the target's standard
        # deviation (tests/integration/test_regression.py); the other modes keep float
        # arithmetic.
        limit = 0.05 if mode == "int8" else 1e-3
        out = []
        if self.mean_diff_share > limit:
            out.append(
                f"mean abs difference {self.mean_abs_diff:.4g} is {self.mean_diff_share:.2%} of "
                f"the target's standard deviation {self.scale:.4g} (at most {limit:.1%})"
            )
        if self.tflite_rmse > self.keras_rmse * 1.02 + 1e-12:
            out.append(f"RMSE {self.tflite_rmse:.4g} > Keras's {self.keras_rmse:.4g} + 2%")
        return out

    def to_dict(self) -> dict[str, float]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "mean_diff_share": self.mean_diff_share,
            "keras_rmse": self.keras_rmse,
            "tflite_rmse": self.tflite_rmse,
        }


def regression_parity(
    keras_y: np.ndarray, lite_y: np.ndarray, y: np.ndarray, scale: float
) -> RegressionParity:
    """Both models' predictions in the target's units (`TargetScale.restore`d), on rows whose
    true values are `y`."""
    k, t = np.asarray(keras_y, np.float64), np.asarray(lite_y, np.float64)
    diff = np.abs(k - t)
    return RegressionParity(
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        scale=scale,
        keras_rmse=float(np.sqrt(np.mean((k - y) ** 2))),
        tflite_rmse=float(np.sqrt(np.mean((t - y) ** 2))),
    )


def predict_keras(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x.astype(np.float32), verbose=0, batch_size=1024))


def parity(keras_p: np.ndarray, lite_p: np.ndarray, y: np.ndarray) -> Parity:
    """The converted model's probabilities (`lite_p`, run as it will be served, by
    ai_edge_litert) against Keras's (`keras_p`) on the same rows, whose classes are `y`."""
    k, t = keras_p.argmax(1), lite_p.argmax(1)
    return Parity(
        agreement=float((k == t).mean()),
        keras_accuracy=float((k == y).mean()),
        tflite_accuracy=float((t == y).mean()),
        max_abs_diff=float(np.abs(keras_p - lite_p).max()),
    )
