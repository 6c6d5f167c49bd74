"""Out-of-fold predictions (mer_utils.pipelines.out_of_fold) and fusion fitted on them (fusion.io, selection)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mer_utils import fusion
from mer_utils.config import RAVDESS_EMOTIONS
from mer_utils.evaluation import prediction_table
from mer_utils.fusion.selection import guard_power, guard_test, smallest_detectable_gain
from mer_utils.pipelines import base, out_of_fold
from mer_utils.runs import write_predictions, write_run_info

LABELS = list(RAVDESS_EMOTIONS)
NUM_CLASSES = len(LABELS)
# Clips per actor, as in RAVDESS speech.
CLIPS_PER_ACTOR = 60


def take_ids(actors: list[int]) -> list[str]:
    """RAVDESS-shaped take ids (the last field is the actor), CLIPS_PER_ACTOR per actor."""
    return [f"01-01-{c // 10:02d}-{c % 10:02d}-01-{a:02d}" for a in actors for c in range(CLIPS_PER_ACTOR)]


def actor_tables(actors: list[int], signals: dict[str, float], seed: int) -> dict[str, pd.DataFrame]:
    """Prediction tables of several runs on the clips of ``actors``: Gaussian logits + ``signal`` on the truth."""
    generator = np.random.default_rng(seed)
    clip_ids = take_ids(actors)
    targets = generator.integers(0, NUM_CLASSES, len(clip_ids))
    result = {}
    for name, signal in signals.items():
        logits = generator.normal(0.0, 1.0, (len(clip_ids), NUM_CLASSES))
        logits[np.arange(len(clip_ids)), targets] += signal
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        result[name] = prediction_table(probabilities, LABELS, clip_ids, [LABELS[t] for t in targets])
    return result


# The default RAVDESS split of 18 actors: 12 training, 3 validation, 3 test actors.
TRAIN_ACTORS = [1, 2, 3, 4, 5, 6, 8, 9, 12, 14, 15, 16]
VAL_ACTORS = [7, 10, 11]
TEST_ACTORS = [13, 17, 18]


def write_runs(root, signals: dict[str, float], seed: int, oof: tuple[str, ...]) -> list:
    """Run folders of synthetic runs: val and test tables, and predictions_oof.csv for the runs in ``oof``."""
    everyone = actor_tables(TRAIN_ACTORS + VAL_ACTORS + TEST_ACTORS, signals, seed)
    val_ids, test_ids = set(take_ids(VAL_ACTORS)), set(take_ids(TEST_ACTORS))
    oof_ids = set(take_ids(TRAIN_ACTORS)) | val_ids
    runs = []
    for name, table in everyone.items():
        run_dir = root / name
        write_run_info(run_dir, "audio", LABELS, seed=42)
        write_predictions(run_dir, "val", table[table["clip_id"].isin(val_ids)])
        write_predictions(run_dir, "test", table[table["clip_id"].isin(test_ids)])
        if name in oof:
            part = table[table["clip_id"].isin(oof_ids)]
            folds = out_of_fold.actor_folds([int(clip[-2:]) for clip in part["clip_id"]], seed=seed)
            write_predictions(run_dir, "oof", part.assign(fold=folds))
        runs.append(run_dir)
    return runs


# --- out-of-fold predictions ------------------------------------------------------------------------


def test_actor_folds_keep_each_actor_in_one_fold_and_use_every_fold():
    actors = np.repeat(np.arange(1, 16), 60)
    folds = out_of_fold.actor_folds(actors, folds=5, seed=3)
    per_actor = pd.Series(folds).groupby(actors).nunique()
    assert (per_actor == 1).all()
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    # 15 actors in 5 folds: three actors each.
    assert pd.Series(folds).groupby(folds).apply(lambda f: len(np.unique(actors[f.index]))).eq(3).all()
    assert np.array_equal(folds, out_of_fold.actor_folds(actors, folds=5, seed=3))
    # Fewer actors than folds: one fold per actor.
    assert len(np.unique(out_of_fold.actor_folds([4, 4, 9, 9, 2], folds=5))) == 3
    with pytest.raises(ValueError, match="at least 2 actors"):
        out_of_fold.actor_folds([7, 7, 7])


def test_every_clip_is_predicted_by_a_model_that_never_saw_its_actor():
    generator = np.random.default_rng(0)
    actors = np.repeat(np.arange(1, 16), 20)
    x = np.column_stack([actors, generator.normal(size=len(actors))])
    y = generator.integers(0, 3, len(actors))
    seen = []

    def fit_predict(x_train, y_train, x_held):
        trained_on, held = set(x_train[:, 0].astype(int)), set(x_held[:, 0].astype(int))
        seen.append((trained_on, held))
        # A model that memorised its actors would answer with the actor's own label share.
        return np.tile(np.bincount(y_train, minlength=3) / len(y_train), (len(x_held), 1))

    probabilities, folds = out_of_fold.out_of_fold_probabilities(x, y, actors, fit_predict, folds=5, seed=1)
    assert len(seen) == 5
    for trained_on, held in seen:
        assert not trained_on & held
        assert trained_on | held == set(range(1, 16))
    assert not np.isnan(probabilities).any() and probabilities.shape == (len(actors), 3)
    for k in range(5):
        assert not set(actors[folds == k]) & set(actors[folds != k])


def test_a_network_run_states_why_it_has_no_out_of_fold_predictions():
    reason = out_of_fold.network_reason(90.0)
    # Its own cost of the refits, and why the frozen-feature shortcut is not taken.
    assert "5 x 90 s = 8 min" in reason
    assert "Refitting only the last layer" in reason and "over-trust" in reason
    assert out_of_fold.skipped(reason) == {"written": False, "reason": reason}


@pytest.mark.slow
def test_sklearn_audio_run_writes_out_of_fold_predictions_of_every_training_and_validation_clip(
    demo_dir, tmp_path
):
    run = tmp_path / "logreg"
    base.train("audio", demo_dir, run, seed=3, model="logreg", smoke=True, progress=False)
    info = json.loads((run / "run.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    oof = pd.read_csv(run / out_of_fold.OOF_FILE, dtype={"clip_id": str})
    val = pd.read_csv(run / "predictions_val.csv", dtype={"clip_id": str})
    test = pd.read_csv(run / "predictions_test.csv", dtype={"clip_id": str})
    assert list(oof.columns) == [*val.columns, out_of_fold.FOLD_COLUMN]
    actors = oof["clip_id"].str[-2:].astype(int)
    assert set(actors) == set(info["split"]["train"]) | set(info["split"]["val"])
    assert set(val["clip_id"]) <= set(oof["clip_id"]) and not set(test["clip_id"]) & set(oof["clip_id"])
    assert oof["clip_id"].is_unique and len(oof) == 90  # 3 of the 4 demo actors, 30 takes each
    assert (oof.groupby(actors)[out_of_fold.FOLD_COLUMN].nunique() == 1).all()
    assert oof[out_of_fold.FOLD_COLUMN].nunique() == 3
    probabilities = oof[[f"prob_{label}" for label in LABELS]].to_numpy(float)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert info["out_of_fold"]["written"] and info["out_of_fold"]["file"] == out_of_fold.OOF_FILE
    assert metrics["out_of_fold"]["n"] == 90 and 0.0 <= metrics["out_of_fold"]["accuracy"] <= 1.0
    # A training clip's out-of-fold answer is not the saved model's (which heard its actor).
    train_clip = oof[actors.isin(info["split"]["train"]).to_numpy()]
    saved = base.predict_table(run, demo_dir).set_index("clip_id").loc[train_clip["clip_id"]]
    assert not np.allclose(
        train_clip[[f"prob_{label}" for label in LABELS]].to_numpy(float),
        saved[[f"prob_{label}" for label in LABELS]].to_numpy(float),
        atol=1e-3,
    )


# --- fusion fitted on them ----------------------------------------------------------------------------


def test_fusion_is_fitted_on_out_of_fold_predictions_when_every_run_has_them(tmp_path):
    runs = write_runs(tmp_path, {"a": 1.4, "b": 1.3}, seed=5, oof=("a", "b"))
    fusion.fuse_runs(runs, tmp_path / "out", n_boot=5)
    parameters = fusion.load_fusion_parameters(tmp_path / "out")
    assert parameters["fitted_on"] == fusion.OUT_OF_FOLD_FIT
    assert parameters["fit_data"]["n"] == 15 * CLIPS_PER_ACTOR
    assert parameters["fit_data"]["actors"] == sorted(TRAIN_ACTORS + VAL_ACTORS)
    assert parameters["guard"]["n"] == 15 * CLIPS_PER_ACTOR
    assert parameters["cv_folds"].startswith("speaker-disjoint 5-fold over 15 speakers")
    assert parameters["modalities"]["audio-a"]["val_n"] == 15 * CLIPS_PER_ACTOR
    assert (
        "out-of-fold predictions of 15 actors (900 clips)"
        in (tmp_path / "out" / "fusion_table.md").read_text()
    )


def test_without_out_of_fold_predictions_in_every_run_fusion_falls_back_to_validation(tmp_path):
    runs = write_runs(tmp_path, {"a": 1.4, "b": 1.3}, seed=5, oof=("a",))
    fusion.fuse_runs(runs, tmp_path / "out", n_boot=5)
    parameters = fusion.load_fusion_parameters(tmp_path / "out")
    assert parameters["fitted_on"] == fusion.VALIDATION_FIT
    assert parameters["fit_data"]["runs_without_out_of_fold"] == ["audio-b"]
    assert parameters["fit_data"]["n"] == parameters["guard"]["n"] == 3 * CLIPS_PER_ACTOR
    assert "have no predictions_oof.csv" in (tmp_path / "out" / "fusion_table.md").read_text()
    # Asked for, validation is used although every run has out-of-fold predictions.
    runs = write_runs(tmp_path / "both", {"a": 1.4, "b": 1.3}, seed=5, oof=("a", "b"))
    fusion.fuse_runs(runs, tmp_path / "asked", n_boot=5, fit_on="validation")
    assert fusion.load_fusion_parameters(tmp_path / "asked")["fitted_on"] == fusion.VALIDATION_FIT
    with pytest.raises(ValueError, match="fit_on must be one of"):
        fusion.fuse_runs(runs, tmp_path / "bad", n_boot=5, fit_on="test")


def test_mer_predict_without_fusion_json_fits_on_the_same_out_of_fold_predictions(tmp_path):
    runs = write_runs(tmp_path, {"a": 1.4, "b": 1.3}, seed=5, oof=("a", "b"))
    now = fusion.fusion_parameters_for_runs(runs)
    assert now["fitted_on"] == fusion.OUT_OF_FOLD_FIT and now["fit_data"]["n"] == 15 * CLIPS_PER_ACTOR
    names = fusion.modality_names(runs)
    val, test, _ = fusion.read_run_tables(runs)
    tables, _, _ = fusion.fitting_tables(names, val, test)
    fitted = fusion.fit_fusion(tables, stacking=False, fitted_on=fusion.OUT_OF_FOLD_FIT)
    assert now["method"] == fitted.chosen
    for name in names:
        assert now["modalities"][name]["temperature"] == pytest.approx(fitted.temperatures[name])
    # Without them (one run lacks the file), the validation fit of before.
    (runs[1] / out_of_fold.OOF_FILE).unlink()
    assert fusion.fusion_parameters_for_runs(runs)["fitted_on"] == fusion.VALIDATION_FIT


def test_out_of_fold_clips_of_the_test_actors_are_never_fitted_on(tmp_path):
    runs = write_runs(tmp_path, {"a": 1.4, "b": 1.3}, seed=5, oof=("a", "b"))
    # Run b was trained on another split: its out-of-fold file also holds test actor 13.
    everyone = actor_tables([*TRAIN_ACTORS, *VAL_ACTORS, 13], {"b": 1.3}, seed=9)["b"]
    write_predictions(runs[1], "oof", everyone.assign(fold=0))
    names = fusion.modality_names(runs)
    val, test, _ = fusion.read_run_tables(runs)
    tables, fitted_on, _ = fusion.fitting_tables(names, val, test)
    assert fitted_on == fusion.OUT_OF_FOLD_FIT
    for table in tables.values():
        assert not set(table["clip_id"]) & set(take_ids(TEST_ACTORS))


def test_a_gain_too_small_to_show_on_three_actors_passes_the_guard_on_fifteen():
    # A strong and a weak run with independent errors: fusing them gains two to four points, which
    # the guard's test confirms on the 900 out-of-fold clips of 15 actors every time, but on the
    # 180 validation clips of 3 actors only now and then.
    val_ids = set(take_ids(VAL_ACTORS))
    passed = {fusion.OUT_OF_FOLD_FIT: [], fusion.VALIDATION_FIT: []}
    for seed in range(8):
        everyone = actor_tables(TRAIN_ACTORS + VAL_ACTORS, {"strong": 2.0, "weak": 0.9}, seed)
        validation = {name: table[table["clip_id"].isin(val_ids)] for name, table in everyone.items()}
        for fitted_on, tables in ((fusion.OUT_OF_FOLD_FIT, everyone), (fusion.VALIDATION_FIT, validation)):
            fitted = fusion.fit_fusion(tables, stacking=False, fitted_on=fitted_on)
            assert fitted.guard["n"] == len(next(iter(tables.values())))
            assert fitted.guard["passed"] == (not fitted.chosen.startswith(fusion.SINGLE_PREFIX))
            passed[fitted_on].append(fitted.guard["passed"])
    assert all(passed[fusion.OUT_OF_FOLD_FIT])
    assert sum(passed[fusion.VALIDATION_FIT]) <= 6


def test_the_guard_still_keeps_the_best_single_run_when_fusion_does_not_win_out_of_fold(tmp_path):
    runs = write_runs(tmp_path, {"strong": 2.5, "noise": 0.0}, seed=2, oof=("strong", "noise"))
    table = fusion.fuse_runs(runs, tmp_path / "out", n_boot=5)
    parameters = fusion.load_fusion_parameters(tmp_path / "out")
    assert parameters["fitted_on"] == fusion.OUT_OF_FOLD_FIT
    assert parameters["method"] == "single_audio-strong" and not parameters["guard"]["passed"]
    assert bool(table.loc["single_audio-strong", "chosen"])
    mcnemar = json.loads((tmp_path / "out" / "mcnemar.json").read_text())
    assert mcnemar["guard"] == parameters["guard"] and mcnemar["chosen_by"].startswith("out-of-fold")


# --- the power of the guard -----------------------------------------------------------------------------


def test_guard_power_matches_a_simulation_of_the_guard():
    generator = np.random.default_rng(4)
    n, share, gain = 180, 0.2, 0.05
    q = 0.5 * (1 + gain / share)
    passed = 0
    for _ in range(2000):
        discordant = generator.random(n) < share
        fusion_wins = generator.random(n) < q
        candidate = (discordant & fusion_wins).astype(float)
        baseline = (discordant & ~fusion_wins).astype(float)
        passed += guard_test(candidate, baseline)["passed"]
    assert guard_power(n, gain, share) == pytest.approx(passed / 2000, abs=0.03)


def test_nine_hundred_clips_detect_gains_that_one_hundred_eighty_cannot():
    assert guard_power(900, 0.04, 0.2) > guard_power(180, 0.04, 0.2)
    assert guard_power(180, 0.08, 0.2) > guard_power(180, 0.04, 0.2)
    small, large = smallest_detectable_gain(900, 0.2), smallest_detectable_gain(180, 0.2)
    assert 0.0 < small < large < 0.2
    assert guard_power(180, large, 0.2) >= 0.8 > guard_power(180, large - 0.002, 0.2)
    # Roughly sqrt(5) times smaller with five times the clips.
    assert large / small == pytest.approx(np.sqrt(5), rel=0.25)
    assert np.isnan(smallest_detectable_gain(10, 0.05))
    with pytest.raises(ValueError, match="impossible"):
        guard_power(180, 0.3, 0.2)
