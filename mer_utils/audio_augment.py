"""Audio augmentation: waveform changes (noise, shift, pitch, stretch) and SpecAugment masks.

Used on training copies only, plus white noise at a fixed SNR for the robustness curves and
coloured noise (:func:`coloured_noise`) for the voice-activity checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Add white Gaussian noise so that signal power / noise power equals ``snr_db`` (dB)."""
    rng = np.random.default_rng(rng)
    y = np.asarray(y, dtype=np.float32)
    power = float(np.mean(y.astype(np.float64) ** 2))
    if power == 0.0:
        return y.copy()
    noise_power = power / 10 ** (snr_db / 10)
    noise = rng.standard_normal(y.size) * np.sqrt(noise_power)
    return (y + noise).astype(np.float32)


# Spectral slope (power ~ 1/f^(2 x exponent)) of each colour of noise.
NOISE_COLOURS = {"white": 0.0, "pink": 0.5, "brown": 1.0}


def coloured_noise(
    colour: str, seconds: float, sr: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """White, pink (1/f power) or brown (1/f^2 power) noise of ``seconds`` at ``sr``, unit RMS."""
    if colour not in NOISE_COLOURS:
        raise ValueError(f"unknown noise colour {colour!r}; expected one of {list(NOISE_COLOURS)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n = int(seconds * sr)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    frequencies = np.maximum(np.fft.rfftfreq(n, 1 / sr), 1.0)
    y = np.fft.irfft(spectrum / frequencies ** NOISE_COLOURS[colour], n)
    return (y / np.sqrt(np.mean(y**2))).astype(np.float32)


def time_shift(
    y: np.ndarray, max_seconds: float, sr: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Shift the audio by a random offset in [-max_seconds, max_seconds], filling with zeros."""
    rng = np.random.default_rng(rng)
    y = np.asarray(y, dtype=np.float32)
    limit = int(max_seconds * sr)
    shift = int(rng.integers(-limit, limit + 1)) if limit > 0 else 0
    out = np.zeros_like(y)
    if shift > 0:
        out[shift:] = y[: y.size - shift]
    elif shift < 0:
        out[:shift] = y[-shift:]
    else:
        out[:] = y
    return out


def pitch_shift(y: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Shift the pitch by ``semitones`` (duration unchanged)."""
    import librosa

    if semitones == 0:
        return np.asarray(y, dtype=np.float32).copy()
    return librosa.effects.pitch_shift(np.asarray(y, dtype=np.float32), sr=sr, n_steps=semitones).astype(
        np.float32
    )


def time_stretch(y: np.ndarray, rate: float) -> np.ndarray:
    """Speed up (``rate`` > 1) or slow down (< 1) without changing pitch; length changes by 1/rate."""
    import librosa

    if rate <= 0:
        raise ValueError(f"stretch rate must be positive, got {rate}")
    if rate == 1:
        return np.asarray(y, dtype=np.float32).copy()
    return librosa.effects.time_stretch(np.asarray(y, dtype=np.float32), rate=rate).astype(np.float32)


def spec_augment(
    spectrogram: np.ndarray,
    rng: np.random.Generator | int | None = None,
    freq_masks: int = 2,
    max_freq_width: int = 8,
    time_masks: int = 2,
    max_time_width: int = 20,
    freq_axis: int = 0,
    fill: float | None = None,
) -> np.ndarray:
    """SpecAugment-style masks: blank random frequency bands and time spans of a 2-D feature map.

    ``freq_axis`` is 0 for a (n_mels, frames) spectrogram and 1 for a (frames, features) MFCC
    sequence. Masked cells take ``fill`` (default: the map's mean). Returns a copy.
    """
    rng = np.random.default_rng(rng)
    out = np.array(spectrogram, dtype=np.float32, copy=True)
    if out.ndim != 2:
        raise ValueError(f"spec_augment needs a 2-D array, got shape {out.shape}")
    if freq_axis == 1:
        out = out.T
    elif freq_axis != 0:
        raise ValueError(f"freq_axis must be 0 or 1, got {freq_axis}")
    value = float(out.mean()) if fill is None else float(fill)
    n_freq, n_time = out.shape
    for _ in range(freq_masks):
        width = int(rng.integers(0, min(max_freq_width, n_freq) + 1))
        start = int(rng.integers(0, n_freq - width + 1))
        out[start : start + width, :] = value
    for _ in range(time_masks):
        width = int(rng.integers(0, min(max_time_width, n_time) + 1))
        start = int(rng.integers(0, n_time - width + 1))
        out[:, start : start + width] = value
    return out.T.copy() if freq_axis == 1 else out


@dataclass(frozen=True)
class AudioAugmentation:
    """Random waveform augmentation of one training copy (each field off at its neutral value)."""

    # White noise at an SNR drawn uniformly from this (low, high) range in dB; None: no noise.
    noise_snr_db: tuple[float, float] | None = (15.0, 35.0)
    # Largest random time shift (s).
    max_shift_seconds: float = 0.25
    # Largest pitch shift (semitones), drawn uniformly in [-max, max].
    max_semitones: float = 2.0
    # Stretch rate drawn uniformly from this range (1 = none).
    stretch_range: tuple[float, float] = (0.9, 1.1)

    def apply(self, y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        """Return an augmented copy of ``y`` (before the duration is fixed)."""
        low, high = self.stretch_range
        rate = float(rng.uniform(low, high))
        if abs(rate - 1) > 1e-3:
            y = time_stretch(y, rate)
        if self.max_semitones > 0:
            y = pitch_shift(y, sr, float(rng.uniform(-self.max_semitones, self.max_semitones)))
        if self.max_shift_seconds > 0:
            y = time_shift(y, self.max_shift_seconds, sr, rng)
        if self.noise_snr_db is not None:
            y = add_noise(y, float(rng.uniform(*self.noise_snr_db)), rng)
        return y
