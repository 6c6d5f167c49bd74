"""Log-mel spectrograms as images: their parameters, rendering, per-speaker normalisation and batches.

One clip -> load, trim silence, fix the duration (:mod:`mer_utils.audio`) -> log-mel spectrogram
in dB -> image: dB normalised per image to 0-255, low frequencies at the bottom, resized to
``image_size`` x ``image_size``, grey copied to 3 channels (the layout ImageNet networks expect).
The spectrogram branch (:mod:`mer_utils.pipelines.spectrogram`) trains on these images; log-mels
are cached under the ``audio`` cache folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.config import DEFAULT_SEED


@dataclass(frozen=True)
class SpectrogramParams:
    """Everything that turns a clip into a spectrogram image (stored in run.json)."""

    # Sample rate of the analysis (Hz); any input rate is resampled to it.
    sr: int = 16_000
    # Seconds kept after silence trimming (centre crop or pad): trimmed RAVDESS sentences last 1.5-3 s.
    duration: float = 3.0
    # Silence threshold for trimming (dB below the peak).
    top_db: float = 30.0
    # Mel bands (image rows before resizing).
    n_mels: int = 128
    # FFT size and hop (samples): 64 ms windows every 16 ms at 16 kHz -> 188 frames for 3 s.
    n_fft: int = 1024
    hop_length: int = 256
    # Highest mel frequency (Hz); None = Nyquist.
    fmax: float | None = 8000.0
    # Dynamic range kept below the peak (dB); quieter cells are clipped.
    db_range: float = 80.0
    # Side of the square image fed to the network (pixels).
    image_size: int = 128
    # Subtract each speaker's mean spectrum (from their own clips, no labels) before rendering.
    speaker_norm: bool = False

    def feature_key(self) -> dict:
        """The parameters that change the cached log-mel (image size and speaker norm do not)."""
        key = asdict(self)
        key.pop("image_size")
        key.pop("speaker_norm")
        return key


# --- images ---------------------------------------------------------------------------------


def spectrogram_image(log_mel: np.ndarray, size: int | tuple[int, int] = 128) -> np.ndarray:
    """Render a (n_mels, frames) dB spectrogram as a uint8 (H, W, 3) image.

    dB values are min-max normalised per image to 0-255 (so loudness and recording level
    do not matter), low frequencies go to the bottom row as in every spectrogram plot,
    the image is resized to ``size`` (an int for a square, or (height, width)) and the
    grey channel is copied three times.
    """
    import cv2

    log_mel = np.asarray(log_mel, dtype=np.float32)
    if log_mel.ndim != 2 or min(log_mel.shape) < 2:
        raise ValueError(f"need a 2-D (n_mels, frames) spectrogram, got shape {log_mel.shape}")
    if not np.isfinite(log_mel).all():
        raise ValueError("spectrogram holds non-finite values")
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {size}")
    low, high = float(log_mel.min()), float(log_mel.max())
    # A silent clip is flat: it becomes a black image instead of a division by zero.
    scaled = (log_mel - low) / (high - low) if high > low else np.zeros_like(log_mel)
    grey = np.flipud(scaled * 255.0)
    grey = cv2.resize(np.ascontiguousarray(grey), (width, height), interpolation=cv2.INTER_AREA)
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def spectrogram_images(log_mels: np.ndarray, size: int | tuple[int, int] = 128) -> np.ndarray:
    """Render a stack of spectrograms (n, n_mels, frames) as uint8 images (n, H, W, 3)."""
    return np.stack([spectrogram_image(m, size) for m in log_mels])


def save_spectrogram_pngs(images: np.ndarray, names: list[str], folder: str | Path) -> list[Path]:
    """Write uint8 (n, H, W, 3) images (exactly what the model sees) as ``folder/<name>.png``."""
    import cv2

    from mer_utils.runs import atomic_write_bytes

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"need uint8 images of shape (n, H, W, 3), got {images.dtype} {images.shape}")
    if len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    folder = Path(folder)
    paths = []
    for image, name in zip(images, names, strict=True):
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))
        if not ok:
            raise ValueError(f"could not encode image {name!r} as PNG")
        paths.append(atomic_write_bytes(folder / f"{name}.png", encoded.tobytes()))
    return paths


def plot_spectrogram_grid(images: np.ndarray, titles: list[str], columns: int = 4):
    """A grid of spectrogram images with titles (one per emotion in notebook 04). Returns the figure."""
    from mer_utils.plotting import pyplot

    plt = pyplot()
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(image[:, :, 0], cmap="magma", origin="upper", vmin=0, vmax=255)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- features -------------------------------------------------------------------------------


def clip_log_mel(
    path: str | Path,
    params: SpectrogramParams = SpectrogramParams(),
    noise_snr_db: float | None = None,
    augmentation=None,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """Log-mel spectrogram (n_mels, frames) in dB of one clip after trimming and fixing the duration."""
    from mer_utils.audio import log_mel_spectrogram, prepare_waveform

    y = prepare_waveform(path, params.sr, params.duration, params.top_db, noise_snr_db, augmentation, seed)
    return log_mel_spectrogram(
        y, params.sr, params.n_mels, params.n_fft, params.hop_length, params.fmax, params.db_range
    )


def log_mel_batch(
    index: pd.DataFrame,
    params: SpectrogramParams = SpectrogramParams(),
    noise_snr_db: float | None = None,
    augmentation: dict | None = None,
    copy: int = 0,
    seed: int = DEFAULT_SEED,
    cache_dir: str | Path | None = None,
    progress: bool = True,
):
    """Cached log-mel spectrograms of every clip in ``index`` -> :class:`mer_utils.audio.FeatureBatch`.

    ``augmentation`` (AudioAugmentation fields as a dict) with ``copy`` k gives the k-th
    augmented copy of each clip. Unreadable clips are skipped and listed in ``.skipped``.
    """
    from mer_utils.audio import clip_seed, extract_features
    from mer_utils.audio_augment import AudioAugmentation

    key = {"kind": "log_mel", **params.feature_key(), "noise_snr_db": noise_snr_db, "seed": seed}
    augmenter = None
    if augmentation is not None:
        augmenter = AudioAugmentation(**augmentation)
        key.update({"augmentation": asdict(augmenter), "copy": copy})

    def featurize(path: str) -> np.ndarray:
        return clip_log_mel(
            path, params, noise_snr_db, augmenter, clip_seed(path, seed, copy, salt="spectrogram")
        )

    desc = "log-mel" + (f" (augmented copy {copy})" if augmenter is not None else "")
    return extract_features(index, featurize, key, cache_dir, progress, desc)


def masked_copies(log_mels: np.ndarray, seed: int) -> np.ndarray:
    """SpecAugment masks (2 frequency bands up to 12 mels, 2 time spans up to 10 % of frames) on each map."""
    from mer_utils.audio_augment import spec_augment

    rng = np.random.default_rng(seed)
    frames = log_mels.shape[-1]
    return np.stack(
        [
            spec_augment(m, rng, freq_masks=2, max_freq_width=12, time_masks=2, max_time_width=frames // 10)
            for m in log_mels
        ]
    )


def speaker_mean_spectra(log_mels: np.ndarray, speakers, db_range: float) -> dict:
    """Each speaker's mean dB per mel band over the cells above the silence floor of their clips.

    Uses no labels: at test time it needs only unlabelled clips of the same speaker, which is
    why per-speaker normalisation is legitimate on unseen actors.
    """
    log_mels = np.asarray(log_mels, dtype=np.float32)
    speakers = np.asarray(list(speakers))
    if len(speakers) != len(log_mels):
        raise ValueError(f"{len(speakers)} speaker ids for {len(log_mels)} spectrograms")
    means = {}
    for speaker in np.unique(speakers):
        maps = log_mels[speakers == speaker]
        sound = maps > _floor(maps, db_range)
        counts = sound.sum(axis=(0, 2))
        totals = np.where(sound, maps, 0.0).sum(axis=(0, 2))
        means[speaker.item()] = np.where(counts > 0, totals / np.maximum(counts, 1), 0.0).astype(np.float32)
    return means


def _floor(log_mels: np.ndarray, db_range: float) -> float:
    # log_mel_spectrogram clips at -db_range below the peak: cells there are silence or padding.
    return -float(db_range) + 0.5


def normalise_speakers(log_mels: np.ndarray, speakers, means: dict, db_range: float) -> np.ndarray:
    """Subtract the speaker's mean spectrum from the sound cells; silence stays the darkest value."""
    log_mels = np.asarray(log_mels, dtype=np.float32)
    out = np.empty_like(log_mels)
    for i, (log_mel, speaker) in enumerate(zip(log_mels, list(speakers), strict=True)):
        if speaker not in means:
            raise ValueError(f"no mean spectrum for speaker {speaker!r}")
        sound = log_mel > _floor(log_mel, db_range)
        shifted = log_mel - means[speaker][:, None]
        lowest = float(shifted[sound].min()) if sound.any() else 0.0
        out[i] = np.where(sound, shifted, lowest)
    return out


def render_images(
    log_mels: np.ndarray, speakers, params: SpectrogramParams, means: dict | None = None
) -> np.ndarray:
    """Images of spectrograms under ``params``: per-speaker normalised first when ``params.speaker_norm``.

    ``means`` (from :func:`speaker_mean_spectra`) default to the statistics of ``log_mels`` themselves.
    """
    if params.speaker_norm:
        if means is None:
            means = speaker_mean_spectra(log_mels, speakers, params.db_range)
        log_mels = normalise_speakers(log_mels, speakers, means, params.db_range)
    return spectrogram_images(log_mels, params.image_size)
