"""Labelled face-image folders (e.g. FER2013): index, label mapping, splits and a decoded-image cache.

Two layouts are read: ``DIR/<split>/<label>/*`` (split folders such as ``train``,
``validation`` / ``val``, ``test``) and ``DIR/<label>/*`` (split here, stratified by label).
Label folders map onto the RAVDESS emotion names (``anger`` -> ``angry``, ``fear`` ->
``fearful``, ...); folders with no RAVDESS emotion (``contempt``) and unreadable images are
skipped, each with its reason. Decoded images are cached as one uint8 ``.npz`` per folder,
keyed by the folder listing (names, sizes, modification times) and the decoding parameters,
so later epochs and re-runs never decode again. This is a data module: it knows nothing of Keras.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.config import DEFAULT_SEED, RAVDESS_EMOTIONS

log = logging.getLogger(__name__)

# Image file suffixes that are indexed (anything else in a label folder is skipped with a reason).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Label-folder names (lower case) -> RAVDESS emotion; FER2013, CK+, AffectNet and RAF-DB spellings.
LABEL_ALIASES: dict[str, str] = {
    **{name: name for name in RAVDESS_EMOTIONS},
    "anger": "angry",
    "ang": "angry",
    "mad": "angry",
    "fear": "fearful",
    "afraid": "fearful",
    "scared": "fearful",
    "fea": "fearful",
    "surprise": "surprised",
    "sur": "surprised",
    "sadness": "sad",
    "sa": "sad",
    "happiness": "happy",
    "joy": "happy",
    "hap": "happy",
    "ha": "happy",
    "disgusted": "disgust",
    "dis": "disgust",
    "neu": "neutral",
}
# Split-folder names (lower case) of the DIR/<split>/<label>/* layout -> the folder's role.
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "publictest": "validation",
    "test": "test",
    "testing": "test",
    "privatetest": "test",
}
# Share of a training folder carved out (stratified) for early stopping and model selection.
VAL_SHARE = 0.1
# Share held out as the test part when a folder has no split folders at all.
TEST_SHARE = 0.1
# Bump when decoding changes, so stale cache entries are not reused.
CACHE_VERSION = 1
# Sub-folder of CACHE_DIR holding the decoded images.
IMAGES_CACHE_FOLDER = "face_images"


def map_label(folder_name: str) -> str | None:
    """The RAVDESS emotion of a label folder (``"Anger"`` -> ``"angry"``), None when it has none."""
    return LABEL_ALIASES.get(folder_name.strip().lower())


def _label_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def face_image_layout(data: str | Path) -> str:
    """``"split"`` when ``data`` holds split folders (train/, validation/, test/), else ``"label"``."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such folder (expected DIR/<label>/* or DIR/<split>/<label>/*)")
    names = {p.name.lower() for p in _label_folders(data)}
    return "split" if names & set(SPLIT_ALIASES) else "label"


def index_face_images(data: str | Path) -> pd.DataFrame:
    """One row per image: ``path``, ``label`` (RAVDESS name), ``source_label``, ``folder_split``.

    ``folder_split`` is the role of the split folder (train / validation / test) in the
    split layout and empty in the label layout. Unknown label folders, unknown split folders
    and non-image files are listed in ``attrs["skipped"]`` as ``{path, reason}`` records.
    """
    data = Path(data)
    layout = face_image_layout(data)
    skipped: list[dict] = []
    groups: list[tuple[Path, str]] = []  # (label folder, folder split)
    if layout == "split":
        for split_folder in _label_folders(data):
            role = SPLIT_ALIASES.get(split_folder.name.lower())
            if role is None:
                skipped.append(
                    {
                        "path": str(split_folder),
                        "reason": f"folder '{split_folder.name}' is not a split folder "
                        f"(expected one of {sorted(set(SPLIT_ALIASES))})",
                    }
                )
                continue
            groups += [(label_folder, role) for label_folder in _label_folders(split_folder)]
    else:
        groups = [(label_folder, "") for label_folder in _label_folders(data)]
    rows = []
    for label_folder, role in groups:
        files = sorted(p for p in label_folder.iterdir() if p.is_file() and not p.name.startswith("."))
        label = map_label(label_folder.name)
        if label is None:
            skipped.append(
                {
                    "path": str(label_folder),
                    "reason": f"label folder '{label_folder.name}' has no RAVDESS emotion "
                    f"({len(files)} files skipped; known names: {sorted(LABEL_ALIASES)})",
                }
            )
            continue
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append({"path": str(path), "reason": f"not an image file (suffix {path.suffix!r})"})
                continue
            rows.append(
                {"path": str(path), "label": label, "source_label": label_folder.name, "folder_split": role}
            )
    index = pd.DataFrame(rows, columns=["path", "label", "source_label", "folder_split"])
    if index.empty:
        raise ValueError(
            f"{data}: no labelled face images found; expected DIR/<label>/*.jpg or "
            f"DIR/<split>/<label>/*.jpg with label folders such as {sorted(RAVDESS_EMOTIONS)}"
        )
    index.attrs["skipped"] = skipped
    index.attrs["layout"] = layout
    return index


def _stratified_part(labels: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask picking about ``share`` of each label's rows (at least one when a label has 2+)."""
    mask = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        count = int(round(share * len(rows)))
        if len(rows) >= 2:
            count = min(max(count, 1), len(rows) - 1)
        else:
            count = 0
        mask[rng.choice(rows, size=count, replace=False)] = True
    return mask


def split_face_images(
    index: pd.DataFrame,
    seed: int = DEFAULT_SEED,
    val_share: float = VAL_SHARE,
    test_share: float = TEST_SHARE,
) -> pd.DataFrame:
    """Add a ``split`` column (train / val / test) so no image used for selection is reported as unseen.

    Split layout: ``test/`` is the test part; without one, ``validation/`` becomes the test part
    (FER2013's PublicTest then stays unseen until the final score); a stratified ``val_share``
    of ``train/`` is the validation part used for early stopping and model selection (or
    ``validation/`` itself when ``test/`` exists). Label layout: stratified train / val / test.
    """
    if not 0 < val_share < 1 or not 0 <= test_share < 1 or val_share + test_share >= 1:
        raise ValueError(f"need 0 < val_share, 0 <= test_share, sum < 1; got {val_share}, {test_share}")
    rng = np.random.default_rng(seed)
    index = index.reset_index(drop=True).copy()
    labels = index["label"].to_numpy()
    roles = index["folder_split"].fillna("").to_numpy()
    split = np.full(len(index), "train", dtype=object)
    if (roles == "").all():
        test = _stratified_part(labels, test_share, rng) if test_share > 0 else np.zeros(len(index), bool)
        split[test] = "test"
        rest = np.flatnonzero(~test)
        val = _stratified_part(labels[rest], val_share / (1 - test_share), rng)
        split[rest[val]] = "val"
    else:
        has_test = (roles == "test").any()
        split[roles == "test"] = "test"
        split[roles == "validation"] = "val" if has_test else "test"
        if not has_test or not (roles == "validation").any():
            train_rows = np.flatnonzero(roles == "train")
            val = _stratified_part(labels[train_rows], val_share, rng)
            split[train_rows[val]] = "val"
    index["split"] = split
    for part in ("train", "val", "test"):
        if not (index["split"] == part).any():
            raise ValueError(
                f"no {part} images after splitting ({len(index)} images); give more images per label "
                "or a folder with train/ and validation/ sub-folders"
            )
    return index


# --- decoding and cache -------------------------------------------------------------------


def decode_image(path: str | Path, size: int, grayscale: bool = True) -> np.ndarray:
    """Decode and resize one image to uint8 (size, size, 1) gray or (size, size, 3) RGB.

    Raises ``ValueError`` naming the file when it cannot be decoded.
    """
    import cv2

    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), flag)
    if image is None or image.size == 0:
        raise ValueError(f"{path}: unreadable image (OpenCV could not decode it)")
    if image.shape[:2] != (size, size):
        # INTER_AREA when shrinking avoids aliasing; INTER_LINEAR when enlarging small faces.
        interpolation = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interpolation)
    if grayscale:
        return image.reshape(size, size, 1)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def images_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder of the decoded-image cache (default CACHE_DIR/face_images)."""
    from mer_utils.cache import cache_dir as shared_cache_dir

    return shared_cache_dir(IMAGES_CACHE_FOLDER, cache_dir)


def images_cache_key(paths: list[str], size: int, grayscale: bool) -> str:
    """Cache key of a listing: every file's resolved path, size and mtime plus the decoding parameters."""
    listing = []
    for path in paths:
        stat = Path(path).stat()
        listing.append((str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns))
    payload = json.dumps(
        {"files": listing, "size": size, "grayscale": grayscale, "version": CACHE_VERSION}, sort_keys=True
    )
    return hashlib.sha1(payload.encode()).hexdigest()


@dataclass
class DecodedImages:
    """Decoded images of an index: uint8 pixels of the readable rows, and the unreadable ones."""

    images: np.ndarray  # uint8 (n_readable, size, size, channels)
    index: pd.DataFrame  # the readable rows of the index, in the order of ``images``
    skipped: list[dict] = field(default_factory=list)  # {path, reason} of unreadable images
    cached: bool = False  # True when the cache answered


def load_face_images(
    index: pd.DataFrame,
    size: int = 48,
    grayscale: bool = True,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> DecodedImages:
    """Decode every image of ``index`` (cached on disk, written atomically); unreadable ones are skipped."""
    from tqdm.auto import tqdm

    from mer_utils.runs import atomic_write_npz

    if size < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {size}")
    index = index.reset_index(drop=True)
    paths = index["path"].astype(str).tolist()
    target = images_cache_dir(cache_dir) / f"{images_cache_key(paths, size, grayscale)[:20]}.npz"
    if target.is_file():
        try:
            with np.load(target, allow_pickle=False) as stored:
                images = stored["images"]
                bad_paths = [str(p) for p in stored["bad_paths"]]
                bad_reasons = [str(r) for r in stored["bad_reasons"]]
            return _decoded(index, images, bad_paths, bad_reasons, cached=True)
        except Exception as error:  # a damaged cache file is rebuilt, never trusted
            log.warning("%s: unreadable image cache (%s); decoding again", target, error)
    channels = 1 if grayscale else 3
    images = np.zeros((len(paths), size, size, channels), np.uint8)
    good = np.ones(len(paths), bool)
    bad_paths, bad_reasons = [], []
    for row, path in enumerate(
        tqdm(paths, desc="decode images", unit="img", disable=not progress, mininterval=3)
    ):
        try:
            images[row] = decode_image(path, size, grayscale)
        except (ValueError, OSError) as error:
            good[row] = False
            bad_paths.append(path)
            bad_reasons.append(str(error))
    images = images[good]
    atomic_write_npz(
        target,
        images=images,
        bad_paths=np.asarray(bad_paths, dtype=str),
        bad_reasons=np.asarray(bad_reasons, dtype=str),
    )
    return _decoded(index, images, bad_paths, bad_reasons, cached=False)


def _decoded(index, images, bad_paths, bad_reasons, cached: bool) -> DecodedImages:
    bad = set(bad_paths)
    readable = index[~index["path"].astype(str).isin(bad)].reset_index(drop=True)
    if len(readable) != len(images):
        raise ValueError(f"image cache holds {len(images)} images for {len(readable)} readable files")
    skipped = [{"path": p, "reason": r} for p, r in zip(bad_paths, bad_reasons, strict=True)]
    return DecodedImages(images=images, index=readable, skipped=skipped, cached=cached)


def gray_to_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 (n, S, S, 1) gray -> (n, S, S, 3) by repeating the channel (RGB images pass through)."""
    images = np.asarray(images)
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
