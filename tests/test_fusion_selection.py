"""Tests of the entropy x trust variants and their choice on validation (mer_utils.fusion.selection)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from mer_utils import fusion
from mer_utils.config import RAVDESS_EMOTIONS
from mer_utils.evaluation import prediction_table
from mer_utils.fusion.alignment import label_indices

LABELS = list(RAVDESS_EMOTIONS)
NUM_CLASSES = len(LABELS)


def tables_from_logits(logits: dict[str, np.ndarray], targets: np.ndarray, prefix: str) -> dict:
    """Prediction tables of several runs on the same clips."""
    clip_ids = [f"{prefix}-{i:04d}" for i in range(len(targets))]
    true_labels = [LABELS[t] for t in targets]
    return {
        name: prediction_table(softmax(z, axis=1), LABELS, clip_ids, true_labels)
        for name, z in logits.items()
    }


def one_good_and_four_echoes(num_clips: int, seed: int) -> dict:
    """A good run and four near-copies of one weak run: their shared errors get four votes."""
    generator = np.random.default_rng(seed)
    targets = generator.integers(0, NUM_CLASSES, num_clips)
    rows = np.arange(num_clips)
    good = generator.normal(0.0, 1.0, (num_clips, NUM_CLASSES))
    good[rows, targets] += 2.0
    weak = generator.normal(0.0, 1.0, (num_clips, NUM_CLASSES))
    weak[rows, targets] += 1.2
    logits = {"good": good}
    for copy in range(4):
        logits[f"weak_{copy}"] = weak + generator.normal(0.0, 0.05, weak.shape)
    return tables_from_logits(logits, targets, "take")


def test_gamma_is_chosen_large_when_one_run_is_clearly_better():
    val, test = one_good_and_four_echoes(300, seed=1), one_good_and_four_echoes(300, seed=2)
    comparison = fusion.run_comparison(val, test, n_boot=20, seed=0)
    fitted, table = comparison.fitted, comparison.table
    assert fitted.variants["entropy_trust_gamma"].gamma >= 2
    # The seed's rule lets the echoed weak run outvote the good one; sharpened trust does not.
    assert table.loc["entropy_trust", "accuracy"] < table.loc["single_good", "accuracy"] - 0.02
    assert table.loc["entropy_trust_gamma", "accuracy"] > table.loc["entropy_trust", "accuracy"] + 0.03
    assert table.loc[fusion.GUARDED_METHOD, "accuracy"] >= table.loc["single_good", "accuracy"] - 0.02
    assert fitted.cv_accuracy["entropy_trust_gamma"] > fitted.cv_accuracy["entropy_trust"]


def test_guard_falls_back_to_the_best_single_run_when_no_fusion_beats_it():
    generator = np.random.default_rng(5)
    targets = generator.integers(0, NUM_CLASSES, 200)
    logits = generator.normal(0.0, 1.0, (200, NUM_CLASSES))
    logits[np.arange(200), targets] += 2.0
    # Two copies of one model: no fusion of them can beat either copy.
    val = tables_from_logits({"a": logits, "b": logits * 1.0}, targets, "take")
    fitted = fusion.fit_fusion(val, stacking=False)
    assert fitted.chosen == "single_a"
    aligned = fusion.align_modalities(val)
    guarded = fusion.fuse_with_method(fitted, aligned.probabilities, fusion.GUARDED_METHOD)
    single = fusion.fuse_with_method(fitted, aligned.probabilities, "single_a")
    assert np.allclose(guarded, single)
    # Where the chosen run is missing, the guarded row answers from the others.
    damaged = {"a": aligned.probabilities["a"].copy(), "b": aligned.probabilities["b"]}
    damaged["a"][:10] = np.nan
    guarded = fusion.fuse_with_method(fitted, damaged, fusion.GUARDED_METHOD)
    assert not np.isnan(guarded).any()
    assert np.array_equal(guarded[:10].argmax(axis=1), aligned.probabilities["b"][:10].argmax(axis=1))


def test_fusion_is_chosen_when_it_beats_every_run_on_validation():
    tables = {}
    generator = np.random.default_rng(8)
    targets = generator.integers(0, NUM_CLASSES, 300)
    logits = {}
    for name in ("a", "b", "c"):
        z = generator.normal(0.0, 1.0, (300, NUM_CLASSES))
        z[np.arange(300), targets] += 1.2
        logits[name] = z
    tables = tables_from_logits(logits, targets, "take")
    fitted = fusion.fit_fusion(tables, stacking=False)
    # Three independent runs of equal skill: averaging clearly helps, so a family row is chosen.
    assert fitted.chosen in fusion.FAMILY_METHODS
    assert fitted.cv_accuracy[fitted.chosen] > max(fitted.cv_accuracy[f"single_{n}"] for n in "abc")


def test_class_trust_is_shrunk_precision_or_recall():
    targets = np.array([0, 0, 1, 1, 1, 2])
    probabilities = {"run": np.eye(3)[[0, 1, 1, 1, 0, 2]]}
    accuracy = 4 / 6
    precision = fusion.class_trust_from_validation(probabilities, targets, "precision")["run"]
    recall = fusion.class_trust_from_validation(probabilities, targets, "recall")["run"]
    prior = fusion.methods.CLASS_TRUST_PRIOR
    # Class 0: predicted twice, right once; class 1: predicted 3 times, right twice; class 2: 1 of 1.
    assert precision == pytest.approx(
        (np.array([1, 2, 1]) + prior * accuracy) / (np.array([2, 3, 1]) + prior)
    )
    assert recall == pytest.approx((np.array([1, 2, 1]) + prior * accuracy) / (np.array([2, 3, 1]) + prior))
    with pytest.raises(ValueError, match="precision' or 'recall"):
        fusion.class_trust_from_validation(probabilities, targets, "f1")


def specialists(num_clips: int, seed: int) -> dict:
    """Run 'low' is right on classes 0-3 and confidently wrong on 4-7 (into 4-7); 'high' the reverse."""
    generator = np.random.default_rng(seed)
    targets = generator.integers(0, NUM_CLASSES, num_clips)
    rows = np.arange(num_clips)
    logits = {}
    for name, good_half in (("low", targets < 4), ("high", targets >= 4)):
        z = generator.normal(0.0, 1.0, (num_clips, NUM_CLASSES))
        # Wrong answers stay inside the half the run is bad at, so its precision there is low.
        wrong = np.where(targets < 4, (targets + 1) % 4, 4 + (targets + 1) % 4)
        z[rows, np.where(good_half, targets, wrong)] += 3.0
        logits[name] = z
    return tables_from_logits(logits, targets, "take")


def test_per_class_trust_routes_each_clip_to_the_run_that_is_good_at_its_predicted_class():
    comparison = fusion.run_comparison(specialists(400, 3), specialists(400, 4), n_boot=20, seed=0)
    table = comparison.table
    assert comparison.fitted.variants["entropy_trust_class"].gamma > 1
    assert table.loc["entropy_trust_class", "accuracy"] > table.loc["entropy_trust", "accuracy"] + 0.1
    assert table.loc["entropy_trust_class", "accuracy"] > table.loc["single_low", "accuracy"] + 0.2


def test_confidence_exponent_zero_is_fixed_weights_and_gamma_zero_ignores_trust():
    val = one_good_and_four_echoes(60, seed=9)
    aligned = fusion.align_modalities(val)
    trust = {"good": 0.9, "weak_0": 0.2, "weak_1": 0.3, "weak_2": 0.1, "weak_3": 0.3}
    fixed, weights = fusion.entropy_trust_fusion(aligned.probabilities, trust, None, confidence_exponent=0.0)
    assert np.allclose(weights["good"], 0.9 / 1.8)
    no_trust, _ = fusion.entropy_trust_fusion(aligned.probabilities, trust, None, gamma=0.0)
    assert np.allclose(no_trust, fusion.confidence_fusion(aligned.probabilities))
    plain, _ = fusion.entropy_trust_fusion(
        aligned.probabilities, trust, None, gamma=0.0, confidence_exponent=0.0
    )
    assert np.allclose(plain, fusion.mean_fusion(aligned.probabilities))
    with pytest.raises(ValueError, match="exponents must be >= 0"):
        fusion.entropy_trust_fusion(aligned.probabilities, trust, None, gamma=-1.0)


def test_batched_grid_predictions_match_the_fusion_rule():
    val = specialists(80, 6)
    aligned = fusion.align_modalities(val)
    targets = fusion.label_indices(aligned.true_labels, aligned.labels)
    temperatures, trust, class_trust = fusion.selection.fit_trust(aligned.probabilities, targets, "macro_f1")
    grid = fusion.family_grid("entropy_trust_tuned")
    batched = fusion.selection.grid_predictions(aligned.probabilities, trust, temperatures, class_trust, grid)
    for g in (0, 7, 40, len(grid) - 1):
        fused, _ = fusion.selection.fuse_family(
            aligned.probabilities, trust, temperatures, class_trust, grid[g]
        )
        assert np.array_equal(batched[g], fused.argmax(axis=1))


def test_tie_rule_prefers_the_simpler_candidate_unless_the_gain_is_clear():
    generator = np.random.default_rng(0)
    simple = (generator.random(200) < 0.70).astype(float)
    slightly_better = simple.copy()
    slightly_better[np.flatnonzero(simple == 0)[:2]] = 1.0  # +1 point: within one standard error
    assert fusion.simplest_within_tie([simple, slightly_better]) == 0
    much_better = simple.copy()
    much_better[np.flatnonzero(simple == 0)[:30]] = 1.0  # +15 points
    assert fusion.simplest_within_tie([simple, much_better]) == 1
    assert fusion.simplest_within_tie([simple, much_better], eligible=[False, False]) == -1


def test_validation_clips_of_ravdess_speakers_are_folded_speaker_disjoint():
    generator = np.random.default_rng(11)
    actors = np.repeat([7, 10, 11], 60)
    targets = generator.integers(0, NUM_CLASSES, len(actors))
    logits = {}
    for name in ("a", "b"):
        z = generator.normal(0.0, 1.0, (len(actors), NUM_CLASSES))
        z[np.arange(len(actors)), targets] += 1.5
        logits[name] = z
    # Take ids VV-EE-II-SS-RR-AA: the last field is the actor.
    take_ids = [f"01-{i // 10 % 100:02d}-01-{i % 10:02d}-01-{a:02d}" for i, a in enumerate(actors)]
    tables = {
        name: prediction_table(softmax(z, axis=1), LABELS, take_ids, [LABELS[t] for t in targets])
        for name, z in logits.items()
    }
    aligned = fusion.align_modalities(tables)
    groups = fusion.alignment.clip_groups(aligned.clip_ids)
    assert sorted(set(groups)) == [7, 10, 11]
    folds = fusion.selection._folds(label_indices(aligned.true_labels, LABELS), 0, groups)
    assert len(folds) == 3
    held_out = np.concatenate([held for _, held in folds])
    assert sorted(held_out) == list(range(len(actors)))  # every clip scored exactly once
    for train, held in folds:
        assert not set(groups[train]) & set(groups[held])
    fitted = fusion.fit_fusion(tables, stacking=False)
    assert fitted.cv_folds == "speaker-disjoint 3-fold over 3 speakers"
    # The guard also counts the voices the deployed row wins and loses against the best single run.
    assert fitted.guard["speakers"] == 3
    assert fitted.guard["speakers_won"] + fitted.guard["speakers_lost"] <= 3
    assert f"worse on {fitted.guard['speakers_lost']} of 3 speakers" in fusion.io.fit_caption(fitted)
    assert fusion.fusion_parameters(fitted)["cv_folds"] == fitted.cv_folds
    # Clip ids that are not take ids carry no speaker: repeated stratified folds.
    plain = fusion.fit_fusion(tables_from_logits(logits, targets, "clip"), stacking=False)
    assert plain.cv_folds.endswith("stratified 5-fold")
    assert fusion.alignment.clip_groups(["01-01-01-01-01-07", "myclip"]) is None


def paired(wins: int, losses: int, ties: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip correctness of a candidate and a baseline that disagree on wins + losses clips."""
    candidate = np.r_[np.ones(wins), np.zeros(losses), np.ones(ties)]
    baseline = np.r_[np.zeros(wins), np.ones(losses), np.ones(ties)]
    return candidate, baseline


def test_guard_needs_an_exact_significant_gain_over_the_best_single_run():
    beats = fusion.selection.beats_significantly
    # 8 against 3 of 180: +2.8 points, but the exact sign test gives p = 0.11.
    assert not beats(*paired(8, 3, 169))
    assert beats(*paired(10, 0, 170))  # p = 0.001
    assert beats(*paired(12, 3, 165))  # p = 0.018
    assert not beats(*paired(3, 8, 169))  # a loss is never a gain
    # Significant but below one point of accuracy: not worth a fusion.
    assert not beats(*paired(6, 0, 994))
    # Fractional correctness (repeated folds) is rounded to whole discordant clips.
    candidate, baseline = paired(10, 0, 170)
    candidate[:10] = 0.95  # right in 19 of 20 repeats
    assert beats(candidate, baseline)
    candidate[:10] = 0.3  # 3 clips' worth of wins: p = 0.125
    assert not beats(candidate, baseline)


def test_guard_counts_the_speakers_a_fusion_wins_and_loses():
    signs = fusion.selection.speaker_signs
    candidate = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1], dtype=float)
    baseline = np.array([0, 1, 0, 1, 1, 0, 1, 1, 1], dtype=float)
    # Speaker 1 gains a clip, speaker 2 loses one, speaker 3 ties.
    assert signs(candidate, baseline, [1, 1, 1, 2, 2, 2, 3, 3, 3]) == {
        "speakers_won": 1,
        "speakers_lost": 1,
        "speakers": 3,
    }
    # One speaker with two clips won and one lost nets a tie for that voice.
    assert signs(candidate, baseline, [1, 1, 2, 1, 1, 2, 3, 3, 3])["speakers_won"] == 0
    assert signs(candidate, baseline, None) == {}
    with pytest.raises(ValueError, match="speakers for 9 clips"):
        signs(candidate, baseline, [1, 2])
