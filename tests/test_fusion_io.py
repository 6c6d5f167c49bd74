"""Tests of fusion.json (mer_utils.fusion.parameters) and of run folders in / results out (fusion.io)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mer_utils import fusion
from mer_utils.config import RAVDESS_EMOTIONS
from mer_utils.evaluation import prediction_table
from mer_utils.runs import write_predictions, write_run_info

LABELS = list(RAVDESS_EMOTIONS)
NUM_CLASSES = len(LABELS)


def tables(num_clips: int, signals: dict[str, float], seed: int) -> dict[str, pd.DataFrame]:
    """Prediction tables of several runs with Gaussian logits plus ``signal`` on the true class."""
    generator = np.random.default_rng(seed)
    targets = generator.integers(0, NUM_CLASSES, num_clips)
    clip_ids = [f"take-{i:04d}" for i in range(num_clips)]
    result = {}
    for name, signal in signals.items():
        logits = generator.normal(0.0, 1.0, (num_clips, NUM_CLASSES))
        logits[np.arange(num_clips), targets] += signal
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        result[name] = prediction_table(probabilities, LABELS, clip_ids, [LABELS[t] for t in targets])
    return result


def write_run(
    run_dir, branch: str, val: pd.DataFrame, test: pd.DataFrame, model: bytes | None = None
) -> None:
    """A run folder as the branch pipelines write it (run.json, predictions, optionally a model file)."""
    write_run_info(run_dir, branch, LABELS, seed=42)
    write_predictions(run_dir, "val", val)
    write_predictions(run_dir, "test", test)
    if model is not None:
        (run_dir / "model.joblib").write_bytes(model)


@pytest.fixture(scope="module")
def fitted_parameters():
    """fusion.json content fitted on three synthetic runs."""
    return fusion.fit_fusion_parameters(tables(200, {"video": 2.0, "audio": 1.2, "spectrogram": 1.0}, 1))


def write_parameters(path, parameters: dict) -> None:
    """Write fusion.json the way a hand edit would (NaN allowed by Python's json)."""
    path.write_text(json.dumps(parameters))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["modalities"]["audio"].update(trust=float("nan")), "trust of 'audio' must be a finite"),
        (lambda p: p["modalities"]["audio"].update(trust=1.5), r"trust of 'audio' must be in \[0.0, 1.0\]"),
        (lambda p: p["modalities"]["video"].update(temperature=-1.0), "temperature of 'video' must be in"),
        (lambda p: p["modalities"]["video"].update(temperature=0.0), "temperature of 'video' must be in"),
        (lambda p: p["modalities"]["video"].update(temperature="hot"), "must be a finite number"),
        (lambda p: p["modalities"]["video"].pop("trust"), "modality 'video' has no 'trust'"),
        (lambda p: p.update(method="telepathy"), "unknown method 'telepathy'"),
        (lambda p: p.update(method="stacking"), "unknown method 'stacking'"),
        (lambda p: p.update(method="single_text"), "unknown method 'single_text'"),
        (lambda p: p["parameters"].update(gamma=-2), "parameters.gamma must be in"),
        (lambda p: p["parameters"].update(trust_kind="vibes"), "trust_kind must be one of"),
        (lambda p: p["modalities"]["audio"].update(class_precision=[0.5] * 3), "one value per label"),
        (lambda p: p.update(modalities={}), "'modalities' is empty"),
    ],
)
def test_fusion_json_is_validated_on_load(tmp_path, fitted_parameters, edit, message):
    parameters = json.loads(json.dumps(fitted_parameters))
    edit(parameters)
    path = tmp_path / "fusion.json"
    write_parameters(path, parameters)
    with pytest.raises(ValueError, match=message) as error:
        fusion.load_fusion_parameters(tmp_path)
    assert str(path) in str(error.value)


def test_valid_and_old_fusion_json_load(tmp_path, fitted_parameters):
    write_parameters(tmp_path / "fusion.json", fitted_parameters)
    loaded = fusion.load_fusion_parameters(tmp_path)
    assert loaded["method"] == fitted_parameters["method"]
    # A file written before the method choice existed gets the seed's rule.
    old = {"labels": LABELS, "modalities": {"a": {"trust": 0.5, "temperature": 1.2}}}
    write_parameters(tmp_path / "old.json", old)
    loaded = fusion.load_fusion_parameters(tmp_path / "old.json")
    assert loaded["method"] == "entropy_trust"
    assert fusion.single_clip_rule(loaded) == {
        "gamma": 1.0,
        "confidence_exponent": 1.0,
        "class_trust": None,
        "single": None,
    }


@pytest.mark.parametrize(
    "method", ["entropy_trust", "entropy_trust_class", "entropy_trust_tuned", "mean", "single_video"]
)
def test_one_clip_fusion_reproduces_the_table_rows(method):
    val = tables(300, {"video": 2.0, "audio": 1.2, "spectrogram": 1.0}, 2)
    test = tables(40, {"video": 2.0, "audio": 1.2, "spectrogram": 1.0}, 3)
    fitted = fusion.fit_fusion(val, stacking=False)
    fitted.variants["entropy_trust_class"] = fusion.FamilyParameters(3.0, 1.0, "recall")
    fitted.variants["entropy_trust_tuned"] = fusion.FamilyParameters(2.0, 0.5, "precision")
    fitted.chosen = method
    parameters = fusion.fusion_parameters(fitted)
    parameters = fusion.validate_fusion_parameters(json.loads(json.dumps(parameters)))
    aligned = fusion.align_modalities(test)
    aligned.probabilities["video"] = aligned.probabilities["video"].copy()
    aligned.probabilities["video"][:5] = np.nan  # the chosen single run is missing on five clips
    row = method if not method.startswith("single_") else fusion.GUARDED_METHOD
    batch = fusion.fuse_with_method(fitted, aligned.probabilities, row)
    trust, temperatures = fusion.trust_and_temperatures(parameters)
    rule = fusion.single_clip_rule(parameters)
    for i in range(len(aligned.clip_ids)):
        clip = {name: None if np.isnan(p[i]).any() else p[i] for name, p in aligned.probabilities.items()}
        one = fusion.fuse_single(clip, trust, temperatures, labels=LABELS, **rule)
        assert np.allclose(one["fused_probabilities"], batch[i]), (method, i)


def test_the_same_model_in_two_folders_is_left_out_with_a_warning(tmp_path):
    val = tables(200, {"video": 2.0, "audio": 1.2, "other": 1.0}, 4)
    test = tables(100, {"video": 2.0, "audio": 1.2, "other": 1.0}, 5)
    write_run(tmp_path / "video", "video", val["video"], test["video"])
    write_run(tmp_path / "audio", "audio", val["audio"], test["audio"], model=b"weights")
    write_run(tmp_path / "audio_copy", "audio", val["audio"], test["audio"])  # same predictions
    write_run(tmp_path / "audio_renamed", "audio", val["other"], test["other"], model=b"weights")
    runs = [tmp_path / name for name in ("video", "audio", "audio_copy", "audio_renamed")]
    with pytest.warns(UserWarning) as caught:
        table = fusion.fuse_runs(runs, tmp_path / "out", n_boot=5)
    messages = [str(w.message) for w in caught]
    assert any("audio_copy holds the same model as" in m and "identical predictions" in m for m in messages)
    assert any("audio_renamed holds the same model as" in m and "identical model file" in m for m in messages)
    assert [m for m in table.index if m.startswith("single_")] == ["single_video", "single_audio"]
    with (
        pytest.warns(UserWarning, match="same model"),
        pytest.raises(ValueError, match="two different models"),
    ):
        fusion.fuse_runs([tmp_path / "audio", tmp_path / "audio_copy"], tmp_path / "out2")


def test_fuse_runs_scores_the_fitted_fusion_on_another_data_set(tmp_path):
    val = tables(200, {"video": 2.0, "audio": 1.2}, 6)
    test = tables(100, {"video": 2.0, "audio": 1.2}, 7)
    other = tables(60, {"video": 1.0, "audio": 1.2}, 8)
    other["video"] = other["video"].iloc[10:]  # ten clips the video run cannot use
    for name in ("video", "audio"):
        write_run(tmp_path / name, name, val[name], test[name])
    seen = {}

    def predict_data(run_dirs):
        seen.update(run_dirs)
        return {name: other[name] for name in run_dirs}

    out = tmp_path / "out"
    table = fusion.fuse_runs(
        [tmp_path / "video", tmp_path / "audio"], out, n_boot=5, predict_data=predict_data
    )
    assert set(seen) == {"video", "audio"}
    on_data = pd.read_csv(out / fusion.DATA_FOLDER / "fusion_table.csv", index_col="method")
    assert list(on_data.index) == list(table.index) and list(on_data.columns) == list(table.columns)
    assert (on_data["n"] == 60).all()
    assert on_data.loc["single_video", "accuracy"] <= 50 / 60  # cannot answer the ten clips
    assert (
        on_data["chosen"].sum() == 1
        and on_data.index[on_data["chosen"]][0] == table.index[table["chosen"]][0]
    )
    assert (out / fusion.DATA_FOLDER / "mcnemar.json").is_file()


@pytest.mark.slow
def test_mer_fuse_data_on_the_demo_clips_with_tiny_trained_runs(demo_dir, tmp_path, capsys):
    from mer_utils.cli import main
    from mer_utils.pipelines import base

    runs = []
    for model in ("logreg", "svm"):
        base.train("audio", demo_dir, tmp_path / model, seed=3, model=model, smoke=True, progress=False)
        runs.append(str(tmp_path / model))
    out = tmp_path / "fusion"
    assert main(["fuse", *runs, "--out", str(out), "--data", str(demo_dir)]) == 0
    printed = capsys.readouterr().out
    # Both scikit-learn runs wrote out-of-fold predictions, so the fusion is fitted on them.
    assert "default method (chosen on out-of-fold predictions):" in printed and "scores on" in printed
    assert "guard: " in printed and "one-sided exact McNemar p = " in printed
    assert fusion.load_fusion_parameters(out)["fitted_on"] == fusion.OUT_OF_FOLD_FIT
    table = pd.read_csv(out / "fusion_table.csv", index_col="method")
    on_data = pd.read_csv(out / fusion.DATA_FOLDER / "fusion_table.csv", index_col="method")
    assert list(on_data.index) == list(table.index) and list(on_data.columns) == list(table.columns)
    assert (on_data["n"] == 120).all()  # every demo clip, training actors included
    assert on_data["accuracy"].between(0.0, 1.0).all()
    chosen = fusion.load_fusion_parameters(out)["method"]
    assert bool(on_data.loc[chosen, "chosen"])


def test_runs_validated_on_different_samples_get_their_own_trust_and_temperature(tmp_path):
    # A faces run is validated on face images, an audio run on RAVDESS clips: no clip in common.
    faces = tables(200, {"faces": 2.5}, 6)["faces"].assign(clip_id=lambda t: "image-" + t["clip_id"])
    audio = tables(200, {"audio": 0.5}, 7)["audio"]
    write_run(tmp_path / "faces", "faces", faces, faces)
    write_run(tmp_path / "audio", "audio", audio, audio)
    parameters = fusion.io.fusion_parameters_for_runs([tmp_path / "faces", tmp_path / "audio"])
    assert parameters["method"] == "entropy_trust"
    assert "no clip in common" in parameters["chosen_by"]
    trust = {name: entry["trust"] for name, entry in parameters["modalities"].items()}
    # Each run's trust is its own validation score: the sharper faces run is trusted more.
    assert trust["faces"] > trust["audio"] > 0
    alone = fusion.fit_fusion_parameters({"faces": faces})["modalities"]["faces"]
    assert parameters["modalities"]["faces"]["temperature"] == pytest.approx(alone["temperature"])
    assert parameters["modalities"]["faces"]["run_dir"] == str((tmp_path / "faces").resolve())


def test_mer_fuse_scores_runs_validated_on_different_samples_on_shared_new_clips(tmp_path):
    # A faces run validated on face images beside an audio run validated on RAVDESS clips.
    faces = tables(200, {"faces": 2.5}, 6)["faces"].assign(clip_id=lambda t: "image-" + t["clip_id"])
    audio = tables(200, {"audio": 0.5}, 7)["audio"]
    write_run(tmp_path / "faces", "faces", faces, faces)
    write_run(tmp_path / "audio", "audio", audio, audio)
    runs = [tmp_path / "faces", tmp_path / "audio"]
    with pytest.raises(ValueError, match="--data"):
        fusion.fuse_runs(runs, tmp_path / "no_data")
    # Both runs predict the same new clips (as `mer fuse --data` makes them do).
    new_clips = tables(150, {"faces": 1.5, "audio": 1.0}, 8)
    seen = {}

    def predict_data(run_dirs):
        seen.update(run_dirs)
        return new_clips

    table = fusion.fuse_runs(runs, tmp_path / "fused", predict_data=predict_data)
    assert set(seen) == {"faces", "audio"}
    written = pd.read_csv(tmp_path / "fused" / "data" / "fusion_table.csv", index_col="method")
    assert list(written.index) == list(table.index)
    assert "stacking" not in table.index  # nothing shared to fit it on
    assert {"single_faces", "single_audio", "entropy_trust", "mean"} <= set(table.index)
    assert (table["n"] == 150).all()
    parameters = fusion.load_fusion_parameters(tmp_path / "fused")
    assert parameters["method"] == "entropy_trust" and bool(table.loc["entropy_trust", "chosen"])
    assert "no clip in common" in parameters["chosen_by"]
    # Two independent, informative runs: the seed's rule beats the weaker one on the new clips.
    assert table.loc["entropy_trust", "accuracy"] > table.loc["single_audio", "accuracy"]
