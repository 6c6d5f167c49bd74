"""The audio branch's shared parts: one clip with sound per take, speaker normalisation, saved statistics.

Both model families of :mod:`mer_utils.pipelines.audio` (Keras on MFCC sequences, scikit-learn on
clip vectors in :mod:`mer_utils.pipelines.audio_vectors`) use these; see the branch module for
the normalisation modes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils import speakers as speakers_module

# Branch name written to run.json.
BRANCH = "audio"
# File beside model.keras holding the global standardiser (mean, std).
NORMALISATION_FILE = "normalisation.npz"
# Speaker normalisation modes.
NORMALISATIONS = ("speaker", "global")


def clip_index(data: str | Path | list | pd.DataFrame) -> pd.DataFrame:
    """One clip with sound per take of one or more corpus sources (or an index): :func:`mer_utils.corpora.audio_index`.

    Skipped files are in ``attrs["skipped"]``; one RAVDESS folder gives the RAVDESS index plus
    the ``speaker`` and ``corpus`` columns.
    """
    from mer_utils.corpora import audio_index

    return audio_index(data)


def _index(data: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """:func:`clip_index` and its skipped files."""
    index = clip_index(data)
    return index, list(index.attrs["skipped"])


def _normalise(
    features: np.ndarray,
    speakers: np.ndarray,
    mode: str,
    statistics: dict | None = None,
) -> np.ndarray:
    from mer_utils import audio

    if mode == "speaker":
        return audio.normalise_per_speaker(features, speakers, statistics)
    if mode == "global":
        return features
    raise ValueError(f"unknown normalisation {mode!r}; expected one of {NORMALISATIONS}")


def _normalise_for_prediction(
    features: np.ndarray, speakers: np.ndarray, mode: str, run_dir: Path
) -> np.ndarray:
    """Normalisation of clips being scored: a speaker with few clips is shrunk towards the training population.

    Speakers with at least ``speakers.MIN_SPEAKER_CLIPS`` clips (every RAVDESS actor folder) get
    exactly the training-time treatment, their own statistics.
    """
    if mode != "speaker":
        return _normalise(features, speakers, mode)
    population = speakers_module.load_population(run_dir, features.shape[-1])
    return speakers_module.normalise_speakers(features, speakers, population)


def _population_files(population) -> tuple[str, ...]:
    """The training-speaker statistics file to hash with the model, when the run stores one."""
    return (speakers_module.POPULATION_FILE,) if population is not None else ()


def _save_normalisation(run_dir: Path, mean: np.ndarray, std: np.ndarray) -> None:
    from mer_utils.runs import atomic_write_npz

    atomic_write_npz(run_dir / NORMALISATION_FILE, mean=mean, std=std)


def _load_normalisation(run_dir: Path, info: dict) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / info.get("normalisation_file", NORMALISATION_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: normalisation statistics missing from the run folder")
    try:
        with np.load(path, allow_pickle=False) as stored:
            return stored["mean"], stored["std"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: corrupt normalisation statistics ({error}); retrain the run") from error


def split_tables(rows: pd.DataFrame, parts: dict, labels: list[str], probabilities_of_split) -> dict:
    """Prediction tables of the val and test clips (clip_id = take)."""
    return {
        split: rows_table(probabilities_of_split(split), labels, rows[parts[split]])
        for split in ("val", "test")
    }


def rows_table(probabilities: np.ndarray, labels: list[str], rows: pd.DataFrame) -> pd.DataFrame:
    """Prediction table of feature rows (clip_id = take); emotions outside ``labels`` get no true label.

    The rows' ``corpus`` and ``speaker`` columns (:mod:`mer_utils.corpora`) follow the probabilities.
    """
    from mer_utils.evaluation import prediction_table

    true_labels = [e if e in labels else "" for e in rows["emotion"].astype(str)]
    table = prediction_table(
        probabilities,
        labels,
        rows["take"].astype(str).tolist(),
        true_labels,
        rows["path"].astype(str).tolist(),
    )
    return with_corpus_columns(table, rows)


def with_corpus_columns(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the ``corpus`` and ``speaker`` of its ``rows`` (same order), when the rows have them."""
    for column in ("corpus", "speaker"):
        if column in rows.columns:
            table[column] = rows[column].astype(str).to_numpy()
    return table


def split_parts(rows: pd.DataFrame, data) -> dict[str, np.ndarray]:
    """Masks of the train / val / test rows; a part without clips raises ``ValueError`` naming ``data``."""
    parts = {split: (rows["split"] == split).to_numpy() for split in ("train", "val", "test")}
    for split, mask in parts.items():
        if not mask.any():
            raise ValueError(f"{data}: the {split} split has no clips with audio")
    return parts


def clip_for_prediction(
    run_dir: Path, info: dict, path: Path, compute, reference_of
) -> tuple[np.ndarray | None, dict]:
    """One clip's features for ``predict_file``: voice check, ``compute(path)``, speaker normalisation.

    Returns (features, details), or (None, the :func:`~mer_utils.pipelines.base.unavailable` answer)
    when the clip has no usable audio or cannot be normalised; ``reference_of(other)`` gives another
    clip's (cached) features for the speaker statistics.
    """
    import time

    from mer_utils import media, voice
    from mer_utils.pipelines.base import unavailable

    start = time.perf_counter()
    try:
        activity = voice.clip_voice_activity(path)
        features = compute(path)
    except (media.MediaError, FileNotFoundError, ValueError) as error:
        return None, unavailable(str(error))
    details: dict = {
        "feature_seconds": time.perf_counter() - start,
        "normalisation": info["normalisation"],
        "voice_seconds": round(activity.seconds, 2),
        # Where the voice is, (start, end) s: the page marks them on the waveform.
        "voice_segments": [list(segment) for segment in activity.segments()],
    }
    if info["normalisation"] == "speaker":
        features = _speaker_normalised(features, path, reference_of, run_dir, details)
        if features is None:
            return None, unavailable(LONE_CLIP_REASON.format(run=run_dir), details)
    return features, details


def timed_answer(predict, details: dict) -> dict:
    """The available answer of ``predict_file``: ``predict()`` gives the probabilities, timed into details."""
    import time

    start = time.perf_counter()
    probabilities = np.asarray(predict(), dtype=float)
    details["inference_seconds"] = time.perf_counter() - start
    return {"available": True, "reason": None, "probabilities": probabilities.tolist(), "details": details}


def split_actors(rows: pd.DataFrame, parts: dict) -> dict:
    """The actors of each split part (run.json / metrics.json ``split``)."""
    return {s: sorted(int(a) for a in rows.loc[m, "actor"].unique()) for s, m in parts.items()}


# Most clips of one speaker used as the reference for a single file's speaker normalisation.
MAX_REFERENCE_CLIPS = 60


def _reference_clips(path: Path) -> list[Path]:
    """Other clips with sound of the same RAVDESS actor in the file's folder (for speaker statistics)."""
    from mer_utils.ravdess import AUDIO_MODALITIES, parse_filename

    try:
        actor = parse_filename(path).actor
    except ValueError:
        return []
    found = []
    for other in sorted(path.parent.iterdir()):
        if other == path or other.suffix.lower() not in (".wav", ".mp4"):
            continue
        try:
            clip = parse_filename(other)
        except ValueError:
            continue
        if clip.actor == actor and clip.modality in AUDIO_MODALITIES:
            found.append(other)
    return found[:MAX_REFERENCE_CLIPS]


def _speaker_normalised(
    features: np.ndarray, path: Path, reference_of, run_dir: Path, details: dict
) -> np.ndarray | None:
    """One clip's features normalised for its speaker (see :mod:`mer_utils.speakers`); None if impossible.

    ``reference_of(other)`` gives another clip's features (cached). The same-speaker clips come
    from :func:`_reference_clips` (RAVDESS names in the same folder); with too few of them the
    statistics are shrunk towards the training population stored in the run folder.
    """
    from mer_utils import media

    reference = [features]
    for other in _reference_clips(path):
        try:
            reference.append(reference_of(other))
        except (media.MediaError, FileNotFoundError, ValueError):
            continue
    population = speakers_module.load_population(run_dir, features.shape[-1])
    mean, std, how = speakers_module.speaker_moments(np.stack(reference), population)
    details["speaker_reference_clips"] = len(reference)
    details["speaker_normalisation"] = how
    if how == "shrunk":
        details["note"] = (
            f"{len(reference)} clip(s) of this speaker: normalised with statistics shrunk towards the "
            "training speakers' average"
        )
    elif how == "self":
        if features.ndim == 1 and len(reference) == 1:
            # A vector standardised against itself is all zeros: every clip would get one answer.
            return None
        details["note"] = (
            "this run stores no training-speaker statistics (trained by an older version): "
            f"normalised with {len(reference)} clip(s) of this speaker only"
        )
    return ((features - mean) / std).astype(np.float32)


# Reason given when a run without stored training-speaker statistics meets a lone clip.
LONE_CLIP_REASON = (
    "{run}: this run predates stored training-speaker statistics, so a clip without other clips of "
    "its speaker cannot be normalised; retrain it with `mer train audio`"
)
