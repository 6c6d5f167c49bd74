"""The one Keras training routine shared by the audio, spectrogram, video and text models."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def encode_labels(labels: Sequence[str], label_order: Sequence[str]) -> np.ndarray:
    """Map label strings to integer ids in ``label_order``; unknown labels raise ``ValueError``."""
    lookup = {label: i for i, label in enumerate(label_order)}
    unknown = sorted(set(map(str, labels)) - set(lookup))
    if unknown:
        raise ValueError(f"labels {unknown} are not in the label order {list(label_order)}")
    return np.asarray([lookup[str(label)] for label in labels], dtype=np.int64)


def balanced_class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """Inverse-frequency class weights (n / (K * count)); absent classes get weight 1."""
    counts = np.bincount(y, minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = len(y) / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


@dataclass
class FitResult:
    """What :func:`fit_classifier` returns: the Keras history dict, seconds and epochs run."""

    history: dict = field(default_factory=dict)
    seconds: float = 0.0
    epochs: int = 0
    best_val_accuracy: float = float("nan")


def fit_classifier(
    model,
    x_train,
    y_train: np.ndarray,
    x_val=None,
    y_val: np.ndarray | None = None,
    *,
    epochs: int = 30,
    batch_size: int = 32,
    learning_rate: float | None = 1e-3,
    patience: int = 6,
    class_weight: bool = True,
    verbose: int = 0,
    callbacks: Sequence = (),
) -> FitResult:
    """Compile (unless ``learning_rate`` is None) and fit a softmax classifier on integer labels.

    Sparse categorical cross-entropy (the same loss as categorical on one-hot labels), Adam,
    early stopping on validation loss restoring the best weights, inverse-frequency class
    weights. ``x_train`` may also be a ``tf.data.Dataset`` yielding (x, y), with ``y_train``
    then giving the labels for the class weights.
    """
    import keras

    if learning_rate is not None:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    num_classes = int(model.output_shape[-1])
    weights = balanced_class_weights(np.asarray(y_train), num_classes) if class_weight else None
    all_callbacks = list(callbacks)
    validation = None
    if x_val is not None:
        validation = (x_val, y_val) if y_val is not None else x_val
        all_callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True, verbose=0
            )
        )
    is_dataset = hasattr(x_train, "element_spec")
    start = time.perf_counter()
    history = model.fit(
        x_train,
        None if is_dataset else y_train,
        validation_data=validation,
        epochs=epochs,
        batch_size=None if is_dataset else batch_size,
        class_weight=weights,
        callbacks=all_callbacks,
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    hist = {k: [float(v) for v in values] for k, values in history.history.items()}
    best = max(hist.get("val_accuracy", [float("nan")]))
    return FitResult(history=hist, seconds=seconds, epochs=len(hist.get("loss", [])), best_val_accuracy=best)


def predict_probabilities(model, x, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities of a Keras model as a float64 (n, K) array."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=float)


def count_parameters(model) -> int:
    """Number of parameters (trainable and not) of a Keras model."""
    return int(model.count_params())


def require_learning(accuracy: float, num_classes: int, margin: float = 1.5, what: str = "model") -> None:
    """Loose learning check: raise if ``accuracy`` is not clearly above chance (margin x 1/K).

    Notebooks call it in smoke mode so that CI fails when a pipeline stops learning,
    not only when it crashes.
    """
    chance = 1.0 / num_classes
    if not accuracy >= margin * chance:
        raise AssertionError(
            f"{what} accuracy {accuracy:.3f} is not clearly above chance ({chance:.3f} x {margin}); "
            "the pipeline has stopped learning"
        )
