"""Tests of mer_utils.fusion on synthetic probability tables with known properties (no TensorFlow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from mer_utils import fusion
from mer_utils.config import RAVDESS_EMOTIONS
from mer_utils.evaluation import prediction_table
from mer_utils.runs import write_predictions, write_run_info

LABELS = list(RAVDESS_EMOTIONS)
NUM_CLASSES = len(LABELS)


def synthetic_tables(
    num_clips: int, signal: dict[str, float], sharpen: dict[str, float], seed: int, prefix: str = "take"
) -> dict[str, pd.DataFrame]:
    """Prediction tables of several modalities on the same clips.

    Each modality's logits are Gaussian noise plus ``signal`` on the true class, multiplied by
    ``sharpen`` (above 1 makes it over-confident).
    """
    generator = np.random.default_rng(seed)
    targets = generator.integers(0, NUM_CLASSES, num_clips)
    clip_ids = [f"{prefix}-{i:04d}" for i in range(num_clips)]
    true_labels = [LABELS[t] for t in targets]
    tables = {}
    for name in signal:
        logits = generator.normal(0.0, 1.0, (num_clips, NUM_CLASSES))
        logits[np.arange(num_clips), targets] += signal[name]
        tables[name] = prediction_table(
            softmax(logits * sharpen[name], axis=1), LABELS, clip_ids, true_labels
        )
    return tables


# ----------------------------------------------------------------------------- confidence and calibration


def test_entropy_confidence_is_one_for_one_hot_zero_for_uniform_nan_for_missing():
    probabilities = np.array(
        [np.eye(NUM_CLASSES)[2], np.full(NUM_CLASSES, 1 / NUM_CLASSES), np.full(NUM_CLASSES, np.nan)]
    )
    confidence = fusion.entropy_confidence(probabilities)
    assert confidence[0] == pytest.approx(1.0, abs=1e-6)
    assert confidence[1] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(confidence[2])
    two_class = fusion.entropy_confidence(np.array([[0.5, 0.5], [0.9, 0.1]]))
    expected = 1 - (-(0.9 * math.log(0.9) + 0.1 * math.log(0.1))) / math.log(2)
    assert two_class[1] == pytest.approx(expected)


def test_fit_temperature_recovers_known_temperature_and_lowers_ece():
    generator = np.random.default_rng(0)
    logits = generator.normal(0.0, 1.5, (4000, NUM_CLASSES))
    calibrated = softmax(logits, axis=1)
    # Labels drawn from the calibrated distribution, so T = 3 exactly undoes the sharpening below.
    targets = np.array([generator.choice(NUM_CLASSES, p=p) for p in calibrated])
    over_confident = softmax(3.0 * logits, axis=1)
    temperature = fusion.fit_temperature(over_confident, targets)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = fusion.expected_calibration_error(over_confident, targets)
    after = fusion.expected_calibration_error(fusion.apply_temperature(over_confident, temperature), targets)
    assert after < before / 2
    # Argmax (and so accuracy) is unchanged by temperature scaling.
    rescaled = fusion.apply_temperature(over_confident, temperature)
    assert np.array_equal(rescaled.argmax(axis=1), over_confident.argmax(axis=1))


def test_apply_temperature_keeps_missing_rows_missing_and_rejects_bad_temperature():
    probabilities = np.array([[0.7, 0.2, 0.1], [np.nan, np.nan, np.nan]])
    scaled = fusion.apply_temperature(probabilities, 2.0)
    assert np.isnan(scaled[1]).all()
    assert scaled[0].sum() == pytest.approx(1.0)
    assert scaled[0, 0] < 0.7
    with pytest.raises(ValueError, match="temperature"):
        fusion.apply_temperature(probabilities, 0.0)


def test_expected_calibration_error_of_hand_made_bins():
    # Two clips at confidence 0.9 (one right) and two at 0.6 (both right): ECE = (2*0.4 + 2*0.4) / 4.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    targets = np.array([0, 1, 0, 0])
    assert fusion.expected_calibration_error(probabilities, targets, bins=10) == pytest.approx(0.4)


def test_macro_f1_matches_sklearn_including_unanswered_clips():
    from sklearn.metrics import f1_score

    generator = np.random.default_rng(3)
    targets = generator.integers(0, 5, 200)
    predictions = generator.integers(-1, 5, 200)
    expected = f1_score(targets, predictions, labels=list(range(6)), average="macro", zero_division=0)
    assert fusion.macro_f1(targets, predictions, 6) == pytest.approx(expected)


# ----------------------------------------------------------------------------- alignment


def test_align_modalities_fills_missing_clips_with_nan_rows():
    tables = synthetic_tables(10, {"video": 2.0, "audio": 1.0}, {"video": 1.0, "audio": 1.0}, seed=1)
    tables["video"] = tables["video"].iloc[2:].sample(frac=1.0, random_state=0)  # no face in two clips
    aligned = fusion.align_modalities(tables)
    assert list(aligned.clip_ids) == sorted(tables["audio"]["clip_id"])
    assert aligned.labels == LABELS
    assert np.isnan(aligned.probabilities["video"][:2]).all()
    assert not np.isnan(aligned.probabilities["video"][2:]).any()
    assert list(aligned.true_labels) == list(tables["audio"]["true_label"])


def test_align_modalities_raises_on_tables_that_do_not_line_up():
    tables = synthetic_tables(6, {"video": 2.0, "audio": 1.0}, {"video": 1.0, "audio": 1.0}, seed=1)
    other = synthetic_tables(6, {"audio": 1.0}, {"audio": 1.0}, seed=1, prefix="other")
    with pytest.raises(ValueError, match="share no clip_id"):
        fusion.align_modalities({"video": tables["video"], "audio": other["audio"]})

    relabelled = tables["audio"].copy()
    relabelled.loc[3, "true_label"] = "calm" if relabelled.loc[3, "true_label"] != "calm" else "sad"
    with pytest.raises(ValueError, match="different true labels.*'video' and 'audio'.*take-0003"):
        fusion.align_modalities({"video": tables["video"], "audio": relabelled})

    reordered = tables["audio"][
        [
            "clip_id",
            "path",
            "true_label",
            "pred_label",
            *reversed([c for c in tables["audio"].columns if c.startswith("prob_")]),
        ]
    ]
    with pytest.raises(ValueError, match="label orders differ"):
        fusion.align_modalities({"video": tables["video"], "audio": reordered})

    doubled = pd.concat([tables["audio"], tables["audio"].iloc[:1]])
    with pytest.raises(ValueError, match="'audio' repeats clips"):
        fusion.align_modalities({"video": tables["video"], "audio": doubled})


# ----------------------------------------------------------------------------- fusion rules


def test_entropy_trust_beats_plain_mean_with_a_confident_correct_and_a_noisy_modality():
    generator = np.random.default_rng(5)
    num_clips = 500
    targets = generator.integers(0, NUM_CLASSES, num_clips)
    # Reliable modality: moderately peaked on the true class.
    good_logits = generator.normal(0.0, 1.0, (num_clips, NUM_CLASSES))
    good_logits[np.arange(num_clips), targets] += 2.5
    # Noisy modality: confident peaks on random classes, right only by chance.
    noisy = softmax(generator.normal(0.0, 3.0, (num_clips, NUM_CLASSES)), axis=1)
    probabilities = {"face": softmax(good_logits, axis=1), "voice": noisy}
    trust = fusion.trust_from_validation(probabilities, targets, "accuracy")
    assert trust["face"] > 0.7 > 0.3 > trust["voice"]
    fused, weights = fusion.entropy_trust_fusion(probabilities, trust)
    ours = np.mean(fused.argmax(axis=1) == targets)
    mean = np.mean(fusion.mean_fusion(probabilities).argmax(axis=1) == targets)
    assert ours > mean + 0.05
    assert np.allclose(weights["face"] + weights["voice"], 1.0)
    assert weights["face"].mean() > weights["voice"].mean()


def test_missing_modality_rows_are_answered_from_the_present_modality():
    probabilities = {
        "video": np.array([[0.7, 0.2, 0.1], [np.nan, np.nan, np.nan], [0.1, 0.1, 0.8]]),
        "audio": np.array([[0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [np.nan, np.nan, np.nan]]),
    }
    trust = {"video": 0.9, "audio": 0.5}
    fused, weights = fusion.entropy_trust_fusion(probabilities, trust)
    assert np.allclose(fused[1], probabilities["audio"][1])
    assert np.allclose(fused[2], probabilities["video"][2])
    assert weights["video"][1] == 0.0 and weights["audio"][1] == 1.0
    assert weights["video"][2] == 1.0 and weights["audio"][2] == 0.0
    # On clip 0 both contribute, in proportion to trust x confidence.
    confidence = {name: fusion.entropy_confidence(p[:1])[0] for name, p in probabilities.items()}
    share = 0.9 * confidence["video"] / (0.9 * confidence["video"] + 0.5 * confidence["audio"])
    assert weights["video"][0] == pytest.approx(share)
    for method in ("mean", "product", "majority_vote", "inverse_entropy"):
        fitted = fusion.FittedFusion(["a", "b", "c"], trust, {"video": 1.0, "audio": 1.0})
        scores = fusion.fuse_with_method(fitted, probabilities, method)
        assert scores[1].argmax() == 1 and scores[2].argmax() == 2, method


def test_a_clip_without_any_modality_raises():
    probabilities = {"video": np.array([[np.nan, np.nan]]), "audio": np.array([[np.nan, np.nan]])}
    with pytest.raises(ValueError, match="no modality"):
        fusion.entropy_trust_fusion(probabilities, {"video": 1.0, "audio": 1.0})
    with pytest.raises(ValueError, match="no modality"):
        fusion.product_fusion(probabilities)


def test_majority_vote_and_product_on_hand_made_clip():
    probabilities = {
        "a": np.array([[0.6, 0.3, 0.1]]),
        "b": np.array([[0.5, 0.1, 0.4]]),
        "c": np.array([[0.1, 0.45, 0.45]]),
    }
    assert fusion.majority_vote_fusion(probabilities).argmax() == 0
    product = fusion.product_fusion(probabilities)[0]
    expected = np.array([0.6 * 0.5 * 0.1, 0.3 * 0.1 * 0.45, 0.1 * 0.4 * 0.45])
    assert np.allclose(product, expected / expected.sum())


def test_inverse_entropy_weights_prefer_the_sharper_modality():
    sharp = np.array([[0.05, 0.9, 0.05]])
    flat = np.array([[0.4, 0.3, 0.3]])
    fused = fusion.inverse_entropy_fusion({"sharp": sharp, "flat": flat})
    entropies = [fusion.entropy(sharp)[0], fusion.entropy(flat)[0]]
    weight = (1 / entropies[0]) / (1 / entropies[0] + 1 / entropies[1])
    assert np.allclose(fused, weight * sharp + (1 - weight) * flat)


# ----------------------------------------------------------------------------- statistics


def test_mcnemar_matches_hand_computed_values():
    # 1 clip only A gets right, 7 only B: exact two-sided p = 2 * P(X <= 1), X ~ Bin(8, 0.5) = 18/256.
    targets = np.zeros(20, dtype=int)
    a = np.array([0] * 1 + [1] * 7 + [0] * 10 + [1] * 2)
    b = np.array([1] * 1 + [0] * 7 + [0] * 10 + [1] * 2)
    result = fusion.mcnemar_test(targets, a, b)
    assert (result["a_only_correct"], result["b_only_correct"]) == (1, 7)
    assert (result["both_correct"], result["both_wrong"]) == (10, 2)
    assert result["test"] == "exact"
    assert result["p_value"] == pytest.approx(18 / 256)
    # Many discordant pairs: chi-square with continuity correction, (|10 - 30| - 1)^2 / 40 = 9.025.
    targets = np.zeros(40, dtype=int)
    a = np.array([0] * 10 + [1] * 30)
    b = np.array([1] * 10 + [0] * 30)
    result = fusion.mcnemar_test(targets, a, b)
    assert result["test"] == "chi2_continuity"
    assert result["statistic"] == pytest.approx(9.025)
    assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert fusion.mcnemar_test(targets, a, a)["p_value"] == 1.0


def test_bootstrap_ci_contains_estimate_and_is_reproducible_by_seed():
    generator = np.random.default_rng(2)
    targets = generator.integers(0, 4, 300)
    predictions = np.where(generator.random(300) < 0.7, targets, (targets + 1) % 4)
    accuracy = np.mean(predictions == targets)
    low, high = fusion.bootstrap_ci(targets, predictions, "accuracy", n_boot=500, seed=7)
    assert low < accuracy < high
    assert 0.03 < high - low < 0.2  # about 2 x 1.96 x sqrt(0.7 x 0.3 / 300) = 0.10
    assert fusion.bootstrap_ci(targets, predictions, "accuracy", n_boot=500, seed=7) == (low, high)
    assert fusion.bootstrap_ci(targets, predictions, "accuracy", n_boot=500, seed=8) != (low, high)
    f1_low, f1_high = fusion.bootstrap_ci(targets, predictions, "macro_f1", n_boot=300, seed=7)
    assert f1_low < fusion.macro_f1(targets, predictions, 4) < f1_high


# ----------------------------------------------------------------------------- comparison and robustness


def audio_accuracy(table: pd.DataFrame) -> float:
    """Accuracy of a prediction table's argmax."""
    predicted = table[[f"prob_{label}" for label in LABELS]].to_numpy().argmax(axis=1)
    return float(np.mean(np.array(LABELS)[predicted] == table["true_label"].to_numpy()))


@pytest.fixture(scope="module")
def val_and_test_tables():
    """A good but over-confident video modality and a weak, very over-confident audio modality."""
    signal = {"video": 2.5, "audio": 1.0}
    sharpen = {"video": 2.0, "audio": 4.0}
    return synthetic_tables(400, signal, sharpen, seed=11), synthetic_tables(400, signal, sharpen, seed=12)


def test_compare_fusion_methods_table(val_and_test_tables):
    val_tables, test_tables = val_and_test_tables
    table = fusion.compare_fusion_methods(val_tables, test_tables, n_boot=100, seed=1)
    assert list(table.index) == ["single_video", "single_audio", *fusion.FUSION_METHODS]
    for metric in ("accuracy", "macro_f1"):
        assert (table[f"{metric}_ci_low"] <= table[metric]).all()
        assert (table[metric] <= table[f"{metric}_ci_high"]).all()
    assert (table["n"] == 400).all()
    # Both models are informative, so calibrated entropy x trust beats the better one alone.
    assert table.loc["entropy_trust", "accuracy"] > table.loc["single_video", "accuracy"]
    assert table.loc["entropy_trust", "accuracy"] > table.loc["single_audio", "accuracy"] + 0.2


def test_weights_by_emotion_average_the_per_clip_weights(val_and_test_tables):
    val_tables, test_tables = val_and_test_tables
    comparison = fusion.run_comparison(val_tables, test_tables, n_boot=10)
    by_emotion = fusion.weights_by_emotion(comparison)
    assert list(by_emotion.columns) == ["video", "audio"]
    assert set(by_emotion.index) <= set(LABELS) and len(by_emotion) == NUM_CLASSES
    assert np.allclose(by_emotion.sum(axis=1), 1.0)
    happy = np.array([LABELS[t] == "happy" for t in comparison.targets])
    assert by_emotion.loc["happy", "video"] == pytest.approx(comparison.weights["video"][happy].mean())


def test_fit_fusion_calibrates_each_modality(val_and_test_tables):
    val_tables, _ = val_and_test_tables
    fitted = fusion.fit_fusion(val_tables)
    # Audio was sharpened most for the least signal, so it needs the largest softening.
    assert fitted.temperatures["audio"] > 2.0 * fitted.temperatures["video"]
    for name in ("video", "audio"):
        assert fitted.validation[name]["ece_after"] < fitted.validation[name]["ece_before"]
    assert fitted.trust["video"] > fitted.trust["audio"]
    parameters = fusion.fit_fusion_parameters(val_tables, trust="accuracy")
    assert parameters["trust_metric"] == "accuracy"
    assert parameters["modalities"]["video"]["trust"] == pytest.approx(fitted.validation["video"]["accuracy"])


def test_simulate_missing_drops_the_share_but_never_a_whole_clip(val_and_test_tables):
    _, test_tables = val_and_test_tables
    aligned = fusion.align_modalities(test_tables)
    damaged = fusion.simulate_missing(aligned.probabilities, "video", 0.5, seed=3)
    assert np.isnan(damaged["video"]).any(axis=1).sum() == 200
    assert not np.isnan(aligned.probabilities["video"]).any()  # the input is not modified
    everything = fusion.simulate_missing(damaged, "audio", 1.0, seed=3)
    assert np.isnan(everything["audio"]).any(axis=1).sum() == 200  # only where video is still there
    assert np.array_equal(
        fusion.simulate_missing(aligned.probabilities, "video", 0.5, seed=3)["video"],
        damaged["video"],
        equal_nan=True,
    )


def test_missing_and_degraded_curves(val_and_test_tables):
    val_tables, test_tables = val_and_test_tables
    fitted = fusion.fit_fusion(val_tables)
    aligned = fusion.align_modalities(test_tables)
    curve = fusion.missing_modality_curve(fitted, aligned, shares=(0.0, 0.5, 1.0), modalities=["video"])
    ours = curve[curve["method"] == "entropy_trust"].set_index("share")["accuracy"]
    alone = curve[curve["method"] == "single_video"].set_index("share")["accuracy"]
    assert alone[1.0] == 0.0  # video alone cannot answer without video
    assert ours[1.0] == pytest.approx(
        curve[(curve["method"] == "single_audio") & (curve["share"] == 1.0)]["accuracy"].iloc[0]
    )
    assert ours[0.0] > ours[0.5] > ours[1.0] > 0.2

    # Degraded audio: weaker signal at each level; fusion falls back on video.
    degraded = {}
    for level, signal in ((20, 1.0), (0, 0.3)):
        noisy = synthetic_tables(400, {"video": 2.5, "audio": signal}, {"video": 2.0, "audio": 4.0}, seed=12)
        degraded[level] = noisy["audio"]
    curve = fusion.degraded_modality_curve(fitted, test_tables, "audio", degraded)
    assert set(curve["level"]) == {20, 0} and (curve["unavailable"] == 0).all()
    # Extra clips in a degraded table are ignored; clips it lacks make that modality unavailable there.
    extra = synthetic_tables(3, {"audio": 1.0}, {"audio": 1.0}, seed=4, prefix="val")["audio"]
    partial = pd.concat([degraded[0].iloc[100:], extra])
    curve_partial = fusion.degraded_modality_curve(fitted, test_tables, "audio", {0: partial})
    assert (curve_partial["unavailable"] == 100).all()
    audio_partial = curve_partial.set_index("method").loc["single_audio", "accuracy"]
    assert audio_partial == pytest.approx(audio_accuracy(degraded[0].iloc[100:]) * 300 / 400)
    with pytest.raises(ValueError, match="shares no clip_id"):
        fusion.degraded_modality_curve(fitted, test_tables, "audio", {0: extra})
    audio = curve[curve["method"] == "single_audio"].set_index("level")["accuracy"]
    ours = curve[curve["method"] == "entropy_trust"].set_index("level")["accuracy"]
    video = curve[curve["method"] == "single_video"].set_index("level")["accuracy"]
    assert audio[0] < audio[20]
    assert ours[0] >= video[0] - 0.03


def test_fuse_single_reports_unavailable_modalities():
    trust = {"video": 0.8, "audio": 0.4, "spectrogram": 0.6}
    temperatures = {"video": 1.5, "audio": 2.0, "spectrogram": 1.0}
    probabilities = {
        "video": np.array([0.7, 0.2, 0.1]),
        "audio": None,
        "spectrogram": np.array([0.2, 0.5, 0.3]),
    }
    result = fusion.fuse_single(probabilities, trust, temperatures, labels=["a", "b", "c"])
    assert result["unavailable"] == ["audio"] and result["available"] == ["video", "spectrogram"]
    assert result["modalities"]["audio"] == {
        "available": False,
        "trust": 0.4,
        "temperature": 2.0,
        "weight": 0.0,
    }
    weights = [result["modalities"][name]["weight"] for name in ("video", "spectrogram")]
    assert sum(weights) == pytest.approx(1.0)
    assert sum(result["fused_probabilities"]) == pytest.approx(1.0)
    batch_fused, _ = fusion.entropy_trust_fusion(
        {"video": probabilities["video"][None], "spectrogram": probabilities["spectrogram"][None]},
        trust,
        temperatures,
    )
    assert np.allclose(result["fused_probabilities"], batch_fused[0])
    assert result["label"] == ["a", "b", "c"][int(np.argmax(batch_fused[0]))]
    assert result["modalities"]["video"]["confidence"] == pytest.approx(
        fusion.entropy_confidence(fusion.apply_temperature(probabilities["video"][None], 1.5))[0]
    )
    json.dumps(result)  # `mer predict --json` prints it
    with pytest.raises(ValueError, match="no modality could be used"):
        fusion.fuse_single({"video": None}, trust, temperatures)
    with pytest.raises(ValueError, match="no trust for modality 'text'"):
        fusion.fuse_single({"text": np.array([0.5, 0.5])}, trust, temperatures)


# ----------------------------------------------------------------------------- run folders


def write_fake_run(run_dir, branch: str, val_table: pd.DataFrame, test_table: pd.DataFrame) -> None:
    """A run folder as the branch pipelines write it (run.json + prediction tables)."""
    write_run_info(run_dir, branch, LABELS, seed=42)
    write_predictions(run_dir, "val", val_table)
    write_predictions(run_dir, "test", test_table)


def test_fuse_runs_end_to_end(tmp_path, val_and_test_tables):
    val_tables, test_tables = val_and_test_tables
    runs = []
    for name in ("video", "audio"):
        write_fake_run(tmp_path / f"run_{name}", name, val_tables[name], test_tables[name])
        runs.append(tmp_path / f"run_{name}")
    out = tmp_path / "fusion"
    table = fusion.fuse_runs(runs, out, seed=3, trust="accuracy", n_boot=50)
    # Fusion reads probability tables only: in a fresh interpreter (this session has imported
    # TensorFlow for other tests) fuse_runs must not load a model library.
    code = (
        "import sys; from mer_utils import fusion; "
        f"fusion.fuse_runs({[str(r) for r in runs]!r}, {str(tmp_path / 'again')!r}, n_boot=10); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out_flags = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out_flags.split()[-2:] == ["False", "False"]
    assert list(table.index) == ["single_video", "single_audio", *fusion.FUSION_METHODS]
    for name in (
        "fusion_table.csv",
        "fusion_table.md",
        "metrics.json",
        "mcnemar.json",
        "fusion.json",
        "weight_examples.csv",
        "calibration.csv",
        "missing_modality_curve.csv",
        "reliability_diagrams.png",
        "weights_by_emotion.png",
        "missing_modality_curve.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == set(table.index)
    assert metrics["entropy_trust"]["accuracy"] == pytest.approx(table.loc["entropy_trust", "accuracy"])
    for key in ("accuracy_ci_low", "accuracy_ci_high", "macro_f1_ci_low", "macro_f1_ci_high", "per_class"):
        assert key in metrics["entropy_trust"]
    mcnemar = json.loads((out / "mcnemar.json").read_text())
    parameters = fusion.load_fusion_parameters(out)
    # McNemar tests the validation-chosen default (and the seed's rule) against the best single run.
    assert mcnemar["method_a"] == parameters["method"] and mcnemar["method_b"] == "single_video"
    assert mcnemar["seed_rule"]["method_a"] == "entropy_trust"
    assert table.loc[parameters["method"], "chosen"] and table["chosen"].sum() == 1
    assert 0.0 <= mcnemar["p_value"] <= 1.0
    parameters = fusion.load_fusion_parameters(out)
    assert parameters["labels"] == LABELS and parameters["trust_metric"] == "accuracy"
    assert parameters["modalities"]["audio"]["branch"] == "audio"
    assert parameters["modalities"]["video"]["run_dir"] == str(runs[0].resolve())
    markdown = (out / "fusion_table.md").read_text()
    # The table (header, rule, one line per row), a blank line and the caption saying what was fitted on.
    assert markdown.count("\n") == len(table) + 4 and "| entropy_trust |" in markdown
    assert markdown.splitlines()[-1].startswith("Fitted on validation clips")
    assert "Guard: " in markdown.splitlines()[-1]
    examples = pd.read_csv(out / "weight_examples.csv")
    assert set(examples["outcome"]) <= {"rescued", "hurt"} and len(examples) > 0
    rescued = examples[examples["outcome"] == "rescued"]
    assert (rescued["entropy_trust"] == rescued["true_label"]).all()
    assert (rescued["mean"] != rescued["true_label"]).all()
    assert np.allclose(examples["video_weight"] + examples["audio_weight"], 1.0)
    # What `mer predict` loads: stored parameters, or fitted now from predictions_val.csv.
    stored = fusion.fusion_parameters_for_runs(runs, out / "fusion.json")
    fitted_now = fusion.fusion_parameters_for_runs(runs, trust="accuracy")
    for name in ("video", "audio"):
        for key in ("trust", "temperature"):
            assert stored["modalities"][name][key] == pytest.approx(
                fitted_now["modalities"][name][key], rel=1e-6
            )
    assert fitted_now["modalities"]["audio"]["run_dir"] == str(runs[1].resolve())
    trust, temperatures = fusion.trust_and_temperatures(stored)
    clip = test_tables["video"].iloc[0]
    probabilities = {"video": clip[[f"prob_{label}" for label in LABELS]].to_numpy(float), "audio": None}
    single = fusion.fuse_single(probabilities, trust, temperatures, labels=stored["labels"])
    assert single["unavailable"] == ["audio"] and single["modalities"]["video"]["weight"] == 1.0
    calibrated_video = fusion.apply_temperature(probabilities["video"][None], temperatures["video"])[0]
    assert np.allclose(single["fused_probabilities"], calibrated_video)
    spectrogram_val = synthetic_tables(400, {"s": 1.5}, {"s": 1.0}, seed=11)["s"]
    spectrogram_test = synthetic_tables(400, {"s": 1.5}, {"s": 1.0}, seed=12)["s"]
    write_fake_run(tmp_path / "run_spectrogram", "spectrogram", spectrogram_val, spectrogram_test)
    with pytest.raises(ValueError, match=r"no trust/temperature for modalities \['spectrogram'\]"):
        fusion.fusion_parameters_for_runs([*runs, tmp_path / "run_spectrogram"], out)
    # Same inputs and seed -> the same table.
    again = fusion.fuse_runs(runs, tmp_path / "again", seed=3, trust="accuracy", n_boot=50)
    pd.testing.assert_frame_equal(table, again)


def test_fuse_runs_names_two_runs_of_one_branch_apart_and_checks_inputs(tmp_path, val_and_test_tables):
    val_tables, test_tables = val_and_test_tables
    write_fake_run(tmp_path / "small", "audio", val_tables["audio"], test_tables["audio"])
    write_fake_run(tmp_path / "large", "audio", val_tables["video"], test_tables["video"])
    names = fusion.modality_names([tmp_path / "small", tmp_path / "large"])
    assert list(names) == ["audio-small", "audio-large"]
    with pytest.raises(ValueError, match="at least two run folders"):
        fusion.fuse_runs([tmp_path / "small"], tmp_path / "out")
    with pytest.raises(ValueError, match="given twice"):
        fusion.fuse_runs([tmp_path / "small", tmp_path / "small"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a run folder"):
        fusion.fuse_runs([tmp_path / "small", tmp_path / "empty"], tmp_path / "out")
    write_run_info(tmp_path / "no_test", "video", LABELS)
    write_predictions(tmp_path / "no_test", "val", val_tables["video"])
    with pytest.raises(FileNotFoundError, match="predictions_test.csv"):
        fusion.fuse_runs([tmp_path / "small", tmp_path / "no_test"], tmp_path / "out")
