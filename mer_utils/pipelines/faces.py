"""Faces branch: a frame-level face-expression classifier trained on labelled face images (``mer train faces``).

``train`` reads a labelled image folder (:mod:`mer_utils.face_images`: ``DIR/<split>/<label>/*``
or ``DIR/<label>/*``, e.g. FER2013), trains a face model on the decoded images and writes a run
folder like every branch: ``model.keras``, ``run.json``, ``metrics.json``, ``history.json``,
``predictions_val.csv`` / ``predictions_test.csv`` (one row per image) and ``skipped.csv``.
Outputs always cover the 8 RAVDESS labels in the fixed order; labels absent from training
(``calm`` for FER2013) get probability 0.

Protocol: with ``train/`` and ``validation/`` folders (FER2013), a stratified 10% of ``train/``
selects the epoch (early stopping, best-accuracy weights) and ``validation/`` (FER2013's
PublicTest) is scored once as the test part; with a ``test/`` folder, ``validation/`` selects
and ``test/`` is reported.

Models (``--model``): ``cnn`` (default; the compact grey 48-px CNN of
:func:`mer_utils.models.video.build_face_cnn`) and ``resnet50`` (the video branch's ResNet50 at
64 px; ImageNet weights when Keras can load them, otherwise from scratch). Both read the same
inputs as the video model (``preprocess_faces`` of RGB crops), so a face run predicts clips
directly (frames -> faces -> frame probabilities -> clip mean, like the video branch) and
``mer train video --init FACE_RUN`` starts the video model from its weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.branches import get_branch
from mer_utils.config import DEFAULT_SEED, RAVDESS_EMOTIONS
from mer_utils.pipelines import base
from mer_utils.pipelines.base import Fitted, Settings
from mer_utils.walk import files_under

log = logging.getLogger(__name__)

# Branch name written into run.json (the CLI dispatches on it).
BRANCH = "faces"
# Model variants: name -> input size and whether images are decoded grey.
MODELS = {"cnn": {"input_size": 48, "grayscale": True}, "resnet50": {"input_size": 64, "grayscale": False}}
# Default model variant (the registry's: the compact CNN).
DEFAULT_MODEL = get_branch(BRANCH).default_model


@dataclass(frozen=True)
class FacesSettings(Settings):
    """Training settings of a face run (written to run.json ``"settings"``).

    Cosine learning-rate decay to 0 over all epochs; label smoothing spread over the labels
    present in training; class weights = balanced weights ** ``class_weight_power`` (0.5: disgust,
    6% of FER2013's largest class, weighs 3x, not 16x, which kept accuracy).
    """

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    label_smoothing: float = 0.1
    class_weight_power: float = 0.5
    patience: int = 8
    val_share: float = 0.1
    test_share: float = 0.1
    # At most this many images per label and split (None: all).
    max_images_per_label: int | None = None
    dropout: float = 0.25
    # "full" (flip, rotation, shift, zoom) or "light" (flip and shift).
    augmentation: str = "full"
    # Convolutions per stage of the CNN: two from the second stage on (VGG-style) doubled the
    # cost of a step and gained more than twice the epochs of the one-convolution net did.
    repeats: tuple[int, ...] = (1, 2, 2, 2)


# A full run; smoke runs (CI, quick checks) take a few images per label and epochs.
FULL = FacesSettings()
SMOKE = replace(FULL, epochs=3, batch_size=16, max_images_per_label=24)
# Face crops of clips for prediction: the video branch's frames and detector chain; a tighter
# margin than the video branch's 0.2 because FER2013 crops end at the brows and the chin.
CLIP_FACES = {
    "num_frames": 8,
    "start": 0.2,
    "stop": 0.8,
    "margin": 0.1,
    "detectors": ["mtcnn", "haar", "center"],
    "align": True,
    "detect_side": 320,
}
# How a run whose run.json predates alignment crops clip faces (its "faces" lacks "align"): MTCNN
# faces levelled by the eyes and framed like FER2013 (results/faces_alignment.json: the box crop
# against the aligned one on the real and demo clips). Crops stay in colour: the CNN's first layer
# greys them with the same luma weights, so grey crops gave the same answers there. MTCNN looks at
# the frame shrunk to 320 px (faces.DETECT_SIDE): about 6x the frames/s of a full 720p frame, and
# it found the face in every frame of the real clips that the full-size detection found
# (results/faces_speed.json).
CLIP_ALIGNMENT = {"align": True, "detect_side": 320}
# Default seed for the split, the augmentation and the model.
SEED = DEFAULT_SEED


# --- training -----------------------------------------------------------------------------


def _limit_per_label(index: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is None:
        return index
    shuffled = index.sample(frac=1.0, random_state=seed)
    return shuffled.groupby(["split", "label"], sort=False).head(limit).sort_index()


def _relative_ids(paths: pd.Series, data: Path) -> list[str]:
    ids = []
    for path in paths.astype(str):
        try:
            ids.append(Path(path).relative_to(data).as_posix())
        except ValueError:
            ids.append(path)
    return ids


def image_table(network, images: np.ndarray, index: pd.DataFrame, labels: list[str], present, data: Path):
    """Prediction table of decoded face ``images`` (clip_id = the image's path relative to ``data``)."""
    from mer_utils.evaluation import prediction_table
    from mer_utils.models.faces import face_probabilities

    probabilities = face_probabilities(network, images, present)
    return prediction_table(
        probabilities,
        labels,
        clip_ids=_relative_ids(index["path"], data),
        true_labels=index["label"].astype(str).tolist(),
        paths=index["path"].astype(str).tolist(),
    )


def index(data: str | Path, settings: FacesSettings) -> pd.DataFrame:
    """Every image of the labelled folder ``data``; unknown label folders are in ``attrs["skipped"]``."""
    from mer_utils.face_images import index_face_images

    found = index_face_images(Path(data))
    found.attrs["root"] = str(data)
    return found


def split(index: pd.DataFrame, settings: FacesSettings, seed: int) -> pd.DataFrame:
    """Stratified train / val / test parts (or the folder's own), at most ``max_images_per_label`` each."""
    from mer_utils.face_images import split_face_images

    parts = split_face_images(index, seed=seed, val_share=settings.val_share, test_share=settings.test_share)
    parts = _limit_per_label(parts, settings.max_images_per_label, seed)
    parts.attrs["root"] = index.attrs["root"]
    return parts


def features(index: pd.DataFrame, settings: FacesSettings, model: str, seed: int, progress: bool) -> dict:
    """The decoded faces at the model's input size, their labels, split masks and the labels present."""
    from mer_utils.face_images import load_face_images
    from mer_utils.training import encode_labels

    input_size, grayscale = MODELS[model]["input_size"], MODELS[model]["grayscale"]
    labels = list(RAVDESS_EMOTIONS)
    started = time.perf_counter()
    decoded = load_face_images(index, input_size, grayscale, progress=progress)
    decode_seconds = time.perf_counter() - started
    rows = decoded.index
    y = encode_labels(rows["label"].astype(str), labels)
    masks = {part: (rows["split"] == part).to_numpy() for part in ("train", "val", "test")}
    for part, mask in masks.items():
        if not mask.any():
            raise ValueError(f"{index.attrs['root']}: no readable {part} images (see the skipped images)")
    return {
        "images": decoded.images,
        "rows": rows,
        "y": y,
        "masks": masks,
        "present": [bool((y[masks["train"]] == k).any()) for k in range(len(labels))],
        "input_size": input_size,
        "grayscale": grayscale,
        "decode_seconds": decode_seconds,
        "cached": decoded.cached,
        "protocol": _protocol(index),
        "root": Path(index.attrs["root"]),
        "skipped": decoded.skipped,
        "progress": progress,
    }


def fit(features: dict, settings: FacesSettings, model: str, seed: int) -> Fitted:
    """Build the face network (seeded) and fit it with :func:`mer_utils.training.fit_soft_targets`."""
    from mer_utils.config import set_seed
    from mer_utils.models.faces import build_face_model, prepare_images
    from mer_utils.training import fit_soft_targets

    images, y, masks, present = features["images"], features["y"], features["masks"], features["present"]
    labels = list(RAVDESS_EMOTIONS)
    set_seed(seed, keras=True)
    network, weights = build_face_model(
        model,
        features["input_size"],
        len(labels),
        seed=seed,
        dropout=settings.dropout,
        augmentation=settings.augmentation,
        repeats=settings.repeats,
    )
    result = fit_soft_targets(
        network,
        prepare_images(images[masks["train"]]),
        y[masks["train"]],
        prepare_images(images[masks["val"]]),
        y[masks["val"]],
        present,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate if weights is None else settings.learning_rate / 10,
        label_smoothing=settings.label_smoothing,
        class_weight_power=settings.class_weight_power,
        patience=settings.patience,
        verbose=2 if features["progress"] else 0,
    )
    input_size = features["input_size"]
    return Fitted(
        model=network,
        model_format="keras",
        history=result["history"],
        info={
            "weights": weights,
            "input_size": input_size,
            "grayscale": features["grayscale"],
            "present_labels": [
                label for label, is_present in zip(labels, present, strict=True) if is_present
            ],
            "preprocessing": "RGB uint8 crops -> keras.applications.resnet50.preprocess_input (the video model's)",
            "faces": {**CLIP_FACES, "size": input_size},
            "prediction": "mean of each face's and its mirror image's probabilities; clip = mean of its frames",
            "protocol": features["protocol"],
        },
        metrics={
            "protocol": features["protocol"],
            "weights": weights,
            "input_size": input_size,
            "parameters": int(network.count_params()),
            "decode_seconds": round(features["decode_seconds"], 1),
            "images_cached": features["cached"],
            "train_seconds": round(result["seconds"], 1),
            "train_images_per_second": round(result["train_images_per_second"], 1),
            "epochs": result["epochs"],
            "best_val_accuracy": result["best_val_accuracy"],
            "class_weights": {labels[k]: w for k, w in result["class_weights"].items() if present[k]},
        },
    )


def tables(fitted: Fitted, features: dict, settings: FacesSettings, labels: list[str]) -> dict:
    """Val and test tables (one row per image); metrics over the labels present in training join the metrics."""
    images, rows, masks, present = (
        features["images"],
        features["rows"],
        features["masks"],
        features["present"],
    )
    made = {
        part: image_table(
            fitted.model, images[masks[part]], rows[masks[part]], labels, present, features["root"]
        )
        for part in ("val", "test")
    }
    fitted.metrics = {
        "present_labels": present_label_metrics(made["test"], labels, present),
        **fitted.metrics,
    }
    return made


def split_record(index: pd.DataFrame, features: dict) -> dict:
    """run.json's ``split``: the decoded images per part."""
    return {part: int(mask.sum()) for part, mask in features["masks"].items()}


def present_label_metrics(table: pd.DataFrame, labels: list[str], present: list[bool]) -> dict:
    """Accuracy and macro figures over the labels present in training only (calm is absent from FER2013)."""
    from mer_utils.evaluation import classification_metrics

    kept = [label for label, is_present in zip(labels, present, strict=True) if is_present]
    scored = table[table["true_label"].astype(str).isin(kept)]
    if scored.empty:
        return {}
    metrics = classification_metrics(scored["true_label"].astype(str), scored["pred_label"].astype(str), kept)
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "n", "labels")}


def _protocol(index: pd.DataFrame) -> str:
    roles = set(index["folder_split"].fillna(""))
    if roles == {""}:
        return "one folder per label: stratified train / val (model selection) / test (reported) parts"
    if "test" in roles:
        return "train/ trains, validation/ selects the epoch, test/ is reported"
    return "train/ trains except a stratified 10% that selects the epoch; validation/ is reported as the test part"


# --- prediction on saved runs -------------------------------------------------------------


def _present(info: dict) -> list[bool]:
    present = set(info.get("present_labels", info["labels"]))
    return [label in present for label in info["labels"]]


# Video containers that make a folder a folder of clips (RAVDESS layout) rather than of images.
CLIP_SUFFIXES = (".mp4", ".avi", ".flv", ".mov", ".mkv", ".webm")


def is_clip_data(data) -> bool:
    """True when ``data`` is a RAVDESS index or a folder holding video clips (not face images)."""
    if isinstance(data, pd.DataFrame):
        return True
    folder = Path(data)
    return folder.is_dir() and any(p.suffix.lower() in CLIP_SUFFIXES for p in files_under(folder))


def clip_table(run_dir: Path, info: dict, data, model, progress: bool) -> pd.DataFrame:
    """Prediction table of a faces run on the video clips of a RAVDESS folder, one row per take.

    Each clip goes through :func:`file_prediction` (frames -> faces -> clip mean), as in
    `mer predict`; clips without a usable face are listed in ``attrs["skipped"]``. The rows carry
    the RAVDESS take ids, so the table lines up with other runs' tables (`mer fuse --data`).
    """
    from tqdm.auto import tqdm

    from mer_utils.evaluation import prediction_table
    from mer_utils.ravdess import video_takes

    index = video_takes(data)
    skipped = list(index.attrs.get("skipped", []))
    rows, probabilities = [], []
    for row in tqdm(list(index.itertuples()), desc="faces per clip", disable=not progress):
        outcome = file_prediction(run_dir, info, Path(row.path), model)
        if not outcome["available"]:
            skipped.append({"path": str(row.path), "reason": str(outcome.get("reason"))})
            continue
        rows.append(row)
        probabilities.append(outcome["probabilities"])
    labels = list(info["labels"])
    if not rows:
        table = prediction_table(np.zeros((0, len(labels))), labels, [], [], [])
    else:
        table = prediction_table(
            np.asarray(probabilities),
            labels,
            [r.take for r in rows],
            [r.emotion for r in rows],
            [str(r.path) for r in rows],
        )
    table.attrs["skipped"] = skipped
    return table


def table_of(run_dir: Path, info: dict, data, model, degradation, progress: bool) -> pd.DataFrame:
    """Prediction table of a loaded model on every image of the labelled folder ``data``, or on
    every clip of a RAVDESS folder (:func:`clip_table`)."""
    from mer_utils.face_images import index_face_images, load_face_images

    if is_clip_data(data):
        if degradation is not None:
            raise ValueError(f"{data}: a faces run degrades face images, not clips")
        return clip_table(run_dir, info, data, model, progress)
    data = Path(data)
    index = index_face_images(data)
    decoded = load_face_images(index, int(info["input_size"]), bool(info["grayscale"]), progress=progress)
    table = image_table(model, decoded.images, decoded.index, list(info["labels"]), _present(info), data)
    table.attrs["skipped"] = list(index.attrs.get("skipped", [])) + decoded.skipped
    return table


def evaluation_extras(info: dict, table: pd.DataFrame) -> dict:
    """Metrics over the labels present in training only."""
    return {"present_labels": present_label_metrics(table, list(info["labels"]), _present(info))}


def file_prediction(run_dir: Path, info: dict, path: Path, model) -> dict:
    """This branch's part of :func:`predict_file`.

    A clip goes frames -> faces (MTCNN, aligned by the eyes per :func:`clip_face_params`; Haar, centre
    crop) -> frame probabilities -> clip mean weighted by confidence and face size;
    an image file is classified as it is (it is taken to be a face crop already).
    """
    from mer_utils.face_images import IMAGE_SUFFIXES, decode_image
    from mer_utils.faces import extract_clip_faces
    from mer_utils.media import sampled_frame_seconds
    from mer_utils.pipelines.base import unavailable

    started = time.perf_counter()
    seconds = None
    try:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file")
            clip = _image_clip(decode_image(path, int(info["input_size"]), bool(info["grayscale"]))[None])
        else:
            params = clip_face_params(info)
            clip = extract_clip_faces(path, params)
            seconds = sampled_frame_seconds(path, params.num_frames, params.start, params.stop)
    except (FileNotFoundError, ValueError) as error:  # MediaError / NoVideoStreamError are ValueErrors
        return unavailable(str(error), {"path": str(path)})
    return _faces_answer(run_dir, info, clip, model, str(path), started, seconds)


def clip_face_params(info: dict):
    """The face parameters of a run's clip crops: run.json's ``faces``, CLIP_ALIGNMENT where it is silent."""
    from mer_utils.faces import FaceParams

    return FaceParams(**{**CLIP_ALIGNMENT, **info["faces"]})


def _image_clip(faces: np.ndarray):
    """An image file as a one-frame clip: no detector ran, so its weight is 1."""
    from mer_utils.faces import ClipFaces

    side = float(faces.shape[1])
    return ClipFaces(
        faces=faces, detectors=["image"], confidences=np.ones(1), boxes=np.array([[0, 0, side, side]])
    )


def segment_prediction(run_dir: Path, info: dict, segment, model) -> dict:
    """This branch's part of :func:`~mer_utils.pipelines.base.predict_segment`: a window's frames, as a clip's."""
    from mer_utils.faces import faces_from_frames
    from mer_utils.pipelines.base import unavailable

    if segment.frames is None or not len(segment.frames):
        return unavailable(f"{segment.name}: {segment.frames_reason or 'no video frame in this window'}")
    started = time.perf_counter()
    clip = faces_from_frames(segment.frames, clip_face_params(info))
    return _faces_answer(run_dir, info, clip, model, segment.name, started)


def _faces_answer(
    run_dir: Path,
    info: dict,
    clip,
    model,
    where: str,
    started: float,
    seconds=None,
) -> dict:
    """Frame probabilities of the found faces and their mean: the answer of a clip, a window or an image.

    ``clip`` is a :class:`~mer_utils.faces.ClipFaces` (detector "image" for an image file); the
    clip mean weights each face by :func:`~mer_utils.faces.frame_weights`.
    ``details["face_frames"]`` holds each classified face's frame, time (``seconds``: the times of
    the sampled frames, when known), label, probabilities, weight and whether it was aligned; the
    crops go under ``ARRAYS_KEY``.
    """
    from mer_utils.faces import frame_weights, weighted_clip_mean
    from mer_utils.models.faces import face_probabilities
    from mer_utils.pipelines.base import ARRAYS_KEY, face_frame_records, unavailable

    labels, present = list(info["labels"]), _present(info)
    detectors = clip.detectors
    keep = np.array([d != "none" for d in detectors])
    faces, weights = clip.faces[keep], frame_weights(clip)[keep]
    counts = pd.Series(detectors).value_counts().to_dict()
    details = {
        "path": where,
        "frames": len(detectors),
        "detectors": {str(k): int(v) for k, v in counts.items()},
        "fallback_share": float(np.mean([d not in ("mtcnn", "image") for d in detectors])),
        "face_seconds": round(time.perf_counter() - started, 3),
        "aligned_frames": int(np.asarray(clip.aligned)[keep].sum()),
    }
    if not len(faces):
        return unavailable(f"{where}: no face found in any frame", details)
    network = model if model is not None else base.load_model(run_dir, BRANCH)
    started = time.perf_counter()
    frame_probabilities = face_probabilities(network, faces, present, batch_size=64)
    probabilities = weighted_clip_mean(frame_probabilities, weights)
    details["model_seconds"] = round(time.perf_counter() - started, 3)
    details["predicted"] = labels[int(np.argmax(probabilities))]
    details["frame_predictions"] = [labels[int(k)] for k in frame_probabilities.argmax(axis=1)]
    used = [k for k, detector in enumerate(detectors) if detector != "none"]
    details["face_frames"] = face_frame_records(frame_probabilities, labels, used, detectors, seconds)
    for record, weight, aligned in zip(
        details["face_frames"], weights, np.asarray(clip.aligned)[keep], strict=True
    ):
        record["weight"] = round(float(weight), 4)
        record["aligned"] = bool(aligned)
    return {
        "available": True,
        "reason": None,
        "probabilities": [float(p) for p in probabilities],
        "details": details,
        ARRAYS_KEY: {"face_crops": faces},
    }
