"""Once-per-machine warm-up, run by ``make setup``: the slow first steps no notebook should pay.

librosa compiles its numba kernels the first time they are imported (``guvectorize`` with
signatures) or called (``jit(cache=True)``) and caches them next to its sources in the venv;
matplotlib builds its font cache on first import. On 2 cores the kernels alone take tens of
seconds, and two notebooks started at once would each compile them. Running every audio feature
of the project once on a synthetic second of sound here compiles them all: silence trimming,
MFCC + deltas, YIN pitch, onsets, log-mel, spectral statistics, pitch shift and time stretch.

``python -m mer_utils.warmup`` prints what it did and how long it took.
"""

from __future__ import annotations

import time

import numpy as np

from mer_utils.audio import TARGET_SR


def _voice(seconds: float = 1.0, sr: int = TARGET_SR) -> np.ndarray:
    """A gliding harmonic tone between two quiet stretches: voiced frames, onsets and silence to trim."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140.0 + 40.0 * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / sr
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(np.pi * t / seconds) * 3.0 - 1.0, 0.0, 1.0)
    noise = np.random.default_rng(0).normal(0.0, 0.003, t.size)
    return (0.3 * envelope * tone + noise).astype(np.float32)


def compile_audio_kernels() -> float:
    """Run each audio feature once on a synthetic clip; returns the seconds it took."""
    from mer_utils import audio, audio_augment, utterance

    start = time.perf_counter()
    y = _voice()
    trimmed = audio.trim_silence(y)
    audio.mfcc_features(trimmed)
    audio.prosody_features(trimmed)
    audio.log_mel_spectrogram(trimmed, TARGET_SR, n_mels=64)
    utterance.utterance_features(trimmed)
    audio_augment.pitch_shift(trimmed, TARGET_SR, 1.0)
    audio_augment.time_stretch(trimmed, 1.05)
    return time.perf_counter() - start


def main() -> None:
    start = time.perf_counter()
    import matplotlib.pyplot  # noqa: F401  (builds the font cache)

    fonts = time.perf_counter() - start
    kernels = compile_audio_kernels()
    print(f"warm-up: matplotlib font cache {fonts:.0f} s, librosa numba kernels {kernels:.0f} s")


if __name__ == "__main__":
    main()
