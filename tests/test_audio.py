"""Tests of mer_utils.audio: loading, trimming, duration, noise, features, augmentation, cache, manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_utils import audio, audio_augment, media, utterance

SR = 16_000


def tone(seconds: float, freq: float = 220.0, sr: int = SR, amplitude: float = 0.5) -> np.ndarray:
    """A sine tone with a few harmonics (speech-like enough for MFCC and pitch)."""
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(amplitude / k * np.sin(2 * np.pi * k * freq * t) for k in range(1, 4))
    return (wave / 2).astype(np.float32)


def dominant_frequency(y: np.ndarray, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[spectrum.argmax()])


@pytest.fixture()
def clips(tmp_path) -> dict[str, Path]:
    """A 48 kHz wav, an 8 kHz wav, an mp4 with sound and a video-only mp4, RAVDESS-named."""
    folder = tmp_path / "Actor_01"
    frames = np.full((12, 32, 32, 3), 128, dtype=np.uint8)
    return {
        "wav48": media.write_wav(folder / "03-01-01-01-01-01-01.wav", tone(1.0, sr=48_000), 48_000),
        "wav8": media.write_wav(folder / "03-01-03-01-01-02-01.wav", tone(1.0, sr=8_000), 8_000),
        "mp4": media.write_mp4(folder / "01-01-05-01-02-01-01.mp4", frames, 12, tone(1.0), SR),
        "silent_video": media.write_mp4(folder / "02-01-04-01-02-02-01.mp4", frames, 12),
    }


def test_load_resamples_any_rate_and_container(clips):
    for key in ("wav48", "wav8", "mp4"):
        y = audio.load_clip_audio(clips[key], sr=SR)
        assert y.dtype == np.float32 and y.ndim == 1
        # One second of audio at 16 kHz (AAC adds up to ~2 frames of lead-in / padding).
        assert abs(len(y) - SR) < 2100, (key, len(y))
        assert abs(dominant_frequency(y[: SR // 2]) - 220) < 10


def test_load_video_only_and_missing_raise_clear_errors(clips, tmp_path):
    with pytest.raises(media.NoAudioStreamError, match="no audio"):
        audio.load_clip_audio(clips["silent_video"])
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        audio.load_clip_audio(tmp_path / "missing.wav")
    empty = tmp_path / "03-01-01-01-01-01-02.wav"
    empty.write_bytes(b"")
    with pytest.raises(media.MediaError, match="empty"):
        audio.load_clip_audio(empty)


def test_trim_silence_cuts_leading_and_trailing_silence():
    speech = tone(1.0)
    y = np.concatenate([np.zeros(SR // 2, np.float32), speech, np.zeros(SR, np.float32)])
    trimmed = audio.trim_silence(y, top_db=30)
    assert abs(len(trimmed) - len(speech)) < 0.1 * SR  # frame-level precision (1024-sample frames)
    assert len(trimmed) < 0.6 * len(y)
    # All-silent input comes back unchanged instead of empty.
    assert len(audio.trim_silence(np.zeros(SR, np.float32))) == SR


def test_fix_duration_centre_crop_and_symmetric_zero_pad():
    y = np.arange(10, dtype=np.float32) + 1
    cropped = audio.fix_duration(y, sr=2, seconds=3)  # 6 samples of 10: drop 2 at each end
    np.testing.assert_array_equal(cropped, [3, 4, 5, 6, 7, 8])
    padded = audio.fix_duration(y, sr=2, seconds=7)  # 14 samples: 2 zeros each side
    assert len(padded) == 14
    np.testing.assert_array_equal(padded[:2], 0)
    np.testing.assert_array_equal(padded[-2:], 0)
    np.testing.assert_array_equal(padded[2:12], y)
    odd = audio.fix_duration(y, sr=1, seconds=13)  # 3 missing: 1 left, 2 right
    assert odd[0] == 0 and odd[1] == 1 and odd[-3] == 10 and list(odd[-2:]) == [0, 0]
    with pytest.raises(ValueError, match="duration"):
        audio.fix_duration(y, sr=2, seconds=0)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_add_noise_reaches_the_requested_snr(snr_db):
    clean = tone(2.0)
    noisy = audio_augment.add_noise(clean, snr_db, np.random.default_rng(0))
    noise = noisy - clean
    measured = 10 * np.log10(np.mean(clean.astype(float) ** 2) / np.mean(noise.astype(float) ** 2))
    assert abs(measured - snr_db) < 0.3
    # The same seed gives the same noise; silence stays silent.
    np.testing.assert_array_equal(noisy, audio_augment.add_noise(clean, snr_db, np.random.default_rng(0)))
    assert not np.any(audio_augment.add_noise(np.zeros(100, np.float32), snr_db, 0))


def test_mfcc_and_log_mel_shapes():
    y = tone(2.5)
    features = audio.mfcc_features(y, SR, n_mfcc=40, deltas=True)
    frames = len(y) // audio.HOP_LENGTH + 1
    assert features.shape == (frames, 120) and features.dtype == np.float32
    assert audio.mfcc_features(y, SR, n_mfcc=13, deltas=False).shape == (frames, 13)
    mel = audio.log_mel_spectrogram(y, SR, n_mels=64, hop_length=256)
    assert mel.shape == (64, len(y) // 256 + 1)
    assert mel.max() == pytest.approx(0.0) and mel.min() >= -80.0
    assert np.all(audio.log_mel_spectrogram(np.zeros(SR, np.float32), SR) == -80.0)


def test_prosody_tracks_pitch_and_clip_mfcc_shape(clips):
    prosody = audio.prosody_features(tone(1.0, freq=200.0), SR)
    voiced = prosody[:, 0] > 0
    assert voiced.mean() > 0.8
    assert np.exp(np.median(prosody[voiced, 0])) == pytest.approx(200, rel=0.05)
    params = audio.MfccParams(duration=1.5)
    for key in ("wav48", "mp4"):
        assert audio.clip_mfcc(clips[key], params).shape == (params.num_frames, params.num_features)


def test_time_shift_pitch_shift_and_stretch():
    y = tone(1.0, freq=300.0)
    shifted = audio_augment.time_shift(y, 0.1, SR, np.random.default_rng(1))
    assert shifted.shape == y.shape and not np.array_equal(shifted, y)
    offset = int(np.argmax(np.correlate(shifted[4000:8000], y[2000:10000], "valid")))
    assert 0 <= offset <= 4000  # a real shift of at most 0.1 s in either direction
    up = audio_augment.pitch_shift(y, SR, 12)
    assert len(up) == len(y)
    assert dominant_frequency(up) == pytest.approx(600, rel=0.05)
    faster = audio_augment.time_stretch(y, 1.25)
    assert abs(len(faster) - len(y) / 1.25) < 0.02 * len(y)
    assert dominant_frequency(faster) == pytest.approx(300, rel=0.05)
    with pytest.raises(ValueError, match="rate"):
        audio_augment.time_stretch(y, 0)


def test_spec_augment_masks_bands_and_spans_only():
    spectrogram = np.random.default_rng(0).normal(size=(40, 100)).astype(np.float32) + 5
    masked = audio_augment.spec_augment(
        spectrogram, 3, freq_masks=1, max_freq_width=40, time_masks=1, max_time_width=100, fill=-1
    )
    assert masked.shape == spectrogram.shape
    changed = masked != spectrogram
    assert np.all(masked[changed] == -1)
    # Masks are whole rows / columns: every changed cell lies in a fully masked row or column.
    rows, cols = changed.all(axis=1), changed.all(axis=0)
    assert np.all(changed == (rows[:, None] | cols[None, :]))
    sequence = spectrogram.T  # (frames, features) layout
    masked_seq = audio_augment.spec_augment(
        sequence, 3, freq_masks=1, max_freq_width=40, time_masks=1, max_time_width=100, freq_axis=1, fill=-1
    )
    np.testing.assert_array_equal(masked_seq, masked.T)
    np.testing.assert_array_equal(spectrogram, sequence.T)  # input untouched


def test_augmentation_is_seeded_and_changes_audio():
    y = tone(1.0)
    augmentation = audio_augment.AudioAugmentation()
    first = augmentation.apply(y, SR, np.random.default_rng(5))
    again = augmentation.apply(y, SR, np.random.default_rng(5))
    other = augmentation.apply(y, SR, np.random.default_rng(6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_feature_cache_is_reused_and_keyed_by_parameters(clips, tmp_path):
    index = pd.DataFrame({"path": [str(clips["wav48"]), str(clips["mp4"])]})
    calls = []

    def featurize(path: str) -> np.ndarray:
        calls.append(path)
        return audio.mfcc_features(audio.fix_duration(audio.load_clip_audio(path), SR, 1.0), SR)

    cache = tmp_path / "cache"
    first = audio.extract_features(index, featurize, {"n": 1}, cache_dir=cache, progress=False)
    files = sorted(cache.glob("*.npy"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    second = audio.extract_features(index, featurize, {"n": 1}, cache_dir=cache, progress=False)
    assert len(calls) == 2 and len(files) == 2
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("*.npy"))] == mtimes
    np.testing.assert_array_equal(first.features, second.features)
    audio.extract_features(index, featurize, {"n": 2}, cache_dir=cache, progress=False)
    assert len(calls) == 4  # new parameters, new entries
    assert not list(cache.glob("*.tmp"))  # atomic writes leave no temporary files


def test_mfcc_batch_counts_cache_hits(clips, tmp_path):
    index = pd.DataFrame({"path": [str(clips["wav8"])]})
    params = audio.MfccParams(duration=1.0)
    audio.mfcc_batch(index, params, cache_dir=tmp_path, progress=False)
    hits, misses = audio.CACHE_STATS["hits"], audio.CACHE_STATS["misses"]
    audio.mfcc_batch(index, params, cache_dir=tmp_path, progress=False)
    assert (audio.CACHE_STATS["hits"], audio.CACHE_STATS["misses"]) == (hits + 1, misses)
    # Noise and augmentation make different features under different keys.
    noisy = audio.mfcc_batch(index, params, noise_snr_db=0, cache_dir=tmp_path, progress=False)
    assert audio.CACHE_STATS["misses"] == misses + 1
    clean = audio.mfcc_batch(index, params, cache_dir=tmp_path, progress=False)
    assert not np.allclose(noisy.features, clean.features)


def test_batch_reports_clips_without_audio_in_the_manifest(clips, tmp_path):
    paths = [clips["wav48"], clips["silent_video"], tmp_path / "gone.wav", clips["mp4"]]
    index = pd.DataFrame({"path": [str(p) for p in paths]})
    manifest = tmp_path / "failures.csv"
    batch = audio.mfcc_batch(
        index, audio.MfccParams(duration=1.0), cache_dir=tmp_path / "c", progress=False, manifest=manifest
    )
    assert batch.features.shape[0] == 2
    assert batch.rows["path"].tolist() == [str(clips["wav48"]), str(clips["mp4"])]
    written = pd.read_csv(manifest)
    assert written["path"].tolist() == [str(clips["silent_video"]), str(tmp_path / "gone.wav")]
    assert "no audio stream" in written["reason"].iloc[0]
    with pytest.raises(ValueError, match="no audio features"):
        audio.mfcc_batch(
            index.iloc[[1]], audio.MfccParams(duration=1.0), cache_dir=tmp_path / "c", progress=False
        )


def test_standardiser_and_per_speaker_normalisation():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 10, 3)).astype(np.float32)
    features[3:] = features[3:] * 4 + 10  # the second speaker is louder and shifted
    features[..., 2] = 7.0  # a constant feature must not divide by zero
    mean, std = audio.fit_standardiser(features[:3])
    assert std[2] == 1.0
    normalised = audio.normalise_per_speaker(features, ["a"] * 3 + ["b"] * 3)
    for rows in (slice(0, 3), slice(3, 6)):
        part = normalised[rows].reshape(-1, 3)
        np.testing.assert_allclose(part[:, :2].mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(part[:, :2].std(axis=0), 1, atol=1e-4)
    statistics = audio.speaker_statistics(features, ["a"] * 3 + ["b"] * 3)
    with pytest.raises(ValueError, match="speaker 'c'"):
        audio.normalise_per_speaker(features[:1], ["c"], statistics)
    with pytest.raises(ValueError, match="speaker ids"):
        audio.normalise_per_speaker(features, ["a"])


def test_utterance_features_describe_pitch_and_loudness(clips, tmp_path):
    low = utterance.utterance_features(tone(1.5, freq=140.0))
    high = utterance.utterance_features(tone(1.5, freq=280.0))
    quiet = utterance.utterance_features(tone(1.5, freq=140.0, amplitude=0.05))
    assert low.shape == high.shape and low.dtype == np.float32 and np.isfinite(low).all()
    assert not np.allclose(low, high) and not np.allclose(low, quiet)
    # A very short (padded) and a silent clip still give finite vectors of the same length.
    assert utterance.utterance_features(tone(0.05)).shape == low.shape
    assert np.isfinite(utterance.utterance_features(np.zeros(SR, np.float32))).all()
    index = pd.DataFrame({"path": [str(p) for p in clips.values()]})
    batch = utterance.utterance_batch(index, cache_dir=tmp_path / "cache", progress=False)
    assert batch.features.shape == (3, low.size)
    assert [Path(s["path"]).name for s in batch.skipped] == [clips["silent_video"].name]
    again = utterance.utterance_batch(index, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again.features, batch.features)
    noisy = utterance.utterance_batch(index, noise_snr_db=5.0, cache_dir=tmp_path / "cache", progress=False)
    assert not np.allclose(noisy.features, batch.features)


@pytest.mark.realdata
def test_real_ravdess_clip_features(real_audio_dir):
    path = sorted(real_audio_dir.glob("Actor_01/*.wav"))[0]
    params = audio.MfccParams()
    features = audio.clip_mfcc(path, params)
    assert features.shape == (params.num_frames, params.num_features)
    assert np.isfinite(features).all()
    vector = utterance.clip_utterance_features(path)
    assert vector.ndim == 1 and np.isfinite(vector).all()
