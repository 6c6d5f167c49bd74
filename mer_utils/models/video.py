"""The video model: Keras ResNet50 on face crops, fine-tuned in two phases, clip = mean of its frames.

With ImageNet weights (the default for real users) training runs in two phases: the backbone
frozen while the new head learns, then the top stage (``conv5``) unfrozen at a lower learning
rate with its BatchNorm layers kept frozen. With ``weights=None`` (tests, CI, smoke runs on a
machine that cannot download the weights) there is nothing to protect, so the whole network
trains from the start in a single phase (see :func:`train_video_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# One error for every branch whose ImageNet weights cannot be had (re-exported under its old name).
from mer_utils.models import PretrainedWeightsError  # noqa: F401

# Smallest input ResNet50 accepts (five stride-2 stages).
MIN_INPUT_SIZE = 32
# Dropout before the softmax head (faces of one clip are near-duplicates: regularise the head).
DROPOUT = 0.3
# Layer-name prefixes of the backbone unfrozen in phase 2 (the top stage of ResNet50).
FINE_TUNE_PREFIXES: tuple[str, ...] = ("conv5_",)
# Augmentation: horizontal flip, rotation (share of a full turn, 0.04 = +-14 degrees) and brightness.
ROTATION = 0.04
BRIGHTNESS = 0.1
# Value range of preprocess_input ("caffe" mode: BGR minus the ImageNet channel means), used to clip brightness.
PREPROCESSED_RANGE = (-123.68, 151.061)
# Name of the ResNet50 sub-model inside the video model.
BACKBONE_NAME = "resnet50"
# BatchNorm momentum when training from scratch: Keras' 0.99 lags far behind on a few hundred steps.
SCRATCH_BATCHNORM_MOMENTUM = 0.9
# Name of the convolutional sub-model of the compact face CNN (backbone_of finds either name).
FACE_BACKBONE_NAME = "backbone"
# Compact face CNN: filters per stage (one 3x3 conv + BatchNorm + ReLU + 2x2 max-pool each).
FACE_CNN_WIDTHS: tuple[int, ...] = (32, 64, 128, 256)
# Compact face CNN: convolutions per stage (more than one at 48 px quadruples the training time).
FACE_CNN_REPEATS: tuple[int, ...] = (1, 1, 1, 1)
# Compact face CNN: units of the dense layer after the flattened last stage (keeps where a feature is).
FACE_CNN_DENSE = 256
# Compact face CNN augmentation: shift and zoom as shares of the side (faces in the wild are not aligned).
SHIFT = 0.1
ZOOM = 0.1
# Luma weights of the BGR channels of preprocess_input outputs (ITU-R BT.601), for the grey conversion.
BGR_LUMA = (0.114, 0.587, 0.299)


def build_video_model(
    weights: str | None = "imagenet",
    input_size: int = 224,
    num_classes: int = 8,
    dropout: float = DROPOUT,
    augment: bool = True,
    seed: int | None = None,
    standardize: bool | None = None,
):
    """ResNet50 (no top) + global average pooling + dropout + softmax, on preprocessed face crops.

    ``weights``: ``"imagenet"`` (downloaded by Keras on first use) or ``None`` (random init, what
    tests and smoke runs use). Inputs are ``preprocess_input`` outputs of shape
    (input_size, input_size, 3); ``augment`` adds flip / rotation / brightness layers that are
    active only in training. ``standardize`` (default: only when ``weights`` is None) scales
    each image to zero mean and unit variance over all its pixels, which removes lighting
    differences between people before a from-scratch network can latch on to them; ImageNet
    weights expect plain ``preprocess_input`` inputs, so it stays off for them.
    Raises :class:`PretrainedWeightsError` when ImageNet weights
    cannot be obtained, saying how to run without them.
    """
    import keras

    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    if input_size < MIN_INPUT_SIZE:
        raise ValueError(f"ResNet50 needs input_size >= {MIN_INPUT_SIZE}, got {input_size}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    shape = (input_size, input_size, 3)
    try:
        backbone = keras.applications.ResNet50(
            include_top=False, weights=weights, input_shape=shape, pooling="avg"
        )
    except Exception as error:  # Keras raises several error types for a failed download
        if weights is None:
            raise
        raise PretrainedWeightsError(
            f"could not load the ImageNet weights of ResNet50 ({type(error).__name__}: {error}). "
            "Keras downloads them on first use into ~/.keras/models; on an offline machine copy "
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 there, or train from scratch with "
            "build_video_model(weights=None) (`mer train video --model resnet50-scratch`, or --smoke)"
        ) from error
    backbone.name = BACKBONE_NAME
    if weights is None:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BATCHNORM_MOMENTUM
    inputs = keras.Input(shape, name="face")
    x = inputs
    if augment:
        x = keras.layers.RandomFlip("horizontal", seed=seed, name="flip")(x)
        x = keras.layers.RandomRotation(ROTATION, fill_mode="nearest", seed=seed, name="rotate")(x)
        x = keras.layers.RandomBrightness(
            BRIGHTNESS, value_range=PREPROCESSED_RANGE, seed=seed, name="brightness"
        )(x)
    if standardize is None:
        standardize = weights is None
    if standardize:
        # Per-image standardisation: LayerNormalization over (H, W, C) without learned scale or offset.
        x = keras.layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, name="standardize")(x)
    x = backbone(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name=f"video_resnet50_{input_size}")


def build_face_cnn(
    input_size: int = 48,
    num_classes: int = 8,
    widths: Sequence[int] = FACE_CNN_WIDTHS,
    repeats: Sequence[int] | None = None,
    dense: int = FACE_CNN_DENSE,
    dropout: float = 0.25,
    augment: bool | str = True,
    seed: int | None = None,
):
    """A compact VGG-style CNN for small grey faces (FER2013's 48 px), same inputs as the ResNet50.

    Inputs are ``preprocess_input`` outputs of shape (input_size, input_size, 3), exactly what
    :func:`mer_utils.faces.preprocess_faces` gives the ResNet50, so a face run and the video
    model read the same crops. A fixed 1x1 convolution turns them grey (FER2013 is grey, video
    frames are colour: grey keeps the two alike); ``augment`` adds flip, rotation, shift and zoom
    (``"light"``: flip and shift only), active only in training; each image is standardised (zero mean, unit variance); then
    ``len(widths)`` stages of conv-BatchNorm-ReLU (``repeats`` convs each) and 2x2 max-pooling,
    flatten, dense, dropout and softmax. About 1 M parameters at the defaults.
    """
    import keras

    repeats = tuple(repeats) if repeats is not None else (1,) * len(widths)
    if len(repeats) != len(widths) or not widths or min(repeats) < 1:
        raise ValueError(f"need one repeat count >= 1 per stage: widths {widths}, repeats {repeats}")
    if input_size < 2 ** len(widths) * 2:
        raise ValueError(f"input_size {input_size} is too small for {len(widths)} pooling stages")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    inputs = keras.Input((input_size, input_size, 3), name="face")
    gray = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="gray")
    x = gray(inputs)
    gray.set_weights([np.asarray(BGR_LUMA, dtype=np.float32).reshape(1, 1, 3, 1)])
    if augment not in (True, False, "light"):
        raise ValueError(f"augment must be True, False or 'light', got {augment!r}")
    if augment:
        x = keras.layers.RandomFlip("horizontal", seed=seed, name="flip")(x)
        if augment != "light":
            x = keras.layers.RandomRotation(ROTATION, fill_mode="nearest", seed=seed, name="rotate")(x)
        x = keras.layers.RandomTranslation(SHIFT, SHIFT, fill_mode="nearest", seed=seed, name="shift")(x)
        if augment != "light":
            x = keras.layers.RandomZoom(ZOOM, fill_mode="nearest", seed=seed, name="zoom")(x)
    x = keras.layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, name="standardize")(x)
    features_in = keras.Input(x.shape[1:], name="gray_face")
    h = features_in
    for stage, (width, count) in enumerate(zip(widths, repeats, strict=True), start=1):
        for conv in range(1, count + 1):
            h = keras.layers.Conv2D(
                width, 3, padding="same", use_bias=False, name=f"stage{stage}_conv{conv}"
            )(h)
            h = keras.layers.BatchNormalization(
                momentum=SCRATCH_BATCHNORM_MOMENTUM, name=f"stage{stage}_bn{conv}"
            )(h)
            h = keras.layers.Activation("relu", name=f"stage{stage}_relu{conv}")(h)
        h = keras.layers.MaxPooling2D(name=f"stage{stage}_pool")(h)
    backbone = keras.Model(features_in, h, name=FACE_BACKBONE_NAME)
    x = keras.layers.Flatten(name="flatten")(backbone(x))
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    x = keras.layers.Dense(dense, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dense_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name=f"face_cnn_{input_size}")


def backbone_of(model):
    """The convolutional sub-model of a video model (the ResNet50, or the face CNN's ``backbone``)."""
    names = {layer.name for layer in model.layers}
    return model.get_layer(BACKBONE_NAME if BACKBONE_NAME in names else FACE_BACKBONE_NAME)


def set_backbone_trainable(model, mode: str) -> int:
    """Freeze the backbone (``"frozen"``), unfreeze its top stage (``"top"``) or all of it (``"all"``).

    In ``"top"`` mode BatchNorm layers stay frozen, so their ImageNet statistics are not
    overwritten by small fine-tuning batches. Returns the number of trainable backbone layers.
    """
    import keras

    if mode not in ("frozen", "top", "all"):
        raise ValueError(f"mode must be 'frozen', 'top' or 'all', got {mode!r}")
    backbone = backbone_of(model)
    backbone.trainable = mode != "frozen"
    if mode == "top":
        for layer in backbone.layers:
            is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = layer.name.startswith(FINE_TUNE_PREFIXES) and not is_batchnorm
    return sum(1 for layer in backbone.layers if layer.trainable and layer.weights)


def best_validation_accuracy_callback(x_val, y_val, patience: int, batch_size: int = 64):
    """The shared best-validation-accuracy callback scoring (x_val, y_val) itself, restoring the best weights.

    Ties in accuracy go to the lower loss; see :func:`mer_utils.training.best_validation_callback`.
    """
    from mer_utils.training import best_validation_callback

    return best_validation_callback(
        x_val, y_val, patience=patience, batch_size=batch_size, restore=True, tie_break_on_loss=True
    )


@dataclass
class VideoTraining:
    """What :func:`train_video_model` returns: merged history, phase boundaries and seconds."""

    history: dict = field(default_factory=dict)
    phases: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def train_video_model(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    *,
    pretrained: bool = True,
    frozen_epochs: int = 5,
    fine_tune_epochs: int = 10,
    learning_rate: float = 1e-3,
    fine_tune_learning_rate: float = 1e-5,
    batch_size: int = 32,
    patience: int = 4,
    verbose: int = 0,
) -> VideoTraining:
    """Train on frames (cross-entropy, Adam, class weights, early stopping via ``fit_classifier``).

    ``pretrained=True`` (ImageNet weights): phase 1 trains the head with the backbone frozen
    for ``frozen_epochs`` at ``learning_rate``; phase 2 unfreezes the ``conv5`` stage for
    ``fine_tune_epochs`` at ``fine_tune_learning_rate``; early stopping on validation loss.
    ``pretrained=False`` (weights=None): one phase of ``frozen_epochs + fine_tune_epochs``
    epochs with every layer trainable at ``learning_rate`` (a frozen random backbone would only
    feed noise features to the head), keeping the weights of the best validation accuracy.
    """
    from mer_utils.training import fit_classifier

    common = dict(batch_size=batch_size, patience=patience, verbose=verbose, class_weight=True)
    if pretrained:
        plan = [("frozen", frozen_epochs, learning_rate), ("top", fine_tune_epochs, fine_tune_learning_rate)]
    else:
        plan = [("all", frozen_epochs + fine_tune_epochs, learning_rate)]
    result = VideoTraining()
    for mode, epochs, rate in plan:
        if epochs < 1:
            continue
        trainable = set_backbone_trainable(model, mode)
        if pretrained or x_val is None:
            # fit_classifier's early stopping on validation loss, restoring the best weights.
            fit = fit_classifier(
                model, x_train, y_train, x_val, y_val, epochs=epochs, learning_rate=rate, **common
            )
        else:
            selector = best_validation_accuracy_callback(x_val, y_val, patience)
            fit = fit_classifier(
                model, x_train, y_train, epochs=epochs, learning_rate=rate, callbacks=[selector], **common
            )
        first_epoch = len(result.history.get("loss", [])) + 1
        for key, values in fit.history.items():
            result.history.setdefault(key, []).extend(values)
        result.phases.append(
            {
                "backbone": mode,
                "trainable_backbone_layers": trainable,
                "learning_rate": rate,
                "epochs": fit.epochs,
                "first_epoch": first_epoch,
                "seconds": round(fit.seconds, 1),
                "best_val_accuracy": fit.best_val_accuracy,
            }
        )
        result.seconds += fit.seconds
    return result


def clip_probabilities(
    frame_probabilities: np.ndarray, clip_of_frame: Sequence[int], num_clips: int
) -> np.ndarray:
    """Clip-level probabilities: the mean of each clip's frame probabilities.

    ``clip_of_frame[i]`` is the clip row of frame i. Clips without any frame get NaN rows
    (e.g. every face occluded), which callers report instead of guessing.
    """
    frame_probabilities = np.asarray(frame_probabilities, dtype=float)
    clip_of_frame = np.asarray(clip_of_frame, dtype=int)
    if frame_probabilities.ndim != 2 or len(frame_probabilities) != len(clip_of_frame):
        raise ValueError(
            f"need one clip index per frame: {len(clip_of_frame)} indices for probabilities "
            f"of shape {frame_probabilities.shape}"
        )
    sums = np.zeros((num_clips, frame_probabilities.shape[1]))
    np.add.at(sums, clip_of_frame, frame_probabilities)
    counts = np.bincount(clip_of_frame, minlength=num_clips).astype(float)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def predict_clip_probabilities(model, clip_faces: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Mean frame probabilities per clip from preprocessed face stacks (one (n_i, S, S, 3) array per clip)."""
    from mer_utils.training import predict_probabilities

    num_classes = int(model.output_shape[-1])
    stacks = [np.asarray(stack) for stack in clip_faces]
    owners = (
        np.concatenate([np.full(len(stack), i) for i, stack in enumerate(stacks)]) if stacks else np.zeros(0)
    )
    frames = [stack for stack in stacks if len(stack)]
    if not frames:
        return np.full((len(stacks), num_classes), np.nan)
    probabilities = predict_probabilities(model, np.concatenate(frames), batch_size=batch_size)
    return clip_probabilities(probabilities, owners.astype(int), len(stacks))
