"""Voice activity: does a clip hold enough speech for the audio models to say anything?

An energy detector, deliberately simple and explainable: the clip is cut into 30 ms frames every
10 ms and a frame counts as voice when its level (RMS, dB re full scale) is

* above an absolute floor (:data:`ABSOLUTE_FLOOR_DB`), so digital silence and faint hiss never
  count, however much a relative rule would amplify them, and
* at least :data:`ABOVE_NOISE_DB` above the clip's own noise floor (its 5th-percentile frame
  level), so steady noise (hiss, hum, fan) does not count at any level: speech rises and falls,
  steady noise does not.

A clip with less than :data:`MIN_SPEECH_SECONDS` of voice frames has "no speech": at prediction
time the audio and spectrogram models then report themselves unavailable with the reason
("no speech found (0.2 s of voice)") instead of classifying padding or noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mer_utils.media import MediaError

# Analysis frames (s): 30 ms windows every 10 ms, the usual speech framing.
FRAME_SECONDS = 0.030
HOP_SECONDS = 0.010
# Frames quieter than this (dB re full scale) are never voice: digital silence, faint hiss, dither.
# The quietest RAVDESS speech (soft, normal-intensity takes) peaks near -54 dBFS.
ABSOLUTE_FLOOR_DB = -65.0
# A voice frame rises at least this far (dB) above the clip's noise floor; 30 ms frames of steady
# white noise vary by well under 1 dB, speech by 20-40 dB.
ABOVE_NOISE_DB = 6.0
# Percentile of the frame levels taken as the clip's noise floor.
NOISE_PERCENTILE = 5
# Less voice than this (s) is "no speech": half a second is about two syllables. Measured: each of
# the 1,080 RAVDESS speech clips of actors 01-18 has at least 0.57 s of voice (median 1.7 s), the
# CREMA-D clips 0.82-1.30 s; white, pink and brown noise and digital silence 0-0.34 s.
MIN_SPEECH_SECONDS = 0.5


class NoSpeechError(MediaError):
    """The clip holds no speech (or too little): the audio models cannot say anything about it."""


@dataclass(frozen=True)
class VoiceActivity:
    """Voice frames of a clip: the mask per 10 ms frame, the voiced seconds and the levels used."""

    voiced: np.ndarray  # bool (frames,)
    seconds: float  # seconds of voice frames
    duration: float  # clip length (s)
    noise_floor_db: float
    peak_db: float

    @property
    def has_speech(self) -> bool:
        """At least :data:`MIN_SPEECH_SECONDS` of voice."""
        return self.seconds >= MIN_SPEECH_SECONDS

    def first_voice_seconds(self) -> float:
        """Time (s) of the first voice frame (0 when there is none)."""
        hits = np.flatnonzero(self.voiced)
        return float(hits[0] * HOP_SECONDS) if hits.size else 0.0


def frame_levels_db(y: np.ndarray, sr: int) -> np.ndarray:
    """RMS level in dB re full scale of every 30 ms frame (hop 10 ms); -120 for digital silence."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    frame, hop = max(1, int(round(FRAME_SECONDS * sr))), max(1, int(round(HOP_SECONDS * sr)))
    if y.size < frame:
        y = np.pad(y, (0, frame - y.size))
    count = 1 + (y.size - frame) // hop
    # Strided view: no copy of the signal, whatever its length.
    windows = np.lib.stride_tricks.as_strided(
        y, shape=(count, frame), strides=(hop * y.strides[0], y.strides[0])
    )
    power = np.mean(windows.astype(np.float64) ** 2, axis=1)
    return (10 * np.log10(np.maximum(power, 1e-12))).astype(np.float32)


def voice_activity(y: np.ndarray, sr: int) -> VoiceActivity:
    """Energy-based voice activity of mono audio ``y`` at ``sr`` Hz (see the module docstring)."""
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    levels = frame_levels_db(y, sr)
    noise_floor = float(np.percentile(levels, NOISE_PERCENTILE))
    voiced = (levels > ABSOLUTE_FLOOR_DB) & (levels > noise_floor + ABOVE_NOISE_DB)
    return VoiceActivity(
        voiced=voiced,
        seconds=float(voiced.sum() * HOP_SECONDS),
        duration=float(np.asarray(y).size / sr),
        noise_floor_db=noise_floor,
        peak_db=float(levels.max()),
    )


def require_speech(y: np.ndarray, sr: int, path: str | Path | None = None) -> VoiceActivity:
    """The clip's voice activity; raises :class:`NoSpeechError` naming the file when it has no speech."""
    activity = voice_activity(y, sr)
    if not activity.has_speech:
        where = f"{path}: " if path is not None else ""
        raise NoSpeechError(
            f"{where}no speech found ({activity.seconds:.1f} s of voice in {activity.duration:.1f} s; "
            f"at least {MIN_SPEECH_SECONDS} s needed)"
        )
    return activity


def clip_voice_activity(path: str | Path, sr: int = 16_000) -> VoiceActivity:
    """Voice activity of a clip's sound track; raises :class:`NoSpeechError` when it holds no speech.

    Reads at most :data:`mer_utils.audio.MAX_AUDIO_SECONDS` of audio (as every audio feature does).
    Raises ``FileNotFoundError`` / :class:`mer_utils.media.MediaError` for unreadable clips.
    """
    from mer_utils.audio import load_clip_audio

    return require_speech(load_clip_audio(path, sr), sr, path)
