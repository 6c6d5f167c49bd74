"""eGeMAPS of a clip: the field's standard hand-crafted voice set, one 88-value vector per clip.

The extended Geneva Minimalistic Acoustic Parameter Set (Eyben et al. 2016, IEEE Transactions on
Affective Computing 7(2)), version 02, computed by the ``opensmile`` package: functionals (means,
spreads, percentiles, slopes) of pitch, jitter, shimmer, loudness, formants, harmonic ratios,
spectral slopes and MFCCs 1-4, plus rates of voiced segments and pauses. Where
:mod:`mer_utils.utterance` writes its statistics by hand, these are the published, fixed definitions
that cross-corpus studies compare on. Cached and batched like every audio feature of
:mod:`mer_utils.audio` (so ``mer train --workers`` computes them on Dask too).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.audio import (
    DEFAULT_TOP_DB,
    TARGET_SR,
    FeatureBatch,
    clip_seed,
    extract_features,
    load_clip_audio,
    trim_silence,
)
from mer_utils.audio_augment import add_noise
from mer_utils.config import DEFAULT_SEED

# The opensmile feature set and level (functionals: one row per clip).
FEATURE_SET = "eGeMAPSv02"
FEATURE_LEVEL = "Functionals"
# Values per clip in eGeMAPSv02 functionals.
NUM_FEATURES = 88
# Shorter audio leaves opensmile without a frame to summarise (it answers NaN).
MIN_SECONDS = 0.1


@dataclass(frozen=True)
class EgemapsParams:
    """Everything that determines an eGeMAPS vector (stored in run.json ``features``)."""

    sr: int = TARGET_SR
    # Leading / trailing parts quieter than this below the peak are cut first (None: the whole clip).
    top_db: float | None = DEFAULT_TOP_DB
    feature_set: str = FEATURE_SET
    feature_level: str = FEATURE_LEVEL

    def to_dict(self) -> dict:
        """JSON-ready parameters."""
        return asdict(self)


@functools.lru_cache(maxsize=4)
def _extractor(feature_set: str, feature_level: str):
    """One opensmile extractor per process (building it parses the configuration files)."""
    try:
        import opensmile
    except ImportError as error:
        raise ImportError(
            "eGeMAPS features need the optional opensmile package (audEERING's research-only, "
            "non-commercial licence): make setup-egemaps, or pip install 'opensmile==2.6.0'"
        ) from error
    try:
        return opensmile.Smile(
            feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel[feature_level]
        )
    except KeyError:
        raise ValueError(
            f"unknown opensmile feature set / level {feature_set!r} / {feature_level!r}"
        ) from None


def egemaps_features(
    y: np.ndarray, params: EgemapsParams = EgemapsParams(), name: str = "audio"
) -> np.ndarray:
    """The eGeMAPS functionals (float32, 88 values for v02) of a mono signal at ``params.sr``.

    ``name`` (the clip's path) names the clip in the ``ValueError`` raised for audio too short to
    measure or a signal opensmile refuses.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"{name}: eGeMAPS needs mono audio, got an array of shape {y.shape}")
    if y.size < MIN_SECONDS * params.sr:
        raise ValueError(
            f"{name}: {y.size / params.sr:.3f} s of audio is too short for eGeMAPS (at least {MIN_SECONDS} s)"
        )
    extractor = _extractor(params.feature_set, params.feature_level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            table = extractor.process_signal(y, params.sr)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{name}: opensmile could not measure this audio ({error})") from error
    vector = table.to_numpy(dtype=np.float64).reshape(-1)
    if not np.isfinite(vector).all():
        raise ValueError(f"{name}: opensmile found no frame to measure (silent or too short audio)")
    return vector.astype(np.float32)


def clip_egemaps(
    path: str | Path,
    params: EgemapsParams = EgemapsParams(),
    noise_snr_db: float | None = None,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """eGeMAPS vector of one clip: load (any format and rate :func:`mer_utils.audio.load_clip_audio`
    reads), trim, optional noise at an SNR, then measure."""
    y = load_clip_audio(path, params.sr)
    if params.top_db is not None:
        y = trim_silence(y, params.top_db)
    if noise_snr_db is not None:
        y = add_noise(y, noise_snr_db, np.random.default_rng(seed))
    return egemaps_features(y, params, str(path))


def egemaps_cache_params(
    params: EgemapsParams = EgemapsParams(), noise_snr_db: float | None = None, seed: int = 0
) -> dict:
    """The feature-cache key of :func:`egemaps_batch` and of one clip's cached vector (noise only when added)."""
    key: dict = {"kind": "egemaps", "version": 1, **params.to_dict()}
    if noise_snr_db is not None:
        key.update(noise_snr_db=noise_snr_db, seed=seed)
    return key


def egemaps_batch(
    index: pd.DataFrame,
    params: EgemapsParams = EgemapsParams(),
    noise_snr_db: float | None = None,
    seed: int = DEFAULT_SEED,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    manifest: str | Path | None = None,
) -> FeatureBatch:
    """eGeMAPS vectors (n, 88) of every clip in ``index``, cached; unreadable clips skipped with their reason."""

    def featurize(path: str) -> np.ndarray:
        return clip_egemaps(path, params, noise_snr_db, clip_seed(path, seed))

    key = egemaps_cache_params(params, noise_snr_db, seed)
    return extract_features(index, featurize, key, cache_dir, progress, "eGeMAPS", manifest)
