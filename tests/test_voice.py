"""Voice activity: speech is found, noise, hum, tones, beeps and music are not; long clips are read whole."""

from __future__ import annotations

import numpy as np
import pytest

from mer_utils import audio, media, voice
from mer_utils.audio_augment import coloured_noise

SR = 16_000


def _seconds(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SR)) / SR


def _voice(seconds: float, level: float = 0.2, base: float = 140.0, seed: int = 0) -> np.ndarray:
    """A synthetic voice: harmonics of a pitch that glides and drifts, in syllables of 0.2-0.35 s."""
    rng = np.random.default_rng(seed)
    t = _seconds(seconds)
    drift = np.cumsum(rng.standard_normal(t.size)) / np.sqrt(t.size) * 0.05
    pitch = base * (1 + 0.12 * np.sin(2 * np.pi * 1.7 * t) + drift)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    source = sum(np.sin(k * phase) * 0.8**k for k in range(1, 9))
    syllable = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 0.5  # 3.5 syllables a second
    return (level * source * syllable / 2).astype(np.float32)


def _noise(colour: str, seconds: float, level: float = 0.05, seed: int = 1) -> np.ndarray:
    return level * coloured_noise(colour, seconds, SR, seed)


def _harmonics(frequency: float, t: np.ndarray, count: int = 5) -> np.ndarray:
    return sum(np.sin(2 * np.pi * k * frequency * t) / k for k in range(1, count + 1))


def test_a_gliding_voice_is_speech_and_its_seconds_are_counted():
    y = np.concatenate([np.zeros(SR // 2, np.float32), _voice(2.0), np.zeros(SR // 2, np.float32)])
    activity = voice.voice_activity(y, SR)
    assert activity.has_speech
    # The voice fills about 2 s minus the gaps between syllables; the silences around it never count.
    assert 1.0 < activity.seconds <= 2.1
    assert activity.pitched_seconds > 0.5
    assert not activity.voiced[:40].any() and not activity.voiced[-40:].any()
    assert 0.4 <= activity.first_voice_seconds() <= 0.7


def test_speech_in_steady_hiss_is_still_speech():
    y = _voice(3.0, level=0.2) + _noise("white", 3.0, level=0.02)
    assert voice.voice_activity(y, SR).has_speech


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
def test_hiss_after_digital_silence_is_not_speech(colour):
    # The old level detector took the silence as the noise floor and called 2 s of hiss 2 s of voice.
    y = np.concatenate([np.zeros(SR, np.float32), _noise(colour, 2.0, level=0.1)])
    activity = voice.voice_activity(y, SR)
    assert not activity.has_speech and activity.seconds < 0.1, activity.seconds
    with pytest.raises(voice.NoSpeechError, match=r"hiss.wav: no speech found \(0\.\d s of voice in 3\.0 s"):
        voice.require_speech(y, SR, "hiss.wav")


def test_tones_beeps_hum_and_music_are_not_speech():
    t = _seconds(3.0)
    signals = {
        "1 kHz beeps": 0.3 * np.sin(2 * np.pi * 1000 * t) * ((t % 0.5) < 0.25),
        "steady 200 Hz tone": 0.3 * np.sin(2 * np.pi * 200 * t),
        "50 Hz hum": 0.2 * _harmonics(50, t, 8),
        "60 Hz hum with hiss": 0.2 * _harmonics(60, t, 8) + _noise("white", 3.0, 0.01),
        "C major chord": 0.1 * sum(_harmonics(f, t) for f in (261.6, 329.6, 392.0)),
        "a melody of held notes": np.concatenate(
            [0.2 * _harmonics(f, _seconds(0.375)) for f in (262, 294, 330, 349, 392, 440, 494, 523)]
        ),
        "digital silence": np.zeros(t.size),
    }
    for name, y in signals.items():
        activity = voice.voice_activity(y.astype(np.float32), SR)
        assert not activity.has_speech, (name, activity.seconds)


def test_a_clip_shorter_than_a_frame_and_bad_rates():
    assert not voice.voice_activity(np.zeros(10, np.float32), SR).has_speech
    with pytest.raises(ValueError, match="sample rate"):
        voice.voice_activity(np.zeros(100, np.float32), 0)
    # Any rate works: the same voice at 8 kHz and 48 kHz is speech.
    for rate in (8_000, 48_000):
        resampled = np.interp(np.arange(int(2.0 * rate)) / rate, _seconds(2.0), _voice(2.0))
        assert voice.voice_activity(resampled, rate).has_speech, rate


def test_segments_are_the_runs_of_voice_frames_in_seconds():
    y = np.concatenate([np.zeros(SR, np.float32), _voice(1.5), np.zeros(SR, np.float32), _voice(1.0, seed=2)])
    activity = voice.voice_activity(y, SR)
    segments = activity.segments()
    assert segments and all(start < end for start, end in segments)
    assert all(a[1] < b[0] for a, b in zip(segments, segments[1:], strict=False))  # in order, apart
    assert sum(end - start for start, end in segments) == pytest.approx(activity.seconds, abs=1e-6)
    # Nothing in the silences (the first second, 2.5-3.5 s) beyond a frame's reach.
    assert segments[0][0] >= 0.95 and segments[-1][1] <= 4.5 + 1e-6
    assert not [s for s in segments if s[0] < 3.4 and s[1] > 2.6]
    assert voice.voice_activity(np.zeros(SR, np.float32), SR).segments() == []


def test_best_window_is_where_the_voice_is():
    y = np.concatenate([_noise("white", 20.0, 0.001), _voice(3.0), _noise("white", 10.0, 0.001)])
    activity = voice.voice_activity(y, SR)
    start = activity.best_window(5.0)
    assert 17.5 <= start <= 20.5  # the 5 s window holds the 3 s of voice
    assert activity.best_window(60.0) == 0.0  # the clip is shorter than the window
    with pytest.raises(ValueError, match="positive"):
        activity.best_window(0)


def test_a_long_clip_that_speaks_from_150_s_is_found_and_its_voice_is_read(tmp_path):
    # 150 s of room tone, then 4 s of voice: reading only the first 120 s found "no speech".
    y = np.concatenate([_noise("pink", 150.0, 0.002), _voice(4.0), _noise("pink", 6.0, 0.002)])
    clip = media.write_wav(tmp_path / "interview.wav", y, SR)
    activity = voice.clip_voice_activity(clip, SR)
    assert activity.has_speech and activity.duration == pytest.approx(160.0, abs=0.1)
    assert 149.5 <= activity.first_voice_seconds() <= 151.0
    # Streamed in blocks, the answer is the one of the whole array in memory.
    whole = voice.voice_activity(media.read_audio(clip, SR), SR)
    assert abs(whole.seconds - activity.seconds) <= 0.05
    window = audio.load_clip_audio(clip, SR)
    assert window.size == int(audio.MAX_AUDIO_SECONDS * SR)
    assert voice.voice_activity(window, SR).has_speech  # the models get the part that speaks
    short = audio.load_clip_audio(clip, SR, max_seconds=10.0)
    assert short.size == 10 * SR and voice.voice_activity(short, SR).seconds > 1.0


def test_a_long_clip_of_noise_says_how_long_it_listened(tmp_path):
    clip = media.write_wav(tmp_path / "fan.wav", _noise("brown", 130.0, 0.05), SR)
    with pytest.raises(voice.NoSpeechError, match=r"fan.wav: no speech found \(0\.0 s of voice in 130\.0 s"):
        voice.clip_voice_activity(clip, SR)


def test_benchmark_voice_records_speech_kept_and_non_speech_rejected(tmp_path, monkeypatch):
    """scripts/benchmark_voice.py on a tiny corpus: the speech row and one row per kind of non-speech."""
    import importlib.util
    import json

    from mer_utils.config import PACKAGE_PARENT

    spec = importlib.util.spec_from_file_location(
        "benchmark_voice", PACKAGE_PARENT / "scripts" / "benchmark_voice.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "VARIANTS_PER_KIND", 2)
    monkeypatch.setattr(script, "SIGNAL_SECONDS", 2.0)
    monkeypatch.setenv("MER_RESULTS_DIR", str(tmp_path / "results"))
    corpus = tmp_path / "data" / "ravdess_speech_16k" / "Actor_01"
    for i in range(2):
        media.write_wav(corpus / f"03-01-0{i + 1}-01-01-01-01.wav", _voice(2.5, seed=i), SR)
    script.main(["--data", str(tmp_path / "data"), "--results", "voice"])
    record = json.loads((tmp_path / "results" / "voice.json").read_text())
    rows = {row["key"]: row for row in record["metrics"]}
    speech = rows["speech: ravdess_speech_16k"]["values"]
    assert speech["clips"] == 2 and speech["counted as speech"] == 1.0
    kinds = [key for key in rows if key.startswith("non-speech: ")]
    assert len(kinds) == len(script.non_speech_signals()) >= 10
    for key in kinds:
        if "vibrato" not in key:  # sung notes may pass; the others never should
            assert rows[key]["values"]["rejected as no speech"] == 1.0, key
    assert record["command"].startswith("python scripts/benchmark_voice.py --data")
