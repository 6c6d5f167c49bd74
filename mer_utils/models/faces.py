"""The faces branch's networks: the compact face CNN or a ResNet50, its inputs and its probabilities.

The networks themselves are built in :mod:`mer_utils.models.video` (the same crops and
preprocessing as the video model); here are the parts only a face run adds: the choice of
network, a video network started from a face run, mirror-averaged probabilities and the
masking of labels absent from training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Face networks: the compact CNN (grey 48 px faces, FER2013-style) and an ImageNet ResNet50.
FACE_MODELS = ("cnn", "resnet50")


def build_face_model(
    model: str,
    input_size: int,
    num_classes: int,
    seed: int | None = None,
    augment: bool = True,
    dropout: float = 0.25,
    augmentation: str = "full",
    repeats: Sequence[int] | None = None,
):
    """The network of a face run: ``cnn`` or ``resnet50`` (ImageNet when loadable, else scratch).

    ``dropout``, ``augmentation`` (``"full"`` or ``"light"``: flip and shift only) and ``repeats``
    (convolutions per stage) shape the CNN only.
    Returns ``(network, weights)`` with ``weights`` the start actually used ("imagenet" or None).
    """
    from mer_utils.models.video import PretrainedWeightsError, build_face_cnn, build_video_model

    if model == "cnn":
        if augmentation not in ("full", "light"):
            raise ValueError(f"augmentation must be 'full' or 'light', got {augmentation!r}")
        augment_mode = (True if augmentation == "full" else "light") if augment else False
        network = build_face_cnn(
            input_size, num_classes, repeats=repeats, dropout=dropout, augment=augment_mode, seed=seed
        )
        return network, None
    if model == "resnet50":
        try:
            return build_video_model(
                "imagenet", input_size, num_classes, augment=augment, seed=seed
            ), "imagenet"
        except PretrainedWeightsError as error:
            log.warning("%s; training the ResNet50 from scratch", error)
            network = build_video_model(None, input_size, num_classes, augment=augment, seed=seed)
            return network, None
    raise ValueError(f"unknown faces model {model!r}; expected one of {list(FACE_MODELS)}")


def network_like_face_run(
    info: dict, load_trained: Callable[[], Any], num_classes: int = 8, seed: int | None = None
):
    """A fresh network of a face run's architecture and input size holding the trained network's weights.

    ``info`` is the run's run.json (with ``run_dir`` naming the folder in errors) and
    ``load_trained`` loads its model (e.g. :func:`mer_utils.pipelines.base.load_model`), called
    after the fresh network is built so the seeded build does not depend on the load. Used by
    ``mer train video --init FACE_RUN``.
    """
    from mer_utils.models.video import build_face_cnn, build_video_model

    where = info.get("run_dir", "the face run")
    if len(info["labels"]) != num_classes:
        raise ValueError(
            f"{where}: the face run has {len(info['labels'])} labels, the video model {num_classes}"
        )
    if info["model"] == "cnn":
        settings = info.get("settings", {})
        augment = True if settings.get("augmentation", "full") == "full" else "light"
        network = build_face_cnn(
            int(info["input_size"]),
            num_classes,
            repeats=settings.get("repeats"),
            dropout=settings.get("dropout", 0.25),
            augment=augment,
            seed=seed,
        )
    elif info["model"] == "resnet50":
        # The run's weights replace whatever start ImageNet would give, so no download is needed.
        network = build_video_model(
            None, int(info["input_size"]), num_classes, seed=seed, standardize=info["weights"] is None
        )
    else:
        raise ValueError(f"{where}: unknown faces model {info['model']!r} in run.json")
    trained = load_trained()
    copied = 0
    for layer in trained.layers:
        if layer.weights:
            network.get_layer(layer.name).set_weights(layer.get_weights())
            copied += 1
    if copied == 0:
        raise ValueError(f"{where}: the face model has no weights to copy")
    return network


def prepare_images(images: np.ndarray) -> np.ndarray:
    """Model inputs from uint8 faces (n, S, S, 1 or 3): RGB, then ``preprocess_faces`` like the video model."""
    from mer_utils.face_images import gray_to_rgb
    from mer_utils.faces import preprocess_faces

    return preprocess_faces(gray_to_rgb(images))


def face_probabilities(network, images: np.ndarray, present: list[bool], batch_size: int = 256) -> np.ndarray:
    """Probabilities of uint8 faces: the mean over each face and its mirror image, absent labels at 0.

    Averaging with the mirror image (test-time flip; faces are near-symmetric and training flips
    them too) smooths out one-sided lighting and pose; it was fixed before any test score was seen.
    """
    from mer_utils.training import predict_probabilities

    x = prepare_images(images)
    direct = predict_probabilities(network, x, batch_size=batch_size)
    mirrored = predict_probabilities(network, x[:, :, ::-1], batch_size=batch_size)
    return mask_absent((direct + mirrored) / 2, present)


def mask_absent(probabilities: np.ndarray, present: list[bool]) -> np.ndarray:
    """Probabilities with the labels absent from training set to 0 and each row renormalised."""
    probabilities = np.asarray(probabilities, dtype=float) * np.asarray(present, dtype=float)
    totals = probabilities.sum(axis=1, keepdims=True)
    return probabilities / np.where(totals > 0, totals, 1.0)
