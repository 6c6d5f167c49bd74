"""eGeMAPS features (mer_utils.egemaps) and the `egemaps` / `whisper+egemaps` audio models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("opensmile")

from mer_utils import egemaps, media  # noqa: E402

SR = 16_000
# eGeMAPSv02 functionals: mean pitch in semitones from 27.5 Hz, mean loudness.
F0_MEAN, LOUDNESS_MEAN = 0, 10


def _voice(f0: float, amplitude: float, seconds: float = 0.6, seed: int = 0) -> np.ndarray:
    """A voiced-like sound: a harmonic series on ``f0`` with a slow vibrato, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    phase = 2 * np.pi * f0 * (t + 0.002 * np.sin(2 * np.pi * 5 * t))
    y = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (amplitude * y / np.abs(y).max() + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def test_egemaps_measures_pitch_and_loudness_of_a_voice():
    low = egemaps.egemaps_features(_voice(150, 0.3))
    assert low.shape == (egemaps.NUM_FEATURES,) and low.dtype == np.float32 and np.isfinite(low).all()
    # An octave up is 12 semitones up; three times the amplitude is clearly louder.
    octave = egemaps.egemaps_features(_voice(300, 0.3))
    assert octave[F0_MEAN] - low[F0_MEAN] == pytest.approx(12, abs=1.5)
    assert egemaps.egemaps_features(_voice(150, 0.9))[LOUDNESS_MEAN] > 1.5 * low[LOUDNESS_MEAN]


def test_unmeasurable_clips_get_a_clear_error_and_batches_skip_them(tmp_path):
    import soundfile

    with pytest.raises(ValueError, match=r"clip\.wav: 0\.050 s of audio is too short for eGeMAPS"):
        egemaps.egemaps_features(_voice(150, 0.3, seconds=0.05), name="clip.wav")
    with pytest.raises(ValueError, match="mono"):
        egemaps.egemaps_features(np.zeros((2, SR), np.float32))
    good = tmp_path / "good.wav"
    soundfile.write(good, _voice(200, 0.3), SR)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(media.MediaError, match="broken.wav"):
        egemaps.clip_egemaps(broken)
    batch = egemaps.egemaps_batch(
        pd.DataFrame({"path": [str(good), str(broken)]}), cache_dir=tmp_path / "cache", progress=False
    )
    assert batch.features.shape == (1, egemaps.NUM_FEATURES)
    assert [item["path"] for item in batch.skipped] == [str(broken)]
    # Cached under the clip and its parameters: a second pass reads the same vector back.
    again = egemaps.egemaps_batch(
        pd.DataFrame({"path": [str(good)]}), cache_dir=tmp_path / "cache", progress=False
    )
    np.testing.assert_array_equal(again.features, batch.features)
    assert len(list((tmp_path / "cache").glob("good-*.npy"))) == 1


def _corpus(root, speakers: int = 5, takes: int = 2) -> pd.DataFrame:
    """A manifest corpus whose angry clips are high and loud, its sad clips low and quiet, per speaker."""
    import soundfile

    rows = []
    for speaker in range(speakers):
        base = 110 + 25 * speaker
        for label, f0, amplitude in (("angry", 1.8 * base, 0.8), ("sad", base, 0.15)):
            for take in range(takes):
                path = root / f"s{speaker}_{label}_{take}.wav"
                soundfile.write(path, _voice(f0 * (1 + 0.03 * take), amplitude, seed=take), SR)
                rows.append({"path": path.name, "label": label, "speaker": f"s{speaker}"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_egemaps_model_trains_predicts_and_records_its_features(tmp_path, monkeypatch):
    from mer_utils.pipelines import base
    from mer_utils.runs import read_predictions

    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "corpus").mkdir()
    manifest = _corpus(tmp_path / "corpus")
    out = tmp_path / "run"
    metrics = base.train("audio", [manifest], out, seed=0, model="egemaps", smoke=True, progress=False)
    info = json.loads((out / "run.json").read_text())
    assert info["model"] == "egemaps" and info["feature_kind"] == "egemaps"
    assert (
        info["features"] == egemaps.EgemapsParams().to_dict() and info["num_features"] == egemaps.NUM_FEATURES
    )
    # Unseen speakers told apart (two classes, chance 0.5), and every training clip predicted out of fold.
    assert metrics["accuracy"] == 1.0
    oof, split = read_predictions(out, "oof"), metrics["split"]
    assert (
        oof["speaker"].nunique()
        == len(split["train"]) + len(split["val"])
        == len(metrics["out_of_fold"]["actors"])
    )
    assert (oof["pred_label"] == oof["true_label"]).mean() > 0.8
    # `mer evaluate`'s path reads the same vectors back from the cache and gives the same answers.
    table = base.predict_table(out, [manifest])
    test = read_predictions(out, "test")
    again = table.set_index("path").loc[test["path"], "pred_label"]
    assert again.tolist() == test["pred_label"].tolist()


@pytest.mark.realdata
def test_egemaps_run_answers_a_real_lone_clip(tmp_path, monkeypatch, real_audio_dir):
    from mer_utils.pipelines import base

    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "corpus").mkdir()
    out = tmp_path / "run"
    base.train(
        "audio", [_corpus(tmp_path / "corpus")], out, seed=0, model="egemaps", smoke=True, progress=False
    )
    # A real RAVDESS take under a new name: no other clip of its speaker, so the training speakers' average.
    clip = tmp_path / "lone.wav"
    clip.write_bytes((real_audio_dir / "Actor_01" / "03-01-05-02-01-01-01.wav").read_bytes())
    answer = base.predict_file(out, clip)
    assert answer["available"], answer["reason"]
    assert np.isclose(sum(answer["probabilities"]), 1, atol=1e-6)
    assert answer["details"]["normalisation"] == "speaker"


def test_whisper_and_egemaps_vectors_join_on_the_clips_both_read():
    from mer_utils.audio import FeatureBatch
    from mer_utils.pipelines.audio_vectors import _joined_batch

    rows = pd.DataFrame({"path": ["a.wav", "b.wav", "c.wav"], "emotion": ["sad", "angry", "sad"]})
    whisper = FeatureBatch(np.arange(6.0).reshape(3, 2), rows, [])
    # eGeMAPS could not read b.wav and lists the rest in another order: the join keeps a and c, aligned.
    measured = FeatureBatch(
        np.array([[30.0], [10.0]]),
        rows.iloc[[2, 0]].reset_index(drop=True),
        [{"path": "b.wav", "reason": "short"}],
    )
    joined = _joined_batch(whisper, measured)
    assert joined.rows["path"].tolist() == ["a.wav", "c.wav"]
    np.testing.assert_array_equal(joined.features, [[0.0, 1.0, 10.0], [4.0, 5.0, 30.0]])
    assert joined.skipped == [{"path": "b.wav", "reason": "short"}]


@pytest.mark.slow
def test_whisper_egemaps_model_records_both_features_and_refuses_another_encoder(tmp_path, monkeypatch):
    from mer_utils import whisper_encoder
    from mer_utils.pipelines import base
    from mer_utils.runs import read_predictions

    if not whisper_encoder.available():
        pytest.skip(f"Whisper encoder not installed: {whisper_encoder.INSTALL}")
    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "corpus").mkdir()
    manifest = _corpus(tmp_path / "corpus", speakers=5, takes=1)
    out = tmp_path / "run"
    settings = {"out_of_fold": False}
    base.train(
        "audio", [manifest], out, seed=0, model="whisper+egemaps", smoke=True, progress=False, **settings
    )
    info = json.loads((out / "run.json").read_text())
    assert info["feature_kind"] == "whisper+egemaps" and set(info["features"]) == {"whisper", "egemaps"}
    embedding = whisper_encoder.clip_embedding(tmp_path / "corpus" / "s0_sad_0.wav")
    assert info["num_features"] == embedding.size + egemaps.NUM_FEATURES
    test = read_predictions(out, "test")
    rescored = base.predict_table(out, [manifest]).set_index("path").loc[test["path"], "pred_label"]
    assert rescored.tolist() == test["pred_label"].tolist()
    info["features"]["whisper"]["encoder"] = "whisper-large:0123456789ab"
    (out / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="whisper-large"):
        base.predict_table(out, [manifest])
