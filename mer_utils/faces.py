"""Face crops from video clips: frame sampling, MTCNN detection with fallbacks, crops and a disk cache.

A clip becomes ``num_frames`` face crops: frames are sampled evenly inside the fraction
``[start, stop]`` of the clip (RAVDESS actors look neutral before and after speaking, so the
default window 0.2-0.8 skips those edges), the most confident MTCNN face is kept, a margin is
added, the box is made square and the crop resized. When MTCNN finds nothing the OpenCV Haar
cascade is tried, then a centre crop; every frame records which detector produced it.
With ``align`` an MTCNN face is instead rotated so its eyes are level and cropped with the
geometry of a FER2013 image (eyes where FER2013's eyes are, at FER2013's eye distance); the
fallbacks have no landmarks and keep the box crop. With ``gray`` every crop is made grey (three
equal channels), as the FER2013-trained faces network saw in training. :func:`frame_weights`
weights each frame by its detection confidence and face size for the clip mean.
Crops are cached as uint8 ``.npz`` files under ``CACHE_DIR/faces/``, keyed by the clip (path,
size, modification time) and every parameter, so a re-run or an interrupted run only computes
what is missing. :func:`preprocess_faces` turns crops into ResNet50 inputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# Frames sampled per clip: enough to average out blinks and mid-word mouth shapes, cheap to detect.
NUM_FRAMES = 8
# Sampling window as fractions of the clip: RAVDESS clips open and close on a neutral face.
SAMPLE_START, SAMPLE_STOP = 0.2, 0.8
# Side of the square face crop in pixels (ResNet50's native input size).
FACE_SIZE = 224
# Margin added on every side of the detected box, as a share of the box side (keeps brows and chin).
MARGIN = 0.2
# Detector chain, tried in order; "center" always succeeds, so every frame gets a crop.
DETECTORS: tuple[str, ...] = ("mtcnn", "haar", "center")
# Known detector names.
KNOWN_DETECTORS = ("mtcnn", "haar", "center")
# MTCNN faces below this confidence are ignored (its false positives sit well below 0.9).
MIN_MTCNN_CONFIDENCE = 0.9
# Haar boxes smaller than this share of the shorter image side are ignored (texture false positives).
MIN_HAAR_FACE_SHARE = 0.15
# Side of the centre-crop fallback as a share of the shorter image side.
CENTER_CROP_SHARE = 0.8
# Bump when the crop algorithm changes, so stale cache entries are not reused.
CACHE_VERSION = 1
# Sub-folder of CACHE_DIR holding the face crops.
FACES_CACHE_FOLDER = "faces"
# Aligned crops put the midpoint of the eyes at this height (share of the crop side) and the eyes
# this far apart: the medians of MTCNN's eye landmarks on 227 FER2013 training images (300 drawn,
# upscaled 4x; 10th-90th percentiles 0.32-0.42 and 0.28-0.43), so an aligned crop is framed like
# the images the faces network learnt from.
ALIGNED_EYE_HEIGHT = 0.39
ALIGNED_EYE_DISTANCE = 0.36
# Eyes closer than this many pixels in the frame give no reliable angle: such a face keeps the box crop.
MIN_EYE_DISTANCE = 4.0
# A lighter detector path: MTCNN looks at the frame shrunk to this longer side, the crop is cut from
# the full frame (its cost grows with the pixels; faces of real clips stay far above its 20 px minimum).
DETECT_SIDE = 320
# Frame weights in the clip mean: a detected face box at least this many pixels on its longer side
# feeds a 48 px network at full detail (FER2013's own boxes are about 37 x 46 px); smaller faces
# count in proportion to their side.
FULL_DETAIL_FACE_SIDE = 48.0
# Confidence given to a Haar or centre-crop frame (they have no probability): half a sure MTCNN face.
FALLBACK_FRAME_CONFIDENCE = 0.5


@dataclass(frozen=True)
class FaceBox:
    """A face box in pixel coordinates (x, y = top-left corner) and the detector that found it."""

    x: float
    y: float
    width: float
    height: float
    confidence: float
    detector: str
    keypoints: dict = field(default_factory=dict, compare=False)

    @property
    def center(self) -> tuple[float, float]:
        """Centre of the box (x, y)."""
        return self.x + self.width / 2, self.y + self.height / 2

    def contains(self, point: Sequence[float]) -> bool:
        """Whether the point (x, y) lies inside the box."""
        px, py = point
        return self.x <= px <= self.x + self.width and self.y <= py <= self.y + self.height


@dataclass
class FaceParams:
    """Everything that decides the crops of a clip (and therefore its cache key)."""

    num_frames: int = NUM_FRAMES
    start: float = SAMPLE_START
    stop: float = SAMPLE_STOP
    size: int = FACE_SIZE
    margin: float = MARGIN
    detectors: tuple[str, ...] = DETECTORS
    # Eye-level rotation and FER2013 framing of MTCNN faces (the fallbacks keep the box crop).
    align: bool = False
    # Grey crops (three equal channels), as a network trained on grey faces saw them.
    gray: bool = False
    # MTCNN on the frame shrunk to this longer side (None: full size); boxes are mapped back.
    detect_side: int | None = None

    def __post_init__(self) -> None:
        self.detectors = tuple(self.detectors)
        unknown = set(self.detectors) - set(KNOWN_DETECTORS)
        if unknown or not self.detectors:
            raise ValueError(
                f"detectors must be a non-empty subset of {KNOWN_DETECTORS}, got {self.detectors}"
            )
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {self.num_frames}")
        if not 0.0 <= self.start < self.stop <= 1.0:
            raise ValueError(f"need 0 <= start < stop <= 1, got start={self.start}, stop={self.stop}")
        if self.size < 8:
            raise ValueError(f"crop size must be at least 8 pixels, got {self.size}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.detect_side is not None and self.detect_side < 48:
            raise ValueError(f"detect_side must be None or at least 48 pixels, got {self.detect_side}")

    def as_dict(self) -> dict:
        """JSON-ready parameters (stored in run.json and hashed into the cache key)."""
        return {
            "num_frames": int(self.num_frames),
            "start": float(self.start),
            "stop": float(self.stop),
            "size": int(self.size),
            "margin": float(self.margin),
            "detectors": list(self.detectors),
            "align": bool(self.align),
            "gray": bool(self.gray),
            "detect_side": None if self.detect_side is None else int(self.detect_side),
        }

    def cache_dict(self) -> dict:
        """The parameters hashed into the cache key: ``align``, ``gray``, ``detect_side`` only when on, so the
        crops cached before those options existed are still found."""
        return {k: v for k, v in self.as_dict().items() if k not in ("align", "gray", "detect_side") or v}


@dataclass
class ClipFaces:
    """The face crops of one clip and, per frame, the detector used and its confidence."""

    faces: np.ndarray  # uint8 (num_frames, size, size, 3), RGB, before preprocess_input
    detectors: list[str]
    confidences: np.ndarray  # float (num_frames,), NaN for the centre crop
    boxes: np.ndarray  # float (num_frames, 4): x, y, width, height in the frame
    aligned: np.ndarray | None = None  # bool (num_frames,): crop rotated and framed by the eyes

    def __post_init__(self) -> None:
        if self.aligned is None:
            self.aligned = np.zeros(len(self.detectors), bool)

    @property
    def fallback_share(self) -> float:
        """Share of frames whose crop did not come from MTCNN (Haar or centre crop)."""
        if not self.detectors:
            return float("nan")
        return float(np.mean([d != "mtcnn" for d in self.detectors]))


# --- detectors ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def get_mtcnn():
    """The MTCNN detector, built once per process (it loads TensorFlow and its weights)."""
    from mtcnn import MTCNN

    return MTCNN()


@functools.lru_cache(maxsize=1)
def get_haar_cascade():
    """The OpenCV frontal-face Haar cascade, loaded once per process."""
    import cv2

    if not hasattr(cv2, "data"):
        raise RuntimeError(
            "this OpenCV build ships no Haar cascades (OpenCV 5 dropped them); install opencv<5"
        )
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise RuntimeError("the OpenCV Haar face cascade could not be loaded")
    return cascade


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
        raise ValueError(f"expected an RGB image of shape (H, W, 3) with H, W >= 8, got {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def _best_mtcnn_face(results: list[dict]) -> FaceBox | None:
    faces = [r for r in results if float(r["confidence"]) >= MIN_MTCNN_CONFIDENCE]
    if not faces:
        return None
    best = max(faces, key=lambda r: float(r["confidence"]))
    x, y, width, height = (float(v) for v in best["box"])
    keypoints = {k: (float(v[0]), float(v[1])) for k, v in best.get("keypoints", {}).items()}
    return FaceBox(x, y, width, height, float(best["confidence"]), "mtcnn", keypoints)


def detect_faces_mtcnn(images: Sequence[np.ndarray], detect_side: int | None = None) -> list[FaceBox | None]:
    """Most confident MTCNN face of each image (None where it finds none above MIN_MTCNN_CONFIDENCE).

    Images of one size are detected as one batch (about 4x faster than one by one). With
    ``detect_side`` an image whose longer side exceeds it is shrunk to it for detection, and the
    box and landmarks are mapped back to the full image.
    """
    images = [_check_image(image) for image in images]
    if not images:
        return []
    if detect_side is not None:
        scales = [min(1.0, detect_side / max(image.shape[:2])) for image in images]
        shrunk = [_shrink(image, scale) for image, scale in zip(images, scales, strict=True)]
        found = detect_faces_mtcnn(shrunk)
        return [
            None if box is None else _scale_box(box, 1 / scale)
            for box, scale in zip(found, scales, strict=True)
        ]
    detector = get_mtcnn()
    if len(images) > 1 and len({image.shape for image in images}) == 1:
        results = detector.detect_faces(list(images))
    else:
        results = [detector.detect_faces(image) for image in images]
    return [_best_mtcnn_face(r or []) for r in results]


def _shrink(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _scale_box(box: FaceBox, factor: float) -> FaceBox:
    """The box and landmarks of a shrunk image in the coordinates of the full one."""
    keypoints = {name: (x * factor, y * factor) for name, (x, y) in box.keypoints.items()}
    return FaceBox(
        box.x * factor,
        box.y * factor,
        box.width * factor,
        box.height * factor,
        box.confidence,
        box.detector,
        keypoints,
    )


def detect_face_haar(image: np.ndarray) -> FaceBox | None:
    """The Haar-cascade face with the highest level weight (None if there is none)."""
    import cv2

    image = _check_image(image)
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    min_side = max(20, int(MIN_HAAR_FACE_SHARE * min(gray.shape)))
    boxes, _, weights = get_haar_cascade().detectMultiScale3(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side), outputRejectLevels=True
    )
    if len(boxes) == 0:
        return None
    best = int(np.argmax(np.asarray(weights).reshape(-1)))
    x, y, width, height = (float(v) for v in boxes[best])
    return FaceBox(x, y, width, height, float(np.asarray(weights).reshape(-1)[best]), "haar")


def center_box(image_shape: Sequence[int]) -> FaceBox:
    """The centre-crop fallback: a centred square of CENTER_CROP_SHARE of the shorter side."""
    height, width = int(image_shape[0]), int(image_shape[1])
    side = CENTER_CROP_SHARE * min(height, width)
    return FaceBox((width - side) / 2, (height - side) / 2, side, side, float("nan"), "center")


def detect_faces(
    images: Sequence[np.ndarray], detectors: Sequence[str] = DETECTORS, detect_side: int | None = None
) -> list[FaceBox | None]:
    """One face box per image through the detector chain (None only if the chain has no "center").

    ``detect_side`` shrinks the images for MTCNN only (see :func:`detect_faces_mtcnn`).
    """
    images = [_check_image(image) for image in images]
    boxes: list[FaceBox | None] = [None] * len(images)
    for detector in detectors:
        missing = [i for i, box in enumerate(boxes) if box is None]
        if not missing:
            break
        if detector == "mtcnn":
            found = detect_faces_mtcnn([images[i] for i in missing], detect_side)
        elif detector == "haar":
            found = [detect_face_haar(images[i]) for i in missing]
        elif detector == "center":
            found = [center_box(images[i].shape) for i in missing]
        else:
            raise ValueError(f"unknown detector {detector!r}; expected one of {KNOWN_DETECTORS}")
        for i, box in zip(missing, found, strict=True):
            boxes[i] = box
    return boxes


def detect_face(image: np.ndarray, detectors: Sequence[str] = DETECTORS) -> FaceBox | None:
    """One face box for one image through the detector chain."""
    return detect_faces([image], detectors)[0]


# --- crops --------------------------------------------------------------------------------


def square_box(box: FaceBox, image_shape: Sequence[int], margin: float = MARGIN) -> tuple[int, int, int, int]:
    """Square (x0, y0, x1, y1) around the box centre, ``margin`` added per side, shifted inside the image.

    The side is the longer box side times (1 + 2 * margin), capped at the shorter image side, so
    the crop never needs padding and keeps the face's aspect ratio.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    side = int(round(max(box.width, box.height) * (1 + 2 * margin)))
    side = max(1, min(side, height, width))
    center_x, center_y = box.center
    x0 = int(round(center_x - side / 2))
    y0 = int(round(center_y - side / 2))
    x0 = min(max(x0, 0), width - side)
    y0 = min(max(y0, 0), height - side)
    return x0, y0, x0 + side, y0 + side


def crop_face(image: np.ndarray, box: FaceBox, size: int = FACE_SIZE, margin: float = MARGIN) -> np.ndarray:
    """Square crop of the face with a margin, resized to (size, size, 3) uint8."""
    import cv2

    image = _check_image(image)
    x0, y0, x1, y1 = square_box(box, image.shape, margin)
    crop = image[y0:y1, x0:x1]
    # INTER_AREA when shrinking avoids aliasing; INTER_LINEAR when enlarging small faces.
    interpolation = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def eye_landmarks(box: FaceBox) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The two eye centres of a face, left one first in the image (None without usable landmarks)."""
    if "left_eye" not in box.keypoints or "right_eye" not in box.keypoints:
        return None
    first, second = sorted([tuple(box.keypoints["left_eye"]), tuple(box.keypoints["right_eye"])])
    if np.hypot(second[0] - first[0], second[1] - first[1]) < MIN_EYE_DISTANCE:
        return None
    return first, second


def align_face(
    image: np.ndarray,
    left_eye: Sequence[float],
    right_eye: Sequence[float],
    size: int = FACE_SIZE,
) -> np.ndarray:
    """Crop of a face rotated so the eyes are level and framed like FER2013, (size, size, 3) uint8.

    ``left_eye`` / ``right_eye`` are the eye centres (x, y) in the image, the left one in the
    image first. One similarity transform (rotation, scale, shift) puts their midpoint at
    (size / 2, ALIGNED_EYE_HEIGHT * size) and sets them ALIGNED_EYE_DISTANCE * size apart;
    pixels beyond the image edge repeat the border.
    """
    import cv2

    image = _check_image(image)
    (left_x, left_y), (right_x, right_y) = (float(v) for v in left_eye), (float(v) for v in right_eye)
    distance = float(np.hypot(right_x - left_x, right_y - left_y))
    if distance < MIN_EYE_DISTANCE or right_x <= left_x:
        raise ValueError(
            f"eyes at {tuple(left_eye)} and {tuple(right_eye)}: need the left eye first and at least "
            f"{MIN_EYE_DISTANCE} pixels between them"
        )
    angle = float(np.degrees(np.arctan2(right_y - left_y, right_x - left_x)))
    scale = ALIGNED_EYE_DISTANCE * size / distance
    center = ((left_x + right_x) / 2, (left_y + right_y) / 2)
    matrix = cv2.getRotationMatrix2D(center, angle, scale)
    matrix[0, 2] += size / 2 - center[0]
    matrix[1, 2] += ALIGNED_EYE_HEIGHT * size - center[1]
    # INTER_AREA has no warp variant; a shrinking warp of a large face uses a pre-shrunk frame instead.
    if scale < 0.5:
        shrink = 2 * scale
        image = cv2.resize(image, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        matrix[:, :2] /= shrink
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def to_gray(faces: np.ndarray) -> np.ndarray:
    """uint8 RGB crops (..., 3) made grey with three equal channels (OpenCV's luma weights)."""
    faces = np.asarray(faces)
    luma = faces[..., 0] * 0.299 + faces[..., 1] * 0.587 + faces[..., 2] * 0.114
    gray = np.clip(np.round(luma), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def frame_weights(clip: ClipFaces) -> np.ndarray:
    """Weight of each frame in the clip mean: detection confidence times face size, 0 without a face.

    Confidence is MTCNN's probability (FALLBACK_FRAME_CONFIDENCE for a Haar or centre crop); size is
    the box's longer side over FULL_DETAIL_FACE_SIDE, capped at 1. Equal faces weigh equally, so
    a clip of sure, large faces gets the plain mean.
    """
    detectors = np.asarray(clip.detectors, dtype=str)
    confidence = np.where(
        detectors == "mtcnn", np.nan_to_num(clip.confidences, nan=0.0), FALLBACK_FRAME_CONFIDENCE
    )
    boxes = np.asarray(clip.boxes, dtype=float).reshape(-1, 4)
    side = np.nan_to_num(np.maximum(boxes[:, 2], boxes[:, 3]), nan=FULL_DETAIL_FACE_SIDE)
    size = np.clip(side / FULL_DETAIL_FACE_SIDE, 0.0, 1.0)
    weights = np.clip(confidence, 0.0, 1.0) * size
    return np.where(detectors == "none", 0.0, weights)


def weighted_clip_mean(frame_probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of frame probabilities (the plain mean when every weight is 0)."""
    frame_probabilities = np.asarray(frame_probabilities, dtype=float)
    weights = np.asarray(weights, dtype=float)
    if frame_probabilities.ndim != 2 or len(weights) != len(frame_probabilities):
        raise ValueError(
            f"need one weight per frame: {len(weights)} weights for probabilities of shape "
            f"{frame_probabilities.shape}"
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"frame weights must be finite and >= 0, got {weights}")
    if weights.sum() <= 0:
        return frame_probabilities.mean(axis=0)
    return weights @ frame_probabilities / weights.sum()


def faces_from_frames(frames: np.ndarray, params: FaceParams | None = None) -> ClipFaces:
    """Detect, crop and resize the face of every frame (uint8 RGB frames (n, H, W, 3)).

    With ``params.align`` an MTCNN face with eye landmarks is aligned (:func:`align_face`); with
    ``params.gray`` every crop is made grey.
    """
    params = params or FaceParams()
    frames = np.asarray(frames)
    return crops_from_boxes(frames, detect_faces(list(frames), params.detectors, params.detect_side), params)


def crops_from_boxes(frames: np.ndarray, boxes: Sequence[FaceBox | None], params: FaceParams) -> ClipFaces:
    """The crops of frames whose faces are already found (one box or None per frame), per ``params``."""
    faces, detectors, confidences, coords, aligned = [], [], [], [], []
    for frame, box in zip(frames, boxes, strict=True):
        if box is None:
            # Only reachable when "center" is left out of the chain: keep a blank slot, marked "none".
            faces.append(np.zeros((params.size, params.size, 3), np.uint8))
            detectors.append("none")
            confidences.append(float("nan"))
            coords.append((np.nan,) * 4)
            aligned.append(False)
            continue
        eyes = eye_landmarks(box) if params.align and box.detector == "mtcnn" else None
        if eyes is not None:
            faces.append(align_face(frame, *eyes, size=params.size))
        else:
            faces.append(crop_face(frame, box, params.size, params.margin))
        aligned.append(eyes is not None)
        detectors.append(box.detector)
        confidences.append(box.confidence)
        coords.append((box.x, box.y, box.width, box.height))
    crops = np.stack(faces).astype(np.uint8)
    return ClipFaces(
        faces=to_gray(crops) if params.gray else crops,
        detectors=detectors,
        confidences=np.asarray(confidences, dtype=float),
        boxes=np.asarray(coords, dtype=float).reshape(-1, 4),
        aligned=np.asarray(aligned, dtype=bool),
    )


def extract_clip_faces(path: str | Path, params: FaceParams | None = None) -> ClipFaces:
    """Sample frames of one clip and crop their faces (no cache; see :func:`cached_clip_faces`).

    Raises ``FileNotFoundError`` / ``mer_utils.media.MediaError`` (``NoVideoStreamError`` for a
    .wav) naming the file when it cannot be read.
    """
    from mer_utils.media import read_frames

    params = params or FaceParams()
    frames = read_frames(path, params.num_frames, start=params.start, stop=params.stop)
    return faces_from_frames(frames, params)


def preprocess_faces(faces: np.ndarray) -> np.ndarray:
    """ResNet50 inputs from uint8 RGB crops: ``keras.applications.resnet50.preprocess_input`` (BGR, mean-centred)."""
    from keras.applications.resnet50 import preprocess_input

    return preprocess_input(np.asarray(faces, dtype=np.float32).copy())


# --- cache --------------------------------------------------------------------------------


def faces_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder of the face cache (default CACHE_DIR/faces)."""
    from mer_utils.cache import cache_dir as shared_cache_dir

    return shared_cache_dir(FACES_CACHE_FOLDER, cache_dir)


def face_cache_key(path: str | Path, params: FaceParams) -> str:
    """Cache key of a clip: its resolved path, size and mtime plus every crop parameter."""
    path = Path(path)
    stat = path.stat()
    payload = json.dumps(
        {
            "path": str(path.resolve()),
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "params": params.cache_dict(),
            "version": CACHE_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()


def face_cache_path(path: str | Path, params: FaceParams, cache_dir: str | Path | None = None) -> Path:
    """Where the crops of a clip are cached: ``<cache>/<clip stem>-<key>.npz``."""
    return faces_cache_dir(cache_dir) / f"{Path(path).stem}-{face_cache_key(path, params)[:16]}.npz"


def save_clip_faces(target: Path, clip: ClipFaces) -> Path:
    """Write crops and per-frame detector records as compressed .npz, atomically."""
    from mer_utils.runs import atomic_write_npz

    return atomic_write_npz(
        target,
        compressed=True,
        faces=clip.faces,
        detectors=np.asarray(clip.detectors, dtype=str),
        confidences=clip.confidences,
        boxes=clip.boxes,
        aligned=clip.aligned,
    )


def load_clip_faces(target: Path) -> ClipFaces:
    """Read crops written by :func:`save_clip_faces`."""
    with np.load(target, allow_pickle=False) as data:
        return ClipFaces(
            faces=data["faces"],
            detectors=[str(d) for d in data["detectors"]],
            confidences=data["confidences"],
            boxes=data["boxes"],
            aligned=data["aligned"] if "aligned" in data.files else None,
        )


def cached_clip_faces(
    path: str | Path, params: FaceParams | None = None, cache_dir: str | Path | None = None
) -> tuple[ClipFaces, bool]:
    """Crops of one clip from the cache, computing and caching them when absent.

    Returns ``(faces, computed)``; ``computed`` is False when the cache answered.
    """
    params = params or FaceParams()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    target = face_cache_path(path, params, cache_dir)
    if target.is_file():
        try:
            return load_clip_faces(target), False
        except Exception as error:  # a damaged (zero-byte, truncated) cache file is a miss, never trusted
            log.debug("%s: unreadable face cache entry (%s); deleted and recomputed", target, error)
            target.unlink(missing_ok=True)
    clip = extract_clip_faces(path, params)
    save_clip_faces(target, clip)
    return clip, True


def _extract_job(job: tuple) -> tuple[str, ClipFaces | None, bool, str | None]:
    path, params, cache_dir = job
    try:
        clip, computed = cached_clip_faces(path, params, cache_dir)
        return path, clip, computed, None
    except Exception as error:  # noqa: BLE001 - one bad clip never stops the batch; the reason is recorded
        return path, None, False, f"{type(error).__name__}: {error}"


def _cache_job(path: str, params: FaceParams, cache_dir: str) -> str | None:
    """Cut and cache one clip's crops (on a Dask worker, see :mod:`mer_utils.feature_map`); the reason it failed, or None.

    The crops stay in the cache (the caller reads them from there), so only the reason travels back.
    """
    return _extract_job((path, params, cache_dir))[3]


def _is_cached(path: str, params: FaceParams, cache_dir: str) -> bool:
    try:
        return face_cache_path(path, params, cache_dir).is_file()
    except OSError:  # a missing clip: not cached, and its worker records why
        return False


@dataclass
class FaceExtraction:
    """Result of :func:`extract_faces`: crops per clip path, failures and cache statistics."""

    faces: dict[str, ClipFaces]
    failed: pd.DataFrame  # columns path, reason
    computed: int = 0
    cached: int = 0

    def fallback_table(self) -> pd.DataFrame:
        """Per clip: frames, frames per detector and the fallback share (not MTCNN)."""
        rows = []
        for path, clip in self.faces.items():
            counts = pd.Series(clip.detectors).value_counts()
            rows.append(
                {
                    "path": path,
                    "frames": len(clip.detectors),
                    **{name: int(counts.get(name, 0)) for name in KNOWN_DETECTORS},
                    "fallback_share": clip.fallback_share,
                }
            )
        columns = ["path", "frames", *KNOWN_DETECTORS, "fallback_share"]
        return pd.DataFrame(rows, columns=columns)

    def total_fallback_share(self) -> float:
        """Share of all extracted frames that did not come from MTCNN."""
        detectors = [d for clip in self.faces.values() for d in clip.detectors]
        return float(np.mean([d != "mtcnn" for d in detectors])) if detectors else float("nan")


def extract_faces(
    paths: Sequence[str | Path],
    params: FaceParams | None = None,
    *,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
    manifest: str | Path | None = None,
) -> FaceExtraction:
    """Face crops of many clips: cached, optionally parallel, bad clips recorded instead of raised.

    Each finished clip is written to the cache at once, so an interrupted run resumes where it
    stopped. ``workers`` > 1 runs a "spawn" process pool (each worker loads TensorFlow and MTCNN
    once, about 3 s); a script calling it that way needs the usual ``if __name__ == "__main__":``
    guard. ``manifest`` (a CSV path) receives the failed clips and why. Inside
    :func:`mer_utils.feature_map.cluster` (``mer train video --workers/--scheduler``) the Dask
    workers cut and cache the crops of the clips not cached yet, and this process reads them back.
    """
    from tqdm.auto import tqdm

    from mer_utils import feature_map

    params = params or FaceParams()
    # The cache folder is resolved here so spawned workers (and monkeypatched tests) agree on it.
    folder = str(faces_cache_dir(cache_dir).resolve())
    jobs = [(str(p), params, folder) for p in paths]
    faces: dict[str, ClipFaces] = {}
    failed: list[tuple[str, str]] = []
    computed = cached = 0
    # mininterval keeps notebook outputs short (a line every few seconds, not one per clip).
    bar = tqdm(total=len(jobs), desc="face crops", unit="clip", disable=not progress, mininterval=3)
    if feature_map.active():
        # The workers fill the cache (same files as serially); a clip that failed there keeps its reason.
        todo = [path for path, _, _ in jobs if not _is_cached(path, params, folder)]
        reasons = feature_map.fill(todo, functools.partial(_cache_job, params=params, cache_dir=folder))
        mapped = set(todo)
        for job in jobs:
            path = job[0]
            result = (path, None, False, reasons[path]) if path in reasons else _extract_job(job)
            if result[1] is not None and path in mapped:
                result = (path, result[1], True, None)  # computed on a worker, read back from the cache
            computed, cached = _collect(result, faces, failed, computed, cached)
            bar.update()
    elif workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from mer_utils.workers import exit_with_parent

        # "spawn", not fork: forking a process that already runs TensorFlow can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)), mp_context=context, initializer=exit_with_parent
        ) as pool:
            results = pool.map(_extract_job, jobs, chunksize=4)
            for result in results:
                computed, cached = _collect(result, faces, failed, computed, cached)
                bar.update()
    else:
        for job in jobs:
            computed, cached = _collect(_extract_job(job), faces, failed, computed, cached)
            bar.update()
    bar.close()
    for path, reason in failed:
        log.warning("no faces for %s: %s", path, reason)
    failed_table = pd.DataFrame(failed, columns=["path", "reason"])
    if manifest is not None:
        from mer_utils.runs import atomic_write_bytes

        atomic_write_bytes(manifest, failed_table.to_csv(index=False).encode())
    return FaceExtraction(faces=faces, failed=failed_table, computed=computed, cached=cached)


def _collect(result, faces, failed, computed: int, cached: int) -> tuple[int, int]:
    path, clip, was_computed, reason = result
    if clip is None:
        failed.append((path, reason))
        return computed, cached
    faces[path] = clip
    return (computed + 1, cached) if was_computed else (computed, cached + 1)
