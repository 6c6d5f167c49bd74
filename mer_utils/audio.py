"""Audio features for the audio branches: loading, trimming, fixed length, MFCC, log-mel, augmentation.

Every RAVDESS clip with sound (full AV .mp4, modality 01, or audio-only .wav, modality 03)
is read through :func:`mer_utils.media.read_audio` at one target rate; video-only clips
(modality 02) raise :class:`mer_utils.media.NoAudioStreamError`, which batch extraction
records in a manifest instead of crashing.

Pipeline for one clip: load -> trim leading/trailing silence -> (optional noise at an SNR)
-> fix the duration (centre crop or zero pad on both sides) -> frames of MFCC (+ deltas,
+ optional pitch / energy) or a log-mel spectrogram. Features are cached on disk, keyed by
the clip (path, mtime, size) and every parameter, and written atomically.

Normalisation is fitted on the training split only (:func:`fit_standardiser`); optionally
each speaker is first standardised with their own clips' statistics
(:func:`normalise_per_speaker`), which uses no labels and so is legitimate at test time.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils import media
from mer_utils.audio_augment import AudioAugmentation, add_noise
from mer_utils.config import DEFAULT_SEED

log = logging.getLogger(__name__)

# Target sample rate of every audio feature (Hz); RAVDESS ships 48 kHz, the demo 16 kHz.
TARGET_SR = 16_000
# Fixed clip length after silence trimming (s): trimmed RAVDESS sentences last 1.2-2.4 s.
DEFAULT_DURATION = 2.5
# Silence threshold below the clip's peak (dB) for trimming the leading / trailing silence.
DEFAULT_TOP_DB = 30.0
# MFCC analysis: 25 ms windows every 10 ms at 16 kHz, the usual speech framing.
N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 160
# Mel bands behind the MFCCs (the spectrogram branch picks its own n_mels).
MFCC_MELS = 64
# Lowest / highest pitch searched by the YIN pitch tracker (Hz): covers adult speech.
PITCH_FMIN = 60.0
PITCH_FMAX = 500.0
# Most seconds of a clip's sound track given to any audio feature: memory stays bounded (7.7 MB of
# 16 kHz float samples) whatever the clip length; a longer clip gives the window where its voice is.
# RAVDESS clips last 3-5 s, Whisper reads 30 s windows.
MAX_AUDIO_SECONDS = 120.0
# Sub-folder of CACHE_DIR holding audio features.
CACHE_SUBDIR = "audio"

# Hits and misses of the feature cache in this process (tests read it to check reuse).
CACHE_STATS = {"hits": 0, "misses": 0}


# --- loading and waveform operations ---------------------------------------------------------


def load_clip_audio(
    path: str | Path, sr: int = TARGET_SR, max_seconds: float | None = MAX_AUDIO_SECONDS
) -> np.ndarray:
    """Mono float32 audio of a clip (.mp4 with an audio track or .wav) at ``sr`` Hz.

    At most ``max_seconds`` are returned (None reads everything). A longer clip gives the
    ``max_seconds`` where its voice is: its voice activity is read over the whole clip, streamed
    (:func:`mer_utils.voice.stream_voice_activity`), and the window holding the most voice is
    decoded, so a 10-minute recording that speaks from minute 3 on gives minute 3 on. Raises
    ``FileNotFoundError`` for a missing file, :class:`media.NoAudioStreamError` for a video-only
    clip and :class:`media.MediaError` for an empty or corrupt one.
    """
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    # One hop more than the bound tells a clip longer than it from one that just fits.
    probe = None if max_seconds is None else max_seconds + 0.05
    audio = media.read_audio(path, sr=sr, max_seconds=probe)
    if max_seconds is not None and audio.size > int(round(max_seconds * sr)):
        from mer_utils.voice import stream_voice_activity

        start = stream_voice_activity(path, sr).best_window(max_seconds)
        audio = media.read_audio(path, sr=sr, max_seconds=max_seconds, start_seconds=start)
    if audio.size == 0 or not np.isfinite(audio).all():
        raise media.MediaError(f"{path}: audio stream is empty or holds non-finite samples")
    return audio


def trim_silence(y: np.ndarray, top_db: float = DEFAULT_TOP_DB) -> np.ndarray:
    """Cut leading and trailing parts quieter than ``top_db`` below the peak; silence stays as is."""
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if y.size == 0 or not np.any(y):
        return y
    trimmed, _ = librosa.effects.trim(y, top_db=top_db, frame_length=1024, hop_length=256)
    # A clip of pure noise can trim to nothing: keep the original rather than an empty array.
    return trimmed if trimmed.size else y


def fix_duration(y: np.ndarray, sr: int, seconds: float) -> np.ndarray:
    """Return exactly ``round(seconds * sr)`` samples.

    Longer audio is cropped around its centre (the middle of a trimmed sentence carries the
    most speech); shorter audio is zero-padded equally on both sides (the extra sample on
    the right when the padding is odd), so the speech stays centred.
    """
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    target = int(round(seconds * sr))
    y = np.asarray(y, dtype=np.float32)
    if y.size > target:
        start = (y.size - target) // 2
        return y[start : start + target].copy()
    missing = target - y.size
    left = missing // 2
    return np.pad(y, (left, missing - left))


# --- frame features --------------------------------------------------------------------------


def mfcc_features(
    y: np.ndarray,
    sr: int = TARGET_SR,
    n_mfcc: int = 40,
    deltas: bool = True,
    n_fft: int = N_FFT,
    win_length: int = WIN_LENGTH,
    hop_length: int = HOP_LENGTH,
    n_mels: int = MFCC_MELS,
) -> np.ndarray:
    """MFCC sequence as float32 (frames, features): n_mfcc, or 3 x n_mfcc with deltas and delta-deltas."""
    import librosa

    y = np.asarray(y, dtype=np.float32)
    mfcc = librosa.feature.mfcc(
        y=y, sr=sr, n_mfcc=n_mfcc, n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels
    )
    parts = [mfcc]
    if deltas:
        # Deltas need at least width frames; short clips fall back to a smaller odd width.
        width = min(9, mfcc.shape[1] if mfcc.shape[1] % 2 else mfcc.shape[1] - 1)
        if width >= 3:
            parts += [
                librosa.feature.delta(mfcc, width=width),
                librosa.feature.delta(mfcc, order=2, width=width),
            ]
        else:
            parts += [np.zeros_like(mfcc), np.zeros_like(mfcc)]
    return np.concatenate(parts, axis=0).T.astype(np.float32)


def prosody_features(y: np.ndarray, sr: int = TARGET_SR, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Log pitch (YIN, 0 where unvoiced) and log energy per frame as float32 (frames, 2)."""
    import librosa

    y = np.asarray(y, dtype=np.float32)
    frame_length = 1024
    rms = librosa.feature.rms(y=y, frame_length=frame_length, hop_length=hop_length, center=True)[0]
    f0 = librosa.yin(
        y, fmin=PITCH_FMIN, fmax=PITCH_FMAX, sr=sr, frame_length=frame_length, hop_length=hop_length
    )
    n = min(len(rms), len(f0))
    # YIN returns a pitch for every frame; frames far quieter than the clip's speech are unvoiced.
    voiced = rms[:n] > 0.1 * (np.percentile(rms, 95) + 1e-9)
    log_f0 = np.where(voiced, np.log(np.clip(f0[:n], PITCH_FMIN, PITCH_FMAX)), 0.0)
    log_energy = np.log(rms[:n] + 1e-5)
    return np.stack([log_f0, log_energy], axis=1).astype(np.float32)


def log_mel_spectrogram(
    y: np.ndarray,
    sr: int = TARGET_SR,
    n_mels: int = 128,
    n_fft: int = 1024,
    hop_length: int = 256,
    fmax: float | None = None,
    top_db: float = 80.0,
) -> np.ndarray:
    """Log-mel spectrogram in dB relative to the clip's peak, float32 (n_mels, frames), in [-top_db, 0]."""
    import librosa

    y = np.asarray(y, dtype=np.float32)
    mel = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmax=fmax
    )
    if not np.any(mel):
        return np.full(mel.shape, -top_db, dtype=np.float32)
    return librosa.power_to_db(mel, ref=np.max, top_db=top_db).astype(np.float32)


# --- one clip, end to end ---------------------------------------------------------------------


@dataclass(frozen=True)
class MfccParams:
    """Everything that determines an MFCC feature sequence (stored in run.json)."""

    sr: int = TARGET_SR
    duration: float = DEFAULT_DURATION
    top_db: float = DEFAULT_TOP_DB
    n_mfcc: int = 40
    deltas: bool = True
    prosody: bool = True
    n_fft: int = N_FFT
    win_length: int = WIN_LENGTH
    hop_length: int = HOP_LENGTH
    n_mels: int = MFCC_MELS

    @property
    def num_features(self) -> int:
        """Features per frame."""
        return self.n_mfcc * (3 if self.deltas else 1) + (2 if self.prosody else 0)

    @property
    def num_frames(self) -> int:
        """Frames per clip (librosa centres frames, hence the + 1)."""
        return int(round(self.duration * self.sr)) // self.hop_length + 1

    def to_dict(self) -> dict:
        """JSON-ready parameters."""
        return asdict(self)


def prepare_waveform(
    path: str | Path,
    sr: int = TARGET_SR,
    duration: float = DEFAULT_DURATION,
    top_db: float | None = DEFAULT_TOP_DB,
    noise_snr_db: float | None = None,
    augmentation: AudioAugmentation | None = None,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """Load, trim, optionally augment / add noise, and fix the duration of one clip.

    Noise (``noise_snr_db``, the robustness test) is added to the trimmed speech so the SNR
    refers to speech power, then padding adds exact zeros.
    """
    rng = np.random.default_rng(seed)
    y = load_clip_audio(path, sr)
    if top_db is not None:
        y = trim_silence(y, top_db)
    if augmentation is not None:
        y = augmentation.apply(y, sr, rng)
    if noise_snr_db is not None:
        y = add_noise(y, noise_snr_db, rng)
    return fix_duration(y, sr, duration)


def clip_mfcc(
    path: str | Path,
    params: MfccParams = MfccParams(),
    noise_snr_db: float | None = None,
    augmentation: AudioAugmentation | None = None,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """MFCC (+ deltas, + prosody) sequence of one clip, float32 (params.num_frames, params.num_features)."""
    y = prepare_waveform(path, params.sr, params.duration, params.top_db, noise_snr_db, augmentation, seed)
    features = mfcc_features(
        y,
        params.sr,
        params.n_mfcc,
        params.deltas,
        params.n_fft,
        params.win_length,
        params.hop_length,
        params.n_mels,
    )
    if params.prosody:
        extra = prosody_features(y, params.sr, params.hop_length)
        n = min(len(features), len(extra))
        features = np.concatenate([features[:n], extra[:n]], axis=1)
    return features


# --- cache and batch extraction ---------------------------------------------------------------


def cache_key(path: str | Path, params: dict) -> str:
    """Key of one cached feature: the clip (resolved path, mtime, size) and every parameter."""
    path = Path(path)
    stat = path.stat()
    identity = {
        "path": str(path.resolve()),
        "mtime_ns": stat.st_mtime_ns,
        "size": stat.st_size,
        "params": params,
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def cached_feature(
    path: str | Path,
    compute: Callable[[], np.ndarray],
    params: dict,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """Return ``compute()`` for a clip, read from / written to the disk cache under ``params``.

    ``cache_dir=None`` uses ``CACHE_DIR/audio``; pass ``False``-like ``""`` to disable caching.
    Files are written atomically, so an interrupted run never leaves half a feature behind.
    """
    from mer_utils.runs import atomic_write_bytes

    if cache_dir == "":
        return compute()
    from mer_utils.cache import cache_dir as shared_cache_dir

    folder = shared_cache_dir(CACHE_SUBDIR, cache_dir)
    file = folder / f"{Path(path).stem}-{cache_key(path, params)}.npy"
    if file.is_file():
        try:
            value = np.load(file, allow_pickle=False)
            CACHE_STATS["hits"] += 1
            return value
        except (ValueError, OSError, EOFError) as error:
            # A zero-byte or truncated file (left by a crash or a full disk) is a miss: drop it, recompute.
            log.debug("recomputing %s: cache file %s is unreadable (%s); deleted", path, file, error)
            file.unlink(missing_ok=True)
    value = compute()
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    atomic_write_bytes(file, buffer.getvalue())
    CACHE_STATS["misses"] += 1
    return value


@dataclass
class FeatureBatch:
    """Features of many clips: the stacked array, the rows that worked and those that failed."""

    features: np.ndarray
    rows: pd.DataFrame
    skipped: list[dict] = field(default_factory=list)

    def manifest(self) -> pd.DataFrame:
        """Failures as a DataFrame with columns path, reason."""
        return pd.DataFrame(self.skipped, columns=["path", "reason"])


def _cache_one(path: str, featurize: Callable[[str], np.ndarray], params: dict, cache_dir: str) -> str | None:
    """Cache one clip's features (on a Dask worker, see :mod:`mer_utils.feature_map`); the reason it failed, or None."""
    try:
        cached_feature(path, lambda: featurize(path), params, cache_dir)
    except (media.MediaError, FileNotFoundError, ValueError) as error:
        return str(error)
    return None


def extract_features(
    index: pd.DataFrame,
    featurize: Callable[[str], np.ndarray],
    params: dict,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    desc: str = "audio features",
    manifest: str | Path | None = None,
) -> FeatureBatch:
    """Features of every clip in ``index`` (column ``path``), cached, with failures skipped.

    ``featurize(path)`` computes one clip's fixed-shape array; ``params`` must name everything
    that changes its result (it keys the cache). Clips that cannot be read (no audio track,
    corrupt, missing) are logged, listed in ``FeatureBatch.skipped`` as {path, reason} and,
    if ``manifest`` is given, written there as CSV. Raises ``ValueError`` if nothing worked.
    """
    from tqdm.auto import tqdm

    from mer_utils import feature_map

    arrays, kept, skipped = [], [], []
    paths = index["path"].astype(str).tolist()
    failed: dict = {}
    if feature_map.active() and cache_dir != "":
        # Inside `mer train --workers/--scheduler`: the workers fill the cache, this loop reads it.
        from mer_utils.cache import cache_dir as shared_cache_dir

        folder = str(shared_cache_dir(CACHE_SUBDIR, cache_dir).resolve())
        failed = feature_map.fill(
            paths, functools.partial(_cache_one, featurize=featurize, params=params, cache_dir=folder)
        )
    for position, path in enumerate(tqdm(paths, desc=desc, unit="clip", disable=not progress, leave=False)):
        try:
            if path in failed:
                raise ValueError(failed[path])
            value = cached_feature(path, lambda p=path: featurize(p), params, cache_dir)
        except (media.MediaError, FileNotFoundError, ValueError) as error:
            log.warning("skipping %s: %s", path, error)
            skipped.append({"path": path, "reason": str(error)})
            continue
        arrays.append(value)
        kept.append(position)
    if manifest is not None:
        pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(manifest, index=False)
    if not arrays:
        reasons = "; ".join(s["reason"] for s in skipped[:3])
        raise ValueError(f"no audio features could be extracted from {len(paths)} clip(s): {reasons}")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"featurize returned different shapes {sorted(shapes)}; fix the duration first")
    rows = index.iloc[kept].reset_index(drop=True)
    return FeatureBatch(features=np.stack(arrays), rows=rows, skipped=skipped)


def mfcc_batch(
    index: pd.DataFrame,
    params: MfccParams = MfccParams(),
    noise_snr_db: float | None = None,
    augmentation: AudioAugmentation | None = None,
    copy: int = 0,
    seed: int = DEFAULT_SEED,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    manifest: str | Path | None = None,
) -> FeatureBatch:
    """MFCC sequences (n, frames, features) of every clip in ``index``, cached.

    ``augmentation`` with ``copy`` k gives the k-th augmented copy of each clip (its random
    draw is seeded by the seed, the copy and the clip, so copies differ and repeat exactly).
    """
    key = mfcc_cache_params(params, noise_snr_db, augmentation, copy, seed)

    def featurize(path: str) -> np.ndarray:
        return clip_mfcc(path, params, noise_snr_db, augmentation, clip_seed(path, seed, copy))

    desc = "MFCC" + (f" (augmented copy {copy})" if augmentation is not None else "")
    return extract_features(index, featurize, key, cache_dir, progress, desc, manifest)


def mfcc_cache_params(
    params: MfccParams,
    noise_snr_db: float | None = None,
    augmentation: AudioAugmentation | None = None,
    copy: int = 0,
    seed: int = DEFAULT_SEED,
) -> dict:
    """The cache key parameters of :func:`mfcc_batch` (the seed only matters with noise or augmentation)."""
    key: dict = {"kind": "mfcc", **params.to_dict(), "noise_snr_db": noise_snr_db}
    if noise_snr_db is not None or augmentation is not None:
        key["seed"] = seed
    if augmentation is not None:
        key.update({"augmentation": asdict(augmentation), "copy": copy})
    return key


def clip_seed(path: str | Path, seed: int, copy: int = 0, salt: str = "") -> int:
    """A per-clip seed from the file name (not its folder), the seed, the copy and a feature ``salt``.

    Copies differ and repeat exactly; ``salt`` keeps two features of one clip on separate draws.
    """
    suffix = f"|{salt}" if salt else ""
    digest = hashlib.sha1(f"{Path(path).name}|{seed}|{copy}{suffix}".encode()).hexdigest()
    return int(digest[:8], 16)


# --- normalisation ----------------------------------------------------------------------------


def fit_standardiser(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over all clips and frames of (n, frames, features) training data."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim < 2 or features.shape[0] == 0:
        raise ValueError(f"need a non-empty (n, ..., features) array, got shape {features.shape}")
    flat = features.reshape(-1, features.shape[-1])
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    # Constant features (e.g. padding-only) would divide by zero: leave them unscaled.
    std = np.where(std < 1e-8, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def apply_standardiser(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(features - mean) / std with the statistics from :func:`fit_standardiser`."""
    return ((np.asarray(features, dtype=np.float32) - mean) / std).astype(np.float32)


def speaker_statistics(features: np.ndarray, speakers: Sequence) -> dict:
    """Per-speaker (mean, std) over each speaker's clips and frames, keyed by speaker id."""
    features = np.asarray(features, dtype=np.float32)
    speakers = np.asarray(list(speakers))
    if len(speakers) != len(features):
        raise ValueError(f"{len(speakers)} speaker ids for {len(features)} clips")
    return {
        speaker: fit_standardiser(features[speakers == speaker]) for speaker in np.unique(speakers).tolist()
    }


def normalise_per_speaker(
    features: np.ndarray, speakers: Sequence, statistics: dict | None = None
) -> np.ndarray:
    """Standardise each speaker's clips with that speaker's own mean and std (no labels used).

    Removes much of the voice (pitch, timbre, microphone) that separates speakers more than
    emotions do; at test time it needs only unlabelled clips of the same speaker.
    ``statistics`` (from :func:`speaker_statistics`) lets augmented copies reuse the
    statistics of the original clips; by default they come from ``features`` itself.
    """
    features = np.asarray(features, dtype=np.float32)
    speakers = np.asarray(list(speakers))
    if len(speakers) != len(features):
        raise ValueError(f"{len(speakers)} speaker ids for {len(features)} clips")
    statistics = statistics if statistics is not None else speaker_statistics(features, speakers)
    out = np.empty_like(features)
    for speaker in np.unique(speakers).tolist():
        if speaker not in statistics:
            raise ValueError(f"no normalisation statistics for speaker {speaker!r}")
        rows = speakers == speaker
        out[rows] = apply_standardiser(features[rows], *statistics[speaker])
    return out
