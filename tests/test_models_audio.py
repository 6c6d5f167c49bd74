"""Tests of the MFCC models (mer_utils.models.audio) and the audio pipeline (train / evaluate / predict)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_utils import media
from mer_utils.models.audio import BUILDERS, attention_model, build_model
from mer_utils.pipelines import base

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Keep the feature cache of each test in its own folder (never the project's .cache)."""
    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_each_builder_maps_sequences_to_class_probabilities(name):
    model = build_model(name, (40, 12), 8, width=8)
    assert model.output_shape == (None, 8)
    probabilities = model.predict(
        np.random.default_rng(0).normal(size=(3, 40, 12)).astype("float32"), verbose=0
    )
    assert probabilities.shape == (3, 8)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_statistics_pooling_model_saves_and_loads(tmp_path):
    import keras

    from mer_utils.models.audio import register_custom_layers

    model = build_model("stats", (30, 4), 3, width=8)
    x = np.random.default_rng(1).normal(size=(4, 30, 4)).astype("float32")
    pooled = keras.Model(model.inputs, model.get_layer("statistics_pooling").output).predict(x, verbose=0)
    np.testing.assert_allclose(pooled[:, :4], x.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(pooled[:, 4:], x.std(axis=1), atol=1e-3)
    model.save(tmp_path / "stats.keras")
    register_custom_layers()
    reloaded = keras.models.load_model(tmp_path / "stats.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_build_model_rejects_bad_requests():
    with pytest.raises(ValueError, match="unknown audio model 'gru'"):
        build_model("gru", (40, 12), 8)
    with pytest.raises(ValueError, match="frames, features"):
        build_model("cnn", (40,), 8)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_model("lstm", (40, 12), 1)


def test_attention_weights_are_a_distribution_over_time():
    model = build_model("attention", (40, 6), 3, width=8)
    weights = attention_model(model).predict(np.ones((2, 40, 6), "float32"), verbose=0)
    assert weights.shape == (2, 10)  # frames are averaged in fours before the BiLSTM
    np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="no attention layer"):
        attention_model(build_model("cnn", (40, 6), 3, width=8))


def test_seed_ensemble_averages_members_and_survives_saving(tmp_path):
    import keras

    from mer_utils.pipelines.audio import _ensemble

    members = [build_model("cnn", (40, 6), 4, width=8) for _ in range(2)]
    ensemble = _ensemble(members)
    x = np.random.default_rng(0).normal(size=(5, 40, 6)).astype("float32")
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, atol=1e-5)
    ensemble.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-5)


def separable_sequences(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of noisy sequences: class k raises feature k during a random third of the clip."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = rng.normal(size=(n, 30, 6)).astype("float32")
    for i, label in enumerate(y):
        start = rng.integers(0, 20)
        x[i, start : start + 10, label] += 2.5
    return x, y


@pytest.mark.parametrize("name", ["cnn", "attention"])
def test_tiny_model_learns_a_separable_problem(name):
    from mer_utils.config import set_seed
    from mer_utils.training import fit_classifier, predict_probabilities

    set_seed(0)
    x, y = separable_sequences(240, 0)
    x_test, y_test = separable_sequences(90, 1)
    model = build_model(name, x.shape[1:], 3, width=16)
    fit_classifier(
        model, x, y, x_test[:30], y_test[:30], epochs=25, batch_size=16, learning_rate=3e-3, patience=8
    )
    accuracy = (predict_probabilities(model, x_test[30:]).argmax(axis=1) == y_test[30:]).mean()
    assert accuracy > 0.8, f"{name} reached only {accuracy:.2f} on a separable problem (chance 0.33)"


@pytest.fixture(scope="module")
def trained_run(demo_dir, tmp_path_factory) -> tuple[Path, dict]:
    """A smoke-mode CNN run on the 4-actor demo set (split 2 / 1 / 1 actors)."""
    out = tmp_path_factory.mktemp("audio_run")
    cache = tmp_path_factory.mktemp("audio_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MER_CACHE_DIR", str(cache))
        metrics = base.train(
            "audio", demo_dir, out, seed=3, smoke=True, model="cnn", epochs=5, progress=False
        )
    return out, metrics


def test_train_writes_the_run_folder(trained_run):
    from mer_utils.runs import read_predictions, read_run_info

    out, metrics = trained_run
    for name in (
        "model.keras",
        "run.json",
        "metrics.json",
        "predictions_val.csv",
        "predictions_test.csv",
        "normalisation.npz",
    ):
        assert (out / name).is_file(), name
    info = read_run_info(out)
    assert info["branch"] == "audio" and info["model"] == "cnn" and len(info["labels"]) == 8
    assert info["features"]["n_mfcc"] == 40 and info["features"]["deltas"] is True
    split = metrics["split"]
    assert len(split["train"]) == 2 and len(split["val"]) == 1 and len(split["test"]) == 1
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    test = read_predictions(out, "test")
    assert len(test) == metrics["n"] == 30
    # clip_id is the take id (file name without its modality field) so fusion aligns branches.
    assert all(len(c.split("-")) == 6 for c in test["clip_id"])
    for key in (
        "accuracy",
        "macro_f1",
        "weighted_f1",
        "macro_precision",
        "macro_recall",
        "per_class",
        "val",
        "skipped",
        "seed",
    ):
        assert key in metrics, key
    # The metrics are those of the saved test predictions (learning itself is tested on separable data).
    assert metrics["accuracy"] == pytest.approx((test["pred_label"] == test["true_label"]).mean())
    assert metrics["params"] > 0 and metrics["train_seconds"] > 0


def test_evaluate_scores_another_folder_and_reports_bad_files(trained_run, demo_dir, tmp_path):
    out, _ = trained_run
    folder = tmp_path / "other" / "Actor_04"
    clips = sorted((demo_dir / "Actor_04").glob("*.mp4"))[:6]
    folder.mkdir(parents=True)
    for clip in clips:
        shutil.copy(clip, folder / clip.name)
    frames = np.full((6, 32, 32, 3), 100, dtype=np.uint8)
    media.write_mp4(folder / "02-01-03-01-01-01-04.mp4", frames, 12)  # video-only: no audio
    (folder / "not-a-ravdess-name.wav").write_bytes(b"RIFF")
    metrics = base.evaluate(out, tmp_path / "other")
    assert metrics["n"] == 6 and 0 <= metrics["accuracy"] <= 1
    reasons = {Path(s["path"]).name: s["reason"] for s in metrics["skipped"]}
    assert "no audio" in reasons["02-01-03-01-01-01-04.mp4"]
    assert "RAVDESS scheme" in reasons["not-a-ravdess-name.wav"]


def test_predict_table_with_noise_and_predict_file(trained_run, demo_dir):
    from mer_utils.evaluation import probabilities_of
    from mer_utils.ravdess import index_dataset

    out, metrics = trained_run
    index = index_dataset(demo_dir)
    test_rows = index[index["actor"].isin(metrics["split"]["test"])]
    model = base.load_model(out)
    clean = base.predict_table(out, test_rows, model=model)
    noisy = base.predict_table(out, test_rows, degradation=("noise", 0.0), model=model)
    assert list(clean["clip_id"]) == list(noisy["clip_id"])
    assert not np.allclose(probabilities_of(clean), probabilities_of(noisy))
    result = base.predict_file(out, test_rows["path"].iloc[0], model=model)
    assert result["available"] and len(result["probabilities"]) == 8
    assert result["details"]["speaker_reference_clips"] > 1
    assert np.isclose(sum(result["probabilities"]), 1, atol=1e-4)


def test_predict_file_without_audio_is_unavailable_not_a_crash(trained_run, tmp_path):
    out, _ = trained_run
    silent = media.write_mp4(tmp_path / "02-01-05-01-01-01-09.mp4", np.zeros((6, 32, 32, 3), np.uint8), 12)
    result = base.predict_file(out, silent)
    assert result["available"] is False and "no audio" in result["reason"]
    assert base.predict_file(out, tmp_path / "missing.wav")["available"] is False


@pytest.mark.parametrize("name", ["logreg", "svm", "whisper"])
def test_sklearn_models_train_evaluate_and_predict(name, demo_dir, tmp_path):
    from mer_utils import whisper_encoder
    from mer_utils.evaluation import probabilities_of
    from mer_utils.pipelines.audio_vectors import FEATURE_KINDS
    from mer_utils.ravdess import index_dataset
    from mer_utils.runs import read_predictions, read_run_info

    if name == "whisper" and not whisper_encoder.available():
        pytest.skip(f"Whisper encoder not installed: {whisper_encoder.INSTALL}")
    out = tmp_path / name
    metrics = base.train("audio", demo_dir, out, seed=3, model=name, smoke=True, progress=False)
    info = read_run_info(out)
    assert (out / "model.skops").is_file() and not (out / "model.keras").exists()
    assert info["model"] == name and info["feature_kind"] == FEATURE_KINDS[name]
    assert info["settings"]["normalisation"] == "speaker" and info["settings"]["test_actors"] is None
    for key in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class", "n", "split", "val"):
        assert key in metrics, key
    test = read_predictions(out, "test")
    assert metrics["accuracy"] == pytest.approx((test["pred_label"] == test["true_label"]).mean())
    index = index_dataset(demo_dir)
    # It learned: the training actors are well fitted and the unseen actor is above chance (1/8).
    train_rows = index[index["actor"].isin(metrics["split"]["train"])]
    fitted = base.predict_table(out, train_rows)
    assert (fitted["pred_label"] == fitted["true_label"]).mean() > 0.6
    assert metrics["accuracy"] > 0.2
    test_rows = index[index["actor"].isin(metrics["split"]["test"])]
    model = base.load_model(out)
    rescored = base.predict_table(out, test_rows, model=model)
    np.testing.assert_allclose(probabilities_of(rescored), probabilities_of(test), atol=1e-6)
    noisy = base.predict_table(out, test_rows, degradation=("noise", 0.0), model=model)
    assert not np.allclose(probabilities_of(noisy), probabilities_of(rescored))
    assert base.evaluate(out, demo_dir)["n"] == len(index_dataset(demo_dir).drop_duplicates("take"))
    result = base.predict_file(out, test_rows["path"].iloc[0], model=model)
    assert result["available"] and result["details"]["speaker_reference_clips"] > 1
    assert np.isclose(sum(result["probabilities"]), 1, atol=1e-6)
    assert base.predict_file(out, tmp_path / "missing.wav")["available"] is False


def test_whisper_run_refuses_another_encoder(demo_dir, tmp_path, monkeypatch):
    import json

    from mer_utils import whisper_encoder
    from mer_utils.runs import read_predictions

    if not whisper_encoder.available():
        pytest.skip(f"Whisper encoder not installed: {whisper_encoder.INSTALL}")
    out = tmp_path / "whisper"
    metrics = base.train("audio", demo_dir, out, seed=1, model="whisper", smoke=True, progress=False)
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["features"]["encoder"] == whisper_encoder.model_identity()
    run_json["features"]["encoder"] = "whisper-large:0123456789ab"
    (out / "run.json").write_text(json.dumps(run_json))
    clip = read_predictions(out, "test")["path"].iloc[0]
    with pytest.raises(ValueError, match="whisper-large"):
        base.predict_file(out, clip)
    assert metrics["n"] > 0


def test_audio_settings_are_checked_and_overridden_field_by_field():
    from mer_utils.pipelines import audio as pipeline

    smoke = base.settings_for("audio", smoke=True)
    assert smoke is pipeline.SMOKE and smoke.epochs < pipeline.FULL.epochs
    chosen = base.settings_for("audio", test_actors=[4, 1], val_actors=[2], ensemble_size=3)
    # Lists become tuples (frozen settings); the other fields keep the full run's values.
    assert chosen.test_actors == (4, 1) and chosen.val_actors == (2,) and chosen.ensemble_size == 3
    assert chosen.epochs == pipeline.FULL.epochs and chosen.normalisation == "speaker"
    with pytest.raises(ValueError, match="unknown normalisation 'per-clip'"):
        pipeline.AudioSettings(normalisation="per-clip")
    with pytest.raises(ValueError, match="'augmented_copies' = -1"):
        base.settings_for("audio", augmented_copies=-1)


def test_train_rejects_bad_requests(demo_dir, tmp_path):
    with pytest.raises(ValueError, match="normalisation"):
        base.train("audio", demo_dir, tmp_path / "r", normalisation="per-clip", progress=False)
    with pytest.raises(ValueError, match="unknown audio model 'gru'"):
        base.train("audio", demo_dir, tmp_path / "r", model="gru", progress=False)
    with pytest.raises(ValueError, match="unknown audio settings"):
        base.train("audio", demo_dir, tmp_path / "r", epoch=3, progress=False)
    with pytest.raises(FileNotFoundError):
        base.train("audio", tmp_path / "nowhere", tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="not an audio run"):
        (tmp_path / "text_run").mkdir()
        (tmp_path / "text_run" / "run.json").write_text('{"branch": "text", "labels": ["joy", "fear"]}')
        base.predict_table(tmp_path / "text_run", pd.DataFrame(), branch="audio")


def test_combine_runs_averages_members_and_refuses_mismatched_runs(trained_run, tmp_path):
    import json

    from mer_utils.evaluation import probabilities_of
    from mer_utils.pipelines import audio as pipeline
    from mer_utils.runs import read_predictions, read_run_info

    out, metrics = trained_run
    twin = tmp_path / "twin"
    shutil.copytree(out, twin)
    combined = pipeline.combine_runs([out, twin], tmp_path / "ensemble")
    info = read_run_info(tmp_path / "ensemble")
    assert info["model"] == "ensemble" and info["members"] == ["cnn", "cnn"]
    assert combined["accuracy"] == pytest.approx(metrics["accuracy"])
    table = read_predictions(tmp_path / "ensemble", "test")
    # The saved averaged model reproduces the averaged probabilities.
    rescored = base.predict_table(tmp_path / "ensemble", read_predictions(out, "test").pipe(_as_index))
    np.testing.assert_allclose(probabilities_of(rescored), probabilities_of(table), atol=1e-4)
    run_json = json.loads((twin / "run.json").read_text())
    run_json["split"]["test"] = [99]
    (twin / "run.json").write_text(json.dumps(run_json))
    with pytest.raises(ValueError, match="split differs"):
        pipeline.combine_runs([out, twin], tmp_path / "bad")


def _as_index(predictions: pd.DataFrame) -> pd.DataFrame:
    """The RAVDESS index rows of the clips in a prediction table."""
    from mer_utils.ravdess import index_dataset

    folder = Path(predictions["path"].iloc[0]).parent.parent
    index = index_dataset(folder)
    return index[index["path"].isin(predictions["path"])]


def test_whisper_preprocessing_is_recorded_and_used_again_at_prediction(demo_dir, tmp_path, monkeypatch):
    from mer_utils import whisper_encoder
    from mer_utils.evaluation import probabilities_of
    from mer_utils.ravdess import index_dataset
    from mer_utils.runs import read_predictions, read_run_info

    if not whisper_encoder.available():
        pytest.skip(f"Whisper encoder not installed: {whisper_encoder.INSTALL}")
    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    index = index_dataset(demo_dir)
    index = index[index["modality"] == "audio-video"].groupby("actor").head(3).reset_index(drop=True)
    out = tmp_path / "whisper"
    base.train(
        "audio",
        index,
        out,
        seed=1,
        model="whisper",
        progress=False,
        out_of_fold=False,
        normalisation="global",
        preprocess="loudness+vad",
    )
    info = read_run_info(out)
    assert info["settings"]["preprocess"] == "loudness+vad"
    assert info["features"] == whisper_encoder.feature_params("loudness+vad")
    # A clip is predicted through the same preprocessing: the run's own test answer comes back.
    test = read_predictions(out, "test")
    clip = test["path"].iloc[0]
    answer = base.predict_file(out, clip)
    np.testing.assert_allclose(answer["probabilities"], probabilities_of(test)[0], atol=1e-5)
    plain = whisper_encoder.clip_embedding(clip)
    assert not np.allclose(plain, whisper_encoder.clip_embedding(clip, preprocess="loudness+vad"))
    with pytest.raises(ValueError, match="whisper model only"):
        base.train(
            "audio",
            index,
            tmp_path / "mfcc",
            model="cnn",
            smoke=True,
            progress=False,
            preprocess="loudness+vad",
        )
    with pytest.raises(ValueError, match="unknown preprocess"):
        base.settings_for("audio", preprocess="louder")
