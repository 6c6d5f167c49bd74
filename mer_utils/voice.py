"""Voice activity: does a clip hold speech, and where? The audio models read only clips that do.

Level alone cannot tell speech from noise: steady hiss after a second of digital silence rises far
above the clip's quietest frames, and so do beeps. So a frame counts as voice only with evidence of
a *speaking* voice near it. The clip is cut into frames every 10 ms and each frame gets

* its level (RMS of 30 ms, dB re full scale), as before: a voice frame is above an absolute floor
  (:data:`ABSOLUTE_FLOOR_DB`) and at least :data:`ABOVE_NOISE_DB` above the clip's noise floor
  (its 5th-percentile frame level), and
* its pitch: the YIN cumulative-mean-normalised difference function over 25 ms finds the first
  lag whose dip falls below :data:`PERIODICITY_THRESHOLD`. A frame is *voiced* when that period
  gives a pitch between :data:`PITCH_MIN_HZ` and :data:`PITCH_MAX_HZ`. Hiss, pink and brown noise
  have no such dip; a 1 kHz beep dips first at 1 ms (1 kHz, above the range); 50 / 60 Hz hum
  repeats every 20 / 16.7 ms (below it).
* Speaking voices glide: their pitch moves a little from one 10 ms frame to the next
  (:data:`PITCH_GLIDE`), while a held tone, a hum or a played note stays put and a melody jumps
  between steady notes. A voiced frame is *speech-like* when at least
  :data:`GLIDING_FRACTION` of the frame-to-frame pitch steps within +-100 ms glide.

A frame counts as voice when it is loud enough (first rule) and lies within
:data:`EVIDENCE_REACH_SECONDS` of a speech-like frame (so the consonants and breathy parts around
the voiced ones count too). A clip with less than :data:`MIN_SPEECH_SECONDS` of voice has "no
speech": at prediction time the audio and spectrogram models then report themselves unavailable
with the reason ("no speech found (0.2 s of voice ...)") instead of classifying padding or noise.
Whispered speech has no pitch and is not found. What the detector keeps and rejects is measured
by ``scripts/benchmark_voice.py`` (``results/voice.json``).

:func:`clip_voice_activity` reads the whole sound track in blocks (memory bounded, whatever the
clip's length) and :meth:`VoiceActivity.best_window` says where the voice is, so long clips give
the models the part that speaks (:func:`mer_utils.audio.load_clip_audio`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mer_utils.media import MediaError

# Analysis frames (s): a new frame every 10 ms; levels over 30 ms, pitch over 25 ms of integration.
FRAME_SECONDS = 0.030
HOP_SECONDS = 0.010
PITCH_WINDOW_SECONDS = 0.025
# Frames quieter than this (dB re full scale) are never voice: digital silence, faint hiss, dither.
# The quietest RAVDESS take (actor 09, sad, normal intensity) peaks at -50 dBFS and trails off
# near -65 dBFS.
ABSOLUTE_FLOOR_DB = -70.0
# A voice frame rises at least this far (dB) above the clip's noise floor (its 5th-percentile frame).
ABOVE_NOISE_DB = 6.0
NOISE_PERCENTILE = 5
# Pitch range of a speaking voice (Hz): 70 Hz covers low male voices; screamed and sobbing
# RAVDESS takes reach 700 Hz. Hum (50 / 60 Hz) lies below it, a 1 kHz beep above it.
PITCH_MIN_HZ = 70.0
PITCH_MAX_HZ = 800.0
# Shortest period searched (s): 1 ms. A pure tone dips at its own period first, so tones above
# PITCH_MAX_HZ are read as such and not as a voice an octave or more below.
SHORTEST_PERIOD_SECONDS = 0.001
# YIN threshold on the normalised difference: periodic frames dip below it, noise stays near 1
# (white, pink and brown noise stay above 0.58 in 99% of frames). 0.4 keeps the rough, breathy
# voices of sad takes and of CREMA-D's compressed sound, half of whose frames dip only to 0.35-0.55;
# at 0.45 a chord started to pass.
PERIODICITY_THRESHOLD = 0.4
# A gliding pitch step (natural log of the pitch ratio between consecutive 10 ms frames): more than
# 0.1% (a held synthetic note moves less) and less than 4% (a melody's jump between notes, a
# semitone or more, and octave errors are larger).
PITCH_GLIDE = (0.001, 0.04)
# Frames on either side (10 ms each) over which the gliding steps are counted, and the share of
# voiced steps there that must glide for a frame to be speech-like.
GLIDE_CONTEXT_FRAMES = 10
GLIDING_FRACTION = 0.3
# Loud frames this close (s) to a speech-like frame count as voice: the unvoiced consonants,
# breathy onsets and trailing syllables of the same words.
EVIDENCE_REACH_SECONDS = 0.4
# Less voice than this (s) is "no speech": half a second is about two syllables.
MIN_SPEECH_SECONDS = 0.5
# Samples analysed per block when a clip is streamed (s of audio): memory stays bounded.
STREAM_BLOCK_SECONDS = 30.0
# Frames whose pitch is computed at once (about 25 MB of FFT buffers at 16 kHz).
PITCH_BATCH_FRAMES = 500
# Voice activities of clips kept in memory (a long clip is analysed once per process, not once
# for the voice check and again for its best window).
ACTIVITY_CACHE_SIZE = 8


class NoSpeechError(MediaError):
    """The clip holds no speech (or too little): the audio models cannot say anything about it."""


@dataclass(frozen=True)
class VoiceActivity:
    """Voice frames of a clip: the mask per 10 ms frame, the voiced seconds and the levels used."""

    voiced: np.ndarray  # bool (frames,): voice frames
    seconds: float  # seconds of voice frames
    duration: float  # clip length (s)
    noise_floor_db: float
    peak_db: float
    pitched_seconds: float = 0.0  # seconds of speech-like (voiced, gliding) frames

    @property
    def has_speech(self) -> bool:
        """At least :data:`MIN_SPEECH_SECONDS` of voice."""
        return self.seconds >= MIN_SPEECH_SECONDS

    def first_voice_seconds(self) -> float:
        """Time (s) of the first voice frame (0 when there is none)."""
        hits = np.flatnonzero(self.voiced)
        return float(hits[0] * HOP_SECONDS) if hits.size else 0.0

    def segments(self) -> list[tuple[float, float]]:
        """The voice as (start, end) seconds, one pair per run of voice frames, in time order.

        Frame ``k`` covers ``[k, k + 1) x`` :data:`HOP_SECONDS`; ends are capped at the clip's length.
        """
        padded = np.concatenate([[False], np.asarray(self.voiced, dtype=bool), [False]])
        edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
        return [
            (round(float(first * HOP_SECONDS), 2), round(min(float(last * HOP_SECONDS), self.duration), 2))
            for first, last in zip(edges[::2], edges[1::2], strict=True)
        ]

    def best_window(self, seconds: float) -> float:
        """Start (s) of the ``seconds``-long window holding the most voice (the earliest on ties).

        0 when the clip is no longer than the window or holds no voice.
        """
        if seconds <= 0:
            raise ValueError(f"window length must be positive, got {seconds}")
        frames = max(1, int(round(seconds / HOP_SECONDS)))
        if self.duration <= seconds or not self.voiced.any() or self.voiced.size <= frames:
            return 0.0
        counts = np.concatenate([[0], np.cumsum(self.voiced, dtype=np.int64)])
        in_window = counts[frames:] - counts[:-frames]
        start = int(np.argmax(in_window)) * HOP_SECONDS
        return float(min(start, max(0.0, self.duration - seconds)))


def _frame_sizes(sr: int) -> tuple[int, int, int, int, int]:
    """(hop, level window, pitch window, shortest lag, longest lag) in samples at ``sr`` Hz."""
    hop = max(1, int(round(HOP_SECONDS * sr)))
    level = max(1, int(round(FRAME_SECONDS * sr)))
    window = max(2, int(round(PITCH_WINDOW_SECONDS * sr)))
    shortest = max(1, int(np.floor(SHORTEST_PERIOD_SECONDS * sr)))
    longest = int(np.ceil(sr / PITCH_MIN_HZ)) + 1
    return hop, level, window, shortest, longest


def frame_levels_db(y: np.ndarray, sr: int) -> np.ndarray:
    """RMS level in dB re full scale of every 30 ms frame (hop 10 ms); -120 for digital silence."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    hop, frame = _frame_sizes(sr)[:2]
    if y.size < frame:
        y = np.pad(y, (0, frame - y.size))
    count = 1 + (y.size - frame) // hop
    windows = np.lib.stride_tricks.as_strided(
        y, shape=(count, frame), strides=(hop * y.strides[0], y.strides[0])
    )
    power = np.mean(windows.astype(np.float64) ** 2, axis=1)
    return (10 * np.log10(np.maximum(power, 1e-12))).astype(np.float32)


def _frame_pitch(windows: np.ndarray, sr: int) -> np.ndarray:
    """YIN pitch (Hz) of each frame row, NaN where the frame is not periodic within the voice range."""
    _, _, window, shortest, longest = _frame_sizes(sr)
    count, length = windows.shape
    size = 1 << int(np.ceil(np.log2(length)))
    spectrum = np.fft.rfft(windows, size)
    head = np.fft.rfft(windows[:, :window], size)
    # Cross-correlation of the first `window` samples with the frame: sum_j x_j x_{j+lag}.
    correlation = np.fft.irfft(spectrum * np.conj(head), size)[:, : longest + 1]
    energy = np.cumsum(np.pad(windows**2, ((0, 0), (1, 0))), axis=1)
    shifted = energy[:, window : window + longest + 1] - energy[:, : longest + 1]
    difference = np.maximum(shifted[:, :1] + shifted - 2 * correlation, 0.0)
    running_mean = np.cumsum(difference[:, 1:], axis=1) / np.arange(1, longest + 1)
    normalised = difference[:, 1:] / np.maximum(running_mean, 1e-12)  # column k is lag k + 1
    lags = normalised[:, shortest - 1 : longest]  # lags shortest .. longest
    below = lags < PERIODICITY_THRESHOLD
    found = below.any(axis=1)
    index = np.argmax(below, axis=1)
    rows = np.arange(count)
    # From the first lag under the threshold, walk down to the bottom of its dip.
    for _ in range(lags.shape[1]):
        step = np.minimum(index + 1, lags.shape[1] - 1)
        lower = lags[rows, step] < lags[rows, index]
        if not lower.any():
            break
        index = np.where(lower, step, index)
    inner = np.clip(index, 1, lags.shape[1] - 2)
    left, mid, right = lags[rows, inner - 1], lags[rows, inner], lags[rows, inner + 1]
    curvature = left - 2 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(np.abs(curvature) > 1e-12, 0.5 * (left - right) / curvature, 0.0)
    period = inner + shortest + np.clip(offset, -1, 1)
    pitch = sr / period
    ok = found & (pitch >= PITCH_MIN_HZ) & (pitch <= PITCH_MAX_HZ)
    return np.where(ok, pitch, np.nan).astype(np.float32)


class FrameAnalyser:
    """Levels and pitch of 10 ms frames of a stream of samples, fed in blocks of any size."""

    def __init__(self, sr: int):
        if sr <= 0:
            raise ValueError(f"sample rate must be positive, got {sr}")
        self.sr = sr
        self.hop, self.level_size, window, _, longest = _frame_sizes(sr)
        self.frame = max(self.level_size, window + longest)
        self._pending = np.zeros(0, np.float64)
        self._levels: list[np.ndarray] = []
        self._pitch: list[np.ndarray] = []
        self.samples = 0

    def feed(self, samples: np.ndarray) -> None:
        """Analyse every complete frame of the samples so far; keep the rest for the next block."""
        samples = np.asarray(samples, dtype=np.float64).reshape(-1)
        self.samples += samples.size
        self._pending = np.concatenate([self._pending, samples])
        if self._pending.size < self.frame:
            return
        count = 1 + (self._pending.size - self.frame) // self.hop
        self._analyse(self._pending[: (count - 1) * self.hop + self.frame], count)
        self._pending = self._pending[count * self.hop :]

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Levels (dB) and pitch (Hz, NaN = unvoiced) of all frames; a clip shorter than a frame is padded."""
        if not self._levels:
            padded = np.pad(self._pending, (0, max(0, self.frame - self._pending.size)))
            self._analyse(padded[: self.frame], 1)
        self._pending = np.zeros(0, np.float64)
        return np.concatenate(self._levels), np.concatenate(self._pitch)

    def _analyse(self, block: np.ndarray, count: int) -> None:
        windows = np.lib.stride_tricks.as_strided(
            block, shape=(count, self.frame), strides=(self.hop * block.strides[0], block.strides[0])
        )
        power = np.mean(windows[:, : self.level_size] ** 2, axis=1)
        self._levels.append((10 * np.log10(np.maximum(power, 1e-12))).astype(np.float32))
        # In batches: the FFTs of a 30 s block at once would take about 150 MB.
        self._pitch.extend(
            _frame_pitch(windows[start : start + PITCH_BATCH_FRAMES], self.sr)
            for start in range(0, count, PITCH_BATCH_FRAMES)
        )


def _moving_sum(values: np.ndarray, half: int) -> np.ndarray:
    """Sum of ``values`` over each element's window of +-``half`` elements (cut at the ends)."""
    sums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    index = np.arange(values.size)
    return sums[np.minimum(index + half + 1, values.size)] - sums[np.maximum(index - half, 0)]


def _gliding(pitch: np.ndarray) -> np.ndarray:
    """Voiced frames whose pitch glides as a speaking voice does (see the module docstring)."""
    steps = np.abs(np.diff(np.log(pitch.astype(np.float64))))  # NaN next to unvoiced frames
    valid = np.concatenate([[False], np.isfinite(steps)])
    with np.errstate(invalid="ignore"):
        glide = np.concatenate([[False], (steps > PITCH_GLIDE[0]) & (steps < PITCH_GLIDE[1])])
    share = _moving_sum(glide, GLIDE_CONTEXT_FRAMES) / np.maximum(_moving_sum(valid, GLIDE_CONTEXT_FRAMES), 1)
    return np.isfinite(pitch) & (share >= GLIDING_FRACTION)


def activity_from_frames(levels: np.ndarray, pitch: np.ndarray, duration: float) -> VoiceActivity:
    """The voice activity of a clip from its frame levels (dB) and pitch (Hz, NaN = unvoiced)."""
    levels = np.asarray(levels, dtype=np.float32)
    count = min(levels.size, np.asarray(pitch).size)
    levels, pitch = levels[:count], np.asarray(pitch, dtype=np.float32)[:count]
    noise_floor = float(np.percentile(levels, NOISE_PERCENTILE))
    loud = (levels > ABSOLUTE_FLOOR_DB) & (levels > noise_floor + ABOVE_NOISE_DB)
    evidence = _gliding(pitch) & (levels > ABSOLUTE_FLOOR_DB)
    reach = int(round(EVIDENCE_REACH_SECONDS / HOP_SECONDS))
    near = _moving_sum(evidence, reach) > 0.5
    voiced = loud & near
    return VoiceActivity(
        voiced=voiced,
        seconds=float(voiced.sum() * HOP_SECONDS),
        duration=float(duration),
        noise_floor_db=noise_floor,
        peak_db=float(levels.max()),
        pitched_seconds=float(evidence.sum() * HOP_SECONDS),
    )


def voice_activity(y: np.ndarray, sr: int) -> VoiceActivity:
    """Voice activity of mono audio ``y`` at ``sr`` Hz (see the module docstring)."""
    analyser = FrameAnalyser(sr)
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    # In blocks: the FFTs of a long array would otherwise take memory in proportion to its length.
    block = int(STREAM_BLOCK_SECONDS * sr)
    for start in range(0, max(y.size, 1), block):
        analyser.feed(y[start : start + block])
    levels, pitch = analyser.finish()
    return activity_from_frames(levels, pitch, y.size / sr)


def require_speech(y: np.ndarray, sr: int, path: str | Path | None = None) -> VoiceActivity:
    """The clip's voice activity; raises :class:`NoSpeechError` naming the file when it has no speech."""
    return _checked(voice_activity(y, sr), path)


def _checked(activity: VoiceActivity, path: str | Path | None) -> VoiceActivity:
    if not activity.has_speech:
        where = f"{path}: " if path is not None else ""
        raise NoSpeechError(
            f"{where}no speech found ({activity.seconds:.1f} s of voice in {activity.duration:.1f} s; "
            f"at least {MIN_SPEECH_SECONDS} s needed)"
        )
    return activity


_ACTIVITY_CACHE: OrderedDict[tuple, VoiceActivity] = OrderedDict()


def stream_voice_activity(path: str | Path, sr: int = 16_000) -> VoiceActivity:
    """Voice activity of a clip's whole sound track, read in blocks (memory bounded at any length).

    Raises ``FileNotFoundError`` / :class:`mer_utils.media.MediaError` for unreadable clips.
    Results are kept for the last few clips (keyed by path, size, modification time and rate).
    """
    from mer_utils import media

    path = Path(path)
    try:
        stat = os.stat(path)
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, sr)
    except OSError:
        key = None
    if key is not None and key in _ACTIVITY_CACHE:
        _ACTIVITY_CACHE.move_to_end(key)
        return _ACTIVITY_CACHE[key]
    analyser = FrameAnalyser(sr)
    for block in media.iter_audio(path, sr, block_seconds=STREAM_BLOCK_SECONDS):
        if not np.isfinite(block).all():
            raise MediaError(f"{path}: audio stream is empty or holds non-finite samples")
        analyser.feed(block)
    if analyser.samples == 0:
        raise MediaError(f"{path}: audio stream holds no samples")
    duration = analyser.samples / sr
    levels, pitch = analyser.finish()
    activity = activity_from_frames(levels, pitch, duration)
    if key is not None:
        _ACTIVITY_CACHE[key] = activity
        while len(_ACTIVITY_CACHE) > ACTIVITY_CACHE_SIZE:
            _ACTIVITY_CACHE.popitem(last=False)
    return activity


def clip_voice_activity(path: str | Path, sr: int = 16_000) -> VoiceActivity:
    """Voice activity of a clip's whole sound track; raises :class:`NoSpeechError` when it holds no speech.

    The whole clip is read, streamed (see :func:`stream_voice_activity`): a 10-minute recording
    that speaks from minute 3 on has speech. Raises ``FileNotFoundError`` /
    :class:`mer_utils.media.MediaError` for unreadable clips.
    """
    return _checked(stream_voice_activity(path, sr), path)
