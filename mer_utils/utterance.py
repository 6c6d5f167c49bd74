"""Utterance-level statistics of a clip: one vector per clip for the scikit-learn audio models.

MFCC + delta statistics, log-mel band levels, spectral shape, pitch and energy summaries
(:func:`utterance_features`), cached and batched like every audio feature of :mod:`mer_utils.audio`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.audio import (
    DEFAULT_TOP_DB,
    HOP_LENGTH,
    MFCC_MELS,
    N_FFT,
    PITCH_FMIN,
    TARGET_SR,
    WIN_LENGTH,
    FeatureBatch,
    clip_seed,
    extract_features,
    load_clip_audio,
    prosody_features,
    trim_silence,
)
from mer_utils.audio_augment import add_noise
from mer_utils.config import DEFAULT_SEED

UTTERANCE_PERCENTILES = (5, 25, 50, 75, 95)
# Log-mel bands whose per-clip mean and std describe the spectral envelope (voice quality).
UTTERANCE_MELS = 40


@dataclass(frozen=True)
class UtteranceParams:
    """Everything that determines an utterance-level feature vector (stored in run.json)."""

    sr: int = TARGET_SR
    top_db: float = DEFAULT_TOP_DB
    n_mfcc: int = 40
    n_fft: int = N_FFT
    win_length: int = WIN_LENGTH
    hop_length: int = HOP_LENGTH
    n_mels: int = MFCC_MELS

    def to_dict(self) -> dict:
        """JSON-ready parameters."""
        return asdict(self)


def _summary(frames: np.ndarray) -> np.ndarray:
    """Mean, std, skew, kurtosis and percentiles of each row of a (features, frames) array."""
    frames = np.asarray(frames, dtype=np.float64)
    mean = frames.mean(axis=1)
    std = frames.std(axis=1)
    centred = (frames - mean[:, None]) / (std[:, None] + 1e-8)
    skew = (centred**3).mean(axis=1)
    kurtosis = (centred**4).mean(axis=1) - 3.0
    percentiles = np.percentile(frames, UTTERANCE_PERCENTILES, axis=1)
    return np.concatenate([mean, std, skew, kurtosis, *percentiles])


def _slope(values: np.ndarray) -> float:
    """Least-squares slope per frame of a 1-D series (0 for fewer than two points)."""
    if values.size < 2:
        return 0.0
    positions = np.arange(values.size, dtype=np.float64)
    return float(np.polyfit(positions, values.astype(np.float64), 1)[0])


def utterance_features(y: np.ndarray, params: UtteranceParams = UtteranceParams()) -> np.ndarray:
    """One float32 vector describing a trimmed utterance: spectral, cepstral and prosodic statistics.

    Statistics are taken over the speech itself (no zero padding, which would fake silence):
    MFCCs with deltas and delta-deltas (mean, std, skew, kurtosis, 5 percentiles), log-mel band
    means / stds, spectral centroid, bandwidth, roll-off, flatness, contrast, zero-crossing rate
    and log energy (same summary), and prosody: YIN pitch over voiced frames (level, spread,
    range, slope, its frame-to-frame change), voiced fraction, energy slope, duration and onset rate.
    """
    import librosa

    sr, hop = params.sr, params.hop_length
    y = np.asarray(y, dtype=np.float32)
    # Very short clips still need a few analysis frames.
    minimum = params.n_fft + 8 * hop
    if y.size < minimum:
        y = np.pad(y, (0, minimum - y.size))
    spectrum = np.abs(librosa.stft(y, n_fft=params.n_fft, hop_length=hop, win_length=params.win_length)) ** 2
    mel = librosa.feature.melspectrogram(S=spectrum, sr=sr, n_mels=params.n_mels)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=params.n_mfcc)
    width = min(9, mfcc.shape[1] if mfcc.shape[1] % 2 else mfcc.shape[1] - 1)
    cepstral = np.concatenate(
        [mfcc, librosa.feature.delta(mfcc, width=width), librosa.feature.delta(mfcc, order=2, width=width)]
    )
    bands = librosa.power_to_db(
        librosa.feature.melspectrogram(S=spectrum, sr=sr, n_mels=UTTERANCE_MELS) + 1e-10
    )
    magnitude = np.sqrt(spectrum)
    spectral = np.concatenate(
        [
            librosa.feature.spectral_centroid(S=magnitude, sr=sr),
            librosa.feature.spectral_bandwidth(S=magnitude, sr=sr),
            librosa.feature.spectral_rolloff(S=magnitude, sr=sr),
            np.log(librosa.feature.spectral_flatness(S=magnitude) + 1e-8),
            librosa.feature.spectral_contrast(S=magnitude, sr=sr),
            librosa.feature.zero_crossing_rate(y, frame_length=params.n_fft, hop_length=hop),
            np.log(librosa.feature.rms(S=magnitude, frame_length=params.n_fft) + 1e-5),
        ]
    )
    n = min(spectral.shape[1], cepstral.shape[1])
    prosody = prosody_features(y, sr, hop)
    log_f0, log_energy = prosody[:, 0], prosody[:, 1]
    voiced = log_f0[log_f0 > 0]
    if voiced.size < 2:
        voiced = np.full(2, np.log(PITCH_FMIN))
    pitch = [
        voiced.mean(),
        voiced.std(),
        *np.percentile(voiced, (5, 50, 95)),
        np.percentile(voiced, 95) - np.percentile(voiced, 5),
        _slope(voiced),
        np.abs(np.diff(voiced)).mean(),
        (log_f0 > 0).mean(),
    ]
    onsets = librosa.onset.onset_detect(y=y, sr=sr, hop_length=hop, units="frames")
    seconds = y.size / sr
    rhythm = [_slope(log_energy), np.abs(np.diff(log_energy)).mean(), seconds, len(onsets) / seconds]
    vector = np.concatenate(
        [
            _summary(cepstral[:, :n]),
            bands.mean(axis=1),
            bands.std(axis=1),
            _summary(spectral[:, :n]),
            np.asarray(pitch + rhythm, dtype=np.float64),
        ]
    )
    return np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def clip_utterance_features(
    path: str | Path,
    params: UtteranceParams = UtteranceParams(),
    noise_snr_db: float | None = None,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """Utterance-level feature vector of one clip: load, trim, optional noise at an SNR, then statistics."""
    rng = np.random.default_rng(seed)
    y = load_clip_audio(path, params.sr)
    if params.top_db is not None:
        y = trim_silence(y, params.top_db)
    if noise_snr_db is not None:
        y = add_noise(y, noise_snr_db, rng)
    return utterance_features(y, params)


def utterance_batch(
    index: pd.DataFrame,
    params: UtteranceParams = UtteranceParams(),
    noise_snr_db: float | None = None,
    seed: int = DEFAULT_SEED,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    manifest: str | Path | None = None,
) -> FeatureBatch:
    """Utterance-level feature vectors (n, features) of every clip in ``index``, cached."""
    key = utterance_cache_params(params, noise_snr_db, seed)

    def featurize(path: str) -> np.ndarray:
        return clip_utterance_features(path, params, noise_snr_db, clip_seed(path, seed))

    return extract_features(index, featurize, key, cache_dir, progress, "utterance statistics", manifest)


def utterance_cache_params(params: UtteranceParams, noise_snr_db: float | None = None, seed: int = 0) -> dict:
    """The cache key parameters of :func:`utterance_batch` (the seed only matters with noise)."""
    key: dict = {"kind": "utterance", "version": 1, **params.to_dict(), "noise_snr_db": noise_snr_db}
    if noise_snr_db is not None:
        key["seed"] = seed
    return key
