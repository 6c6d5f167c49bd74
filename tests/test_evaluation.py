"""Metrics, prediction tables and run folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mer_utils import evaluation, runs

LABELS = ["a", "b", "c"]


def test_classification_metrics_match_a_hand_count():
    metrics = evaluation.classification_metrics(["a", "a", "b", "c"], ["a", "b", "b", "c"], LABELS)
    assert metrics["accuracy"] == 0.75
    assert metrics["per_class"]["a"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    assert metrics["per_class"]["b"]["precision"] == 0.5
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert metrics["n"] == 4
    json.dumps(metrics)  # JSON-ready


def test_metrics_reject_unknown_labels_and_empty_input():
    with pytest.raises(ValueError, match="'z'"):
        evaluation.classification_metrics(["z"], ["a"], LABELS)
    with pytest.raises(ValueError, match="zero"):
        evaluation.classification_metrics([], [], LABELS)


def test_prediction_table_round_trip_and_metrics(tmp_path):
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    table = evaluation.prediction_table(probabilities, LABELS, ["t1", "t2", "t3", "t4"], ["a", "b", "c", "b"])
    assert table["pred_label"].tolist() == ["a", "b", "c", "a"]
    runs.write_predictions(tmp_path, "test", table)
    back = runs.read_predictions(tmp_path, "test")
    assert evaluation.labels_from_columns(back) == LABELS
    assert np.allclose(evaluation.probabilities_of(back), probabilities)
    metrics = evaluation.table_metrics(back)
    assert metrics["accuracy"] == 0.75
    assert 0.5 < metrics["macro_auc"] <= 1.0
    with pytest.raises(ValueError, match="shape"):
        evaluation.prediction_table(probabilities[:, :2], LABELS, ["t1", "t2", "t3", "t4"])


def test_roc_auc_is_one_for_perfect_scores():
    y = ["a", "b", "c", "a"]
    p = np.eye(3)[[0, 1, 2, 0]]
    result = evaluation.roc_auc(y, p, LABELS)
    assert result["macro_auc"] == 1.0 and set(result["per_class_auc"]) == set(LABELS)


def test_run_folder_io(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="run"):
        runs.check_run_dir(run)
    run.mkdir()
    with pytest.raises(ValueError, match="not a run folder"):
        runs.read_run_info(run)
    runs.write_run_info(run, "audio", LABELS, sample_rate=16000, mean=np.float32(0.5))
    info = runs.read_run_info(run)
    checksums = {key: info.pop(key) for key in (runs.MODEL_FILES_KEY, runs.FINGERPRINT_KEY)}
    assert info == {"branch": "audio", "labels": LABELS, "sample_rate": 16000, "mean": 0.5}
    # No model file saved yet: nothing hashed, but the label order is still bound by the fingerprint.
    assert checksums[runs.MODEL_FILES_KEY] == {}
    assert checksums[runs.FINGERPRINT_KEY] == runs.model_fingerprint(LABELS, {})
    assert runs.model_fingerprint(LABELS[::-1], {}) != checksums[runs.FINGERPRINT_KEY]
    (run / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        runs.read_json(run / "broken.json")
    assert not list(run.glob("*.tmp"))


def test_restrict_to_labels_leaves_out_other_labels_and_restricts_the_argmax():
    from mer_utils.evaluation import per_corpus_metrics, restrict_to_labels

    labels = ["neutral", "calm", "happy", "sad"]
    probabilities = np.array(
        [
            [0.1, 0.6, 0.2, 0.1],  # calm wins overall; happy among {happy, sad, neutral}
            [0.2, 0.1, 0.3, 0.4],
            [0.0, 0.9, 0.1, 0.0],  # a calm clip: left out
            [0.7, 0.1, 0.1, 0.1],  # no true label: left out
            [0.25, 0.25, 0.25, 0.25],  # not scored (empty pred_label below)
        ]
    )
    table = evaluation.prediction_table(
        probabilities, labels, list("abcde"), ["happy", "sad", "calm", "", "neutral"]
    )
    table.loc[4, "pred_label"] = ""
    table["corpus"] = ["x", "x", "x", "x", "y"]
    table["speaker"] = ["x:1", "x:1", "x:2", "x:2", "y:e"]
    kept, left_out = restrict_to_labels(table, ["happy", "sad", "neutral"])
    assert kept["clip_id"].tolist() == ["a", "b", "e"]
    assert kept["pred_label"].tolist() == ["happy", "sad", ""]
    assert [c for c in kept.columns if c.startswith("prob_")] == ["prob_happy", "prob_sad", "prob_neutral"]
    assert kept.loc[0, ["prob_happy", "prob_sad", "prob_neutral"]].tolist() == pytest.approx(
        [0.5, 0.25, 0.25]
    )
    assert left_out == {"": 1, "calm": 1}
    per_corpus = per_corpus_metrics(kept[kept["pred_label"] != ""], ["happy", "sad", "neutral"])
    assert per_corpus["x"]["accuracy"] == 1.0 and per_corpus["x"]["predicted"] == {
        "happy": 1,
        "sad": 1,
        "neutral": 0,
    }
    assert "note" not in per_corpus["x"] and "y" not in per_corpus
    with pytest.raises(ValueError, match=r"\['angry'\] are not"):
        restrict_to_labels(table, ["happy", "angry"])
    with pytest.raises(ValueError, match="each label once"):
        restrict_to_labels(table, ["happy", "happy"])


def test_merge_labels_folds_calm_into_neutral_and_answers_again():
    from mer_utils.evaluation import merge_labels, prediction_table

    labels = ["neutral", "calm", "happy"]
    probabilities = np.array([[0.3, 0.3, 0.4], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4], [0.2, 0.5, 0.3]])
    table = prediction_table(probabilities, labels, list("abcd"), ["calm", "happy", "neutral", "calm"])
    table.loc[3, "pred_label"] = ""  # a row the model could not score stays unanswered
    merged = merge_labels(table, {"calm": "neutral"})
    assert [c for c in merged.columns if c.startswith("prob_")] == ["prob_neutral", "prob_happy"]
    assert merged["prob_neutral"].tolist() == pytest.approx([0.6, 0.3, 0.6, 0.7])
    # Row a: happy won over neutral and calm apart, neutral-or-calm wins together.
    assert merged["pred_label"].tolist() == ["neutral", "happy", "neutral", ""]
    assert merged["true_label"].tolist() == ["neutral", "happy", "neutral", "neutral"]
    assert table["pred_label"].tolist() == ["happy", "happy", "neutral", ""]  # the input is left alone
    with pytest.raises(ValueError, match="cannot merge labels \\['sad'\\]"):
        merge_labels(table, {"sad": "neutral"})
