"""The Keras training routines shared by every branch: :func:`fit_classifier` (integer labels, early
stopping on validation loss) and :func:`fit_soft_targets` (smoothed targets, best validation accuracy)."""

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


def best_validation_callback(
    x_val=None,
    y_val: np.ndarray | None = None,
    patience: int | None = None,
    batch_size: int = 64,
    restore: bool = False,
    tie_break_on_loss: bool = False,
):
    """The one Keras callback that keeps the weights of the epoch with the best validation accuracy.

    Model selection on validation for every Keras branch goes through it. With ``x_val`` /
    ``y_val`` it scores them itself each epoch and writes ``val_loss`` / ``val_accuracy`` into
    the epoch logs (fits without ``validation_data``); otherwise it reads ``val_accuracy`` from
    the logs. ``patience`` stops training after that many epochs without a better accuracy,
    ``restore`` puts the best weights back when training ends, ``tie_break_on_loss`` lets a lower
    validation loss win between equal accuracies. The callback exposes ``best_accuracy``,
    ``best_epoch`` (1-based) and ``best_weights``. From-scratch training needs it: its validation
    loss is lowest at epoch 1 (an untrained model is rarely confidently wrong) while its accuracy
    climbs later, so early stopping on the loss alone would keep a chance-level model.
    """
    import keras

    class BestValidationAccuracy(keras.callbacks.Callback):
        """Remember the weights (and 1-based epoch) of the highest validation accuracy so far."""

        def __init__(self) -> None:
            super().__init__()
            self.best_accuracy = -1.0
            self.best_loss = float("inf")
            self.best_epoch = None
            self.best_weights = None
            self.wait = 0

        def on_epoch_end(self, epoch, logs=None) -> None:
            logs = logs if logs is not None else {}
            if x_val is not None:
                loss, accuracy = self.model.evaluate(x_val, y_val, batch_size=batch_size, verbose=0)[:2]
                logs["val_loss"], logs["val_accuracy"] = float(loss), float(accuracy)
            accuracy = logs.get("val_accuracy")
            if accuracy is None:
                return
            loss = float(logs.get("val_loss", float("inf")))
            better = accuracy > self.best_accuracy or (
                tie_break_on_loss and accuracy == self.best_accuracy and loss < self.best_loss
            )
            if better:
                self.best_accuracy, self.best_loss = float(accuracy), loss
                self.best_epoch, self.best_weights, self.wait = epoch + 1, self.model.get_weights(), 0
            else:
                self.wait += 1
                if patience is not None and self.wait >= patience:
                    self.model.stop_training = True

        def on_train_end(self, logs=None) -> None:
            if restore and self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BestValidationAccuracy()


def smoothed_targets(y: np.ndarray, present: list[bool], smoothing: float) -> np.ndarray:
    """One-hot targets with ``smoothing`` spread over the present labels only (absent ones stay 0)."""
    present_mask = np.asarray(present, dtype=float)
    targets = np.eye(len(present))[y] * (1.0 - smoothing)
    return (targets + smoothing * present_mask / present_mask.sum()).astype(np.float32)


def fit_soft_targets(
    network,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    present: list[bool],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    label_smoothing: float,
    class_weight_power: float,
    patience: int,
    verbose: int = 0,
) -> dict:
    """Fit on smoothed one-hot targets: Adam with cosine decay, softened class weights, best validation accuracy kept.

    ``present`` marks the labels that occur in training (label smoothing is spread over those
    only); class weights are balanced weights ** ``class_weight_power``; the weights of the epoch
    with the best validation accuracy (ties to the lower loss) are restored
    (:func:`best_validation_callback`). Returns history, seconds, epochs run, best validation
    accuracy, training images/s and the class weights.
    """
    import keras

    num_classes = len(present)
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    network.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    weights = balanced_class_weights(y_train, num_classes)
    sample_weight = np.asarray([weights[k] for k in range(num_classes)]) ** class_weight_power
    selector = best_validation_callback(
        x_val,
        smoothed_targets(y_val, present, 0.0),
        patience=patience,
        batch_size=256,
        restore=True,
        tie_break_on_loss=True,
    )
    started = time.perf_counter()
    history = network.fit(
        x_train,
        smoothed_targets(y_train, present, label_smoothing),
        sample_weight=sample_weight[y_train].astype(np.float32),
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        callbacks=[selector],
        verbose=verbose,
    )
    seconds = time.perf_counter() - started
    hist = {k: [float(v) for v in values] for k, values in history.history.items()}
    epochs_run = len(hist.get("loss", []))
    return {
        "history": hist,
        "seconds": seconds,
        "epochs": epochs_run,
        "best_val_accuracy": float(selector.best_accuracy),
        "train_images_per_second": epochs_run * len(x_train) / seconds if seconds > 0 else float("nan"),
        "class_weights": {k: float(sample_weight[k]) for k in range(num_classes)},
    }


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
