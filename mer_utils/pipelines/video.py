"""Video branch: face crops of RAVDESS clips -> ResNet50 -> clip probabilities (``mer train video``).

Training is ``base.train("video", data, out, settings)`` (``mer train video``) calling this
module's hooks with :class:`VideoSettings` (``FULL`` / ``SMOKE``): ``choose`` names the model
(or the ``init`` face run it starts from), ``index`` keeps one file per take (audio-video mp4,
else video-only mp4), ``split`` splits by actor, ``features`` builds the network (unreachable
ImageNet weights fail first) and extracts cached face crops (:mod:`mer_utils.faces`), ``fit``
trains the ResNet50 of :mod:`mer_utils.models.video` on frames and ``tables`` gives one row per
take: the clip probability is the mean of its frames' probabilities.

Model variants (``--model``): ``resnet50`` (ImageNet weights, two-phase fine-tuning; the default
for real users) and ``resnet50-scratch`` (``weights=None``, the whole network trains from the
start). Smoke mode always uses ``resnet50-scratch`` at a small input size, so it runs offline.

Missing faces and occlusion: a frame whose face is occluded (``predict_table(occlusion=...)``)
or not found by any detector is dropped from its clip's mean; a clip left without any frame
keeps its row with NaN probabilities and an empty ``pred_label`` and is listed in
``table.attrs["skipped"]``. Training and ``predict_table`` (``mer evaluate``) use the run's
detector chain (MTCNN, Haar, centre crop), so every readable frame yields a crop there;
``predict_file`` (``mer predict``) drops the centre crop: a frame without a detected face is
left out, and a clip without any is "video unavailable" with the reason.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.branches import get_branch
from mer_utils.config import DEFAULT_SEED, RAVDESS_EMOTIONS
from mer_utils.pipelines import base
from mer_utils.pipelines.base import Fitted, Settings

log = logging.getLogger(__name__)

# Branch name written into run.json (the CLI dispatches on it).
BRANCH = "video"
# Model variants: name -> ResNet50 weights.
MODEL_WEIGHTS = {"resnet50": "imagenet", "resnet50-scratch": None}
# Default model variant for real users (needs the ImageNet weights once).
DEFAULT_MODEL = get_branch(BRANCH).default_model


@dataclass(frozen=True)
class VideoSettings(Settings):
    """Frames, crops and training schedule of a video run (written to run.json ``"settings"``).

    A full run takes 8 frames per clip in the expressive window and 224-pixel crops and trains in
    two phases (the head at ``learning_rate``, then conv5 at ``fine_tune_learning_rate``); from
    scratch (weights None) one phase of ``frozen_epochs + fine_tune_epochs`` epochs at
    ``scratch_learning_rate``.
    """

    num_frames: int = 8
    start: float = 0.2
    stop: float = 0.8
    input_size: int = 224
    margin: float = 0.2
    frozen_epochs: int = 5
    fine_tune_epochs: int = 15
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    scratch_learning_rate: float = 3e-4
    batch_size: int = 32
    patience: int = 4
    # At most this many clips per actor, spread over the emotions (None: all).
    clips_per_actor: int | None = None
    # Actors of the test and val parts (None: drawn by actor_disjoint_split from the seed).
    test_actors: tuple[int, ...] | None = None
    val_actors: tuple[int, ...] | None = None
    # A `mer train faces` run folder to start from (its network, input size and weights), or None.
    init: str | None = None
    # Processes extracting faces (the results do not depend on it).
    workers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init is not None:
            object.__setattr__(self, "init", str(self.init))


FULL = VideoSettings()
# Smoke settings (CI, notebook smoke mode): a from-scratch ResNet50 on 4 small crops per clip,
# sized so notebook 02 (face extraction included) runs in a few minutes on 2 cores; lr 3e-4 with
# per-image standardisation trains steadily where lr 1e-3 made the from-scratch loss jump.
SMOKE = replace(
    FULL, num_frames=4, input_size=32, frozen_epochs=12, fine_tune_epochs=0, batch_size=16, patience=6
)
# Detector chain of every run (recorded in run.json).
DETECTOR_CHAIN = ("mtcnn", "haar", "center")
# Default seed for splits, subsets, occlusion draws and the model.
SEED = DEFAULT_SEED


# --- data ---------------------------------------------------------------------------------


def video_index(data: str | Path | pd.DataFrame) -> pd.DataFrame:
    """One video file per take (audio-video mp4, else video-only mp4) from a folder or an index.

    Audio-only .wav files carry no face: takes with nothing else are listed in ``attrs["skipped"]``.
    """
    from mer_utils.ravdess import video_takes

    return video_takes(data)


def limit_clips_per_actor(index: pd.DataFrame, clips_per_actor: int | None, seed: int = SEED) -> pd.DataFrame:
    """Keep at most ``clips_per_actor`` clips of each actor, spread over the emotions (for smoke runs)."""
    if clips_per_actor is None:
        return index
    rng = np.random.default_rng(seed)
    shuffled = index.iloc[rng.permutation(len(index))].copy()
    # Rank inside each (actor, emotion) so taking the lowest ranks first covers every emotion.
    shuffled["_rank"] = shuffled.groupby(["actor", "emotion"]).cumcount()
    kept = shuffled.sort_values(["actor", "_rank"], kind="stable").groupby("actor").head(clips_per_actor)
    return kept.drop(columns="_rank").sort_values(["actor", "clip_id"]).reset_index(drop=True)


@dataclass
class FrameSet:
    """Frames of several clips ready for the model, with the clip each frame belongs to."""

    x: np.ndarray  # preprocessed faces (n_frames, S, S, 3)
    y: np.ndarray  # frame labels (n_frames,)
    owner: np.ndarray  # clip row of each frame (n_frames,)
    clips: pd.DataFrame  # one row per clip (index rows that have faces)


def frame_set(
    clips: pd.DataFrame,
    faces: dict,
    labels: list[str],
    occlusion: float = 0.0,
    seed: int = SEED,
) -> FrameSet:
    """Stack the face crops of ``clips`` (rows of an index) into model inputs.

    Frames without a face (detector "none") and, with ``occlusion`` > 0, a random share of
    each clip's frames (drawn per clip from ``seed`` and the take id) are left out.
    """
    from mer_utils.faces import preprocess_faces
    from mer_utils.training import encode_labels

    if not 0.0 <= occlusion <= 1.0:
        raise ValueError(f"occlusion must be a share between 0 and 1, got {occlusion}")
    clips = clips[clips["path"].astype(str).isin(faces)].reset_index(drop=True)
    stacks, owners = [], []
    for row, (path, take) in enumerate(
        zip(clips["path"].astype(str), clips["take"].astype(str), strict=True)
    ):
        clip = faces[path]
        keep = np.array([d != "none" for d in clip.detectors])
        if occlusion > 0:
            rng = np.random.default_rng([seed, zlib.crc32(take.encode())])
            hidden = rng.choice(len(keep), size=int(round(occlusion * len(keep))), replace=False)
            keep[hidden] = False
        stacks.append(clip.faces[keep])
        owners.append(np.full(int(keep.sum()), row))
    size = next((s.shape[1] for s in stacks if len(s)), 1)
    x = np.concatenate(stacks) if stacks else np.zeros((0, size, size, 3), np.uint8)
    owner = np.concatenate(owners).astype(int) if owners else np.zeros(0, int)
    y = (
        encode_labels(clips["emotion"].astype(str).to_numpy()[owner], labels)
        if len(owner)
        else np.zeros(0, int)
    )
    return FrameSet(x=preprocess_faces(x) if len(x) else x.astype(np.float32), y=y, owner=owner, clips=clips)


def _face_params(settings: VideoSettings):
    from mer_utils.faces import FaceParams

    return FaceParams(
        num_frames=settings.num_frames,
        start=settings.start,
        stop=settings.stop,
        size=settings.input_size,
        margin=settings.margin,
        detectors=DETECTOR_CHAIN,
    )


def _skipped_records(failed: pd.DataFrame) -> list[dict]:
    return [{"path": str(p), "reason": str(r)} for p, r in zip(failed["path"], failed["reason"], strict=True)]


# --- training: the hooks of base.train ----------------------------------------------------------


def choose(model: str | None, settings: VideoSettings, smoke: bool) -> tuple[str, VideoSettings]:
    """The model run.json records and the settings it trains with.

    With ``settings.init`` (a ``mer train faces`` run folder) the face run decides the network and
    its input size, and the model is ``init:<face model>``; else ``model`` is a key of
    :data:`MODEL_WEIGHTS` (smoke runs default to ``resnet50-scratch``, which runs offline).
    """
    if settings.init is not None:
        if model is not None:
            raise ValueError("give either --model or --init (the face run decides the architecture)")
        face_info = base.run_info(settings.init, "faces")
        return f"init:{face_info['model']}", replace(settings, input_size=int(face_info["input_size"]))
    name = model or ("resnet50-scratch" if smoke else DEFAULT_MODEL)
    if name not in MODEL_WEIGHTS:
        raise ValueError(f"unknown video model {name!r}; expected one of {sorted(MODEL_WEIGHTS)}")
    return name, settings


def index(data: str | Path | pd.DataFrame, settings: VideoSettings) -> pd.DataFrame:
    """One video file per take of ``data`` (:func:`video_index`); audio-only takes in ``attrs["skipped"]``."""
    found = video_index(data)
    found.attrs["data"] = "the given index" if isinstance(data, pd.DataFrame) else str(data)
    return found


def split(index: pd.DataFrame, settings: VideoSettings, seed: int) -> pd.DataFrame:
    """Actor-disjoint parts (4/2/2 actors on the 8-actor demo set, 16/4/4 on all 24), or the settings' actors."""
    from mer_utils.ravdess import actor_disjoint_split

    parts = actor_disjoint_split(
        index,
        seed=seed,
        test_actors=list(settings.test_actors) if settings.test_actors is not None else None,
        val_actors=list(settings.val_actors) if settings.val_actors is not None else None,
    )
    parts.attrs["data"] = index.attrs["data"]
    return parts


def split_record(index: pd.DataFrame, features: dict) -> dict:
    """run.json's ``split``: the actors of each part."""
    return {
        part: sorted(int(actor) for actor in index.loc[index["split"] == part, "actor"].unique())
        for part in ("train", "val", "test")
    }


def features(index: pd.DataFrame, settings: VideoSettings, model: str, seed: int, progress: bool) -> dict:
    """The untrained network, then the face crops of at most ``clips_per_actor`` clips per actor, as frames.

    The network comes first: unreachable ImageNet weights fail, with a clear message, before any
    face is extracted. With ``settings.init`` it copies the face run's architecture and weights.
    """
    from mer_utils.config import set_seed
    from mer_utils.faces import extract_faces

    labels = list(RAVDESS_EMOTIONS)
    set_seed(seed, keras=True)
    if settings.init is not None:
        from mer_utils.models.faces import network_like_face_run

        face_info = base.run_info(settings.init, "faces")
        network = network_like_face_run(
            {**face_info, "run_dir": str(settings.init)},
            lambda: base.load_model(settings.init, "faces"),
            num_classes=len(labels),
            seed=seed,
        )
        weights = None
    else:
        from mer_utils.models.video import build_video_model

        weights = MODEL_WEIGHTS[model]
        network = build_video_model(
            weights=weights, input_size=settings.input_size, num_classes=len(labels), seed=seed
        )
    index = limit_clips_per_actor(index, settings.clips_per_actor, seed=seed)
    params = _face_params(settings)
    started = time.perf_counter()
    extraction = extract_faces(index["path"], params, workers=settings.workers, progress=progress)
    face_seconds = time.perf_counter() - started
    parts = {
        part: frame_set(index[index["split"] == part], extraction.faces, labels, seed=seed)
        for part in ("train", "val", "test")
    }
    for part, frames in parts.items():
        if len(frames.x) == 0:
            raise ValueError(
                f"{index.attrs['data']}: no usable {part} clips after face extraction (see the skipped clips)"
            )
    return {
        "network": network,
        "weights": weights,
        "params": params,
        "parts": parts,
        "extraction": extraction,
        "face_seconds": face_seconds,
        "skipped": _skipped_records(extraction.failed),
    }


def fit(features: dict, settings: VideoSettings, model: str, seed: int) -> Fitted:
    """Train on frames with :func:`mer_utils.models.video.train_video_model` (two phases from ImageNet, else one)."""
    from mer_utils.models.video import train_video_model
    from mer_utils.pipelines.out_of_fold import network_reason

    network, weights, parts = features["network"], features["weights"], features["parts"]
    training = train_video_model(
        network,
        parts["train"].x,
        parts["train"].y,
        parts["val"].x,
        parts["val"].y,
        pretrained=weights is not None,
        frozen_epochs=settings.frozen_epochs,
        fine_tune_epochs=settings.fine_tune_epochs,
        # From scratch, lr 1e-3 made the loss jump between epochs; 3e-4 trains steadily.
        learning_rate=settings.learning_rate if weights is not None else settings.scratch_learning_rate,
        fine_tune_learning_rate=settings.fine_tune_learning_rate,
        batch_size=settings.batch_size,
        patience=settings.patience,
        verbose=0,
    )
    extraction = features["extraction"]
    detail = extraction.fallback_table()
    init = str(settings.init) if settings.init is not None else None
    return Fitted(
        model=network,
        model_format="keras",
        history=training.history,
        phases=training.phases,
        info={
            "weights": weights,
            "input_size": settings.input_size,
            "faces": features["params"].as_dict(),
            "init": init,
        },
        metrics={
            "weights": weights,
            "init": init,
            "input_size": settings.input_size,
            "frames_per_clip": settings.num_frames,
            "train_frames": len(parts["train"].x),
            "fallback_share": extraction.total_fallback_share(),
            "fallback_clips": int((detail["fallback_share"] > 0).sum()),
            "face_seconds": round(features["face_seconds"], 1),
            "train_seconds": round(training.seconds, 1),
            "epochs": len(training.history.get("loss", [])),
            "phases": training.phases,
        },
        out_of_fold_reason=network_reason(training.seconds),
    )


def tables(fitted: Fitted, features: dict, settings: VideoSettings, labels: list[str]) -> dict:
    """Val and test prediction tables, one row per take (the mean of its frames' probabilities)."""
    return {
        part: _table_from_frames(fitted.model, features["parts"][part], labels) for part in ("val", "test")
    }


def _table_from_frames(network, frames: FrameSet, labels: list[str]) -> pd.DataFrame:
    """Prediction table (one row per take) from a FrameSet: clip = mean of its frame probabilities."""
    from mer_utils.evaluation import prediction_table
    from mer_utils.models.video import clip_probabilities
    from mer_utils.training import predict_probabilities

    num_clips = len(frames.clips)
    if len(frames.x):
        frame_probabilities = predict_probabilities(network, frames.x, batch_size=64)
        probabilities = clip_probabilities(frame_probabilities, frames.owner, num_clips)
    else:
        probabilities = np.full((num_clips, len(labels)), np.nan)
    table = prediction_table(
        np.nan_to_num(probabilities, nan=0.0),
        labels,
        clip_ids=frames.clips["take"].astype(str).tolist(),
        true_labels=frames.clips["emotion"].astype(str).tolist(),
        paths=frames.clips["path"].astype(str).tolist(),
    )
    # Clips without a usable frame: NaN probabilities and no predicted label, never a guess.
    missing = np.isnan(probabilities).any(axis=1)
    if missing.any():
        prob_cols = [c for c in table.columns if c.startswith("prob_")]
        table.loc[missing, prob_cols] = np.nan
        table.loc[missing, "pred_label"] = ""
    return table


# --- prediction on saved runs -------------------------------------------------------------


def load(run_dir: Path, info: dict):
    """This branch's model loader: run.json's face parameters are checked before the model is read."""
    from mer_utils.runs import load_model_file

    _face_params_of(run_dir, info)
    return load_model_file(run_dir, info)


def _face_params_of(run_dir: str | Path, info: dict):
    from mer_utils.faces import FaceParams

    try:
        return FaceParams(**info["faces"])
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{Path(run_dir) / 'run.json'}: missing or malformed 'faces' parameters ({error}); retrain the run"
        ) from error


def table_of(
    run_dir: Path, info: dict, data, model, degradation, progress: bool, workers: int = 1
) -> pd.DataFrame:
    """Prediction table of a loaded model on the clips of ``data``; "occlusion" hides a share of face frames."""
    from mer_utils.faces import extract_faces

    params, labels = _face_params_of(run_dir, info), list(info["labels"])
    occlusion = float(degradation.level) if degradation is not None else 0.0
    seed = degradation.seed if degradation is not None else SEED
    index = video_index(data)
    extraction = extract_faces(index["path"], params, workers=workers, progress=progress)
    frames = frame_set(index, extraction.faces, labels, occlusion=occlusion, seed=seed)
    table = _table_from_frames(model, frames, labels)
    skipped = list(index.attrs["skipped"]) + _skipped_records(extraction.failed)
    empty = table["pred_label"] == ""
    skipped += [
        {"path": str(p), "reason": "no usable face frame (all occluded or not found)"}
        for p in table.loc[empty, "path"]
    ]
    table.attrs["skipped"] = skipped
    table.attrs["fallback_share"] = extraction.total_fallback_share()
    return table


def evaluation_extras(info: dict, table: pd.DataFrame) -> dict:
    """The share of kept frames that were not MTCNN faces."""
    return {"fallback_share": table.attrs.get("fallback_share")}


def file_prediction(run_dir: Path, info: dict, path: Path, model) -> dict:
    """This branch's part of :func:`predict_file`: detected faces -> frame probabilities -> clip mean.

    ``available`` is False (with the reason) for a missing or unreadable file, a clip without a
    video stream, or no face in any frame. Only detected faces count (MTCNN, then the Haar
    fallback): the centre-crop fallback of training is never called a face here, so frames
    without a detected face are dropped and ``details["frames_with_face"]`` says how many were kept;
    ``details["fallback_share"]`` says how many kept frames were not MTCNN faces.
    """
    from mer_utils.faces import extract_clip_faces
    from mer_utils.media import sampled_frame_seconds
    from mer_utils.pipelines.base import unavailable

    params = _prediction_face_params(run_dir, info)
    started = time.perf_counter()
    try:
        clip = extract_clip_faces(path, params)
        seconds = sampled_frame_seconds(path, params.num_frames, params.start, params.stop)
    except (FileNotFoundError, ValueError) as error:  # MediaError / NoVideoStreamError are ValueErrors
        return unavailable(str(error), {"path": str(path)})
    return _clip_answer(run_dir, info, clip, params, model, str(path), time.perf_counter() - started, seconds)


def segment_prediction(run_dir: Path, info: dict, segment, model) -> dict:
    """This branch's part of :func:`~mer_utils.pipelines.base.predict_segment`: a window's frames, as a clip's."""
    from mer_utils.faces import faces_from_frames
    from mer_utils.pipelines.base import unavailable

    if segment.frames is None or not len(segment.frames):
        return unavailable(f"{segment.name}: {segment.frames_reason or 'no video frame in this window'}")
    params = _prediction_face_params(run_dir, info)
    started = time.perf_counter()
    clip = faces_from_frames(segment.frames, params)
    return _clip_answer(run_dir, info, clip, params, model, segment.name, time.perf_counter() - started)


def _prediction_face_params(run_dir: Path, info: dict):
    """The run's face parameters with only real detectors: a centre crop of a wall is not a face."""
    from dataclasses import replace

    params = _face_params_of(run_dir, info)
    detectors = tuple(d for d in params.detectors if d != "center") or ("mtcnn", "haar")
    return replace(params, detectors=detectors)


def _clip_answer(
    run_dir: Path, info: dict, clip, params, model, where: str, face_seconds: float, seconds=None
) -> dict:
    """Frame probabilities of the detected faces and their mean: the answer of a clip or a window.

    ``details["face_frames"]`` holds each detected face's frame, time (``seconds``: the times of
    the sampled frames, when known), label and probabilities; the crops go under ``ARRAYS_KEY``.
    """
    from mer_utils.faces import frame_weights, preprocess_faces, weighted_clip_mean
    from mer_utils.pipelines.base import ARRAYS_KEY, face_frame_records, unavailable
    from mer_utils.training import predict_probabilities

    labels = list(info["labels"])
    counts = pd.Series(clip.detectors).value_counts().to_dict()
    keep = np.array([d != "none" for d in clip.detectors])
    found = [d for d in clip.detectors if d != "none"]
    details = {
        "path": where,
        "frames": len(clip.detectors),
        "frames_with_face": int(keep.sum()),
        "detectors": {str(k): int(v) for k, v in counts.items()},
        "fallback_share": float(np.mean([d != "mtcnn" for d in found])) if found else float("nan"),
        "face_seconds": round(face_seconds, 3),
        "aligned_frames": int(clip.aligned[keep].sum()),
    }
    if not keep.any():
        return unavailable(
            f"{where}: no face found in any of the {len(clip.detectors)} sampled frames "
            f"(detectors: {', '.join(params.detectors)})",
            details,
        )
    network = model if model is not None else base.load_model(run_dir, BRANCH)
    started = time.perf_counter()
    frame_probabilities = predict_probabilities(network, preprocess_faces(clip.faces[keep]))
    # Frames weigh by detection confidence and face size (all equal for sure, large faces).
    weights = frame_weights(clip)[keep]
    probabilities = weighted_clip_mean(frame_probabilities, weights)
    details["model_seconds"] = round(time.perf_counter() - started, 3)
    details["predicted"] = labels[int(np.argmax(probabilities))]
    details["face_frames"] = face_frame_records(
        frame_probabilities, labels, np.flatnonzero(keep).tolist(), clip.detectors, seconds
    )
    for record, weight, aligned in zip(details["face_frames"], weights, clip.aligned[keep], strict=True):
        record["weight"] = round(float(weight), 4)
        record["aligned"] = bool(aligned)
    return {
        "available": True,
        "reason": None,
        "probabilities": [float(p) for p in probabilities],
        "details": details,
        ARRAYS_KEY: {"face_crops": clip.faces[keep]},
    }
