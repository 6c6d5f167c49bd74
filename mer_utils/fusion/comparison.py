"""Score every fusion method on held-out tables: the results table, calibration, per-clip weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mer_utils.fusion.alignment import AlignedProbabilities, align_modalities, label_indices
from mer_utils.fusion.calibration import (
    apply_temperature,
    calibrate,
    entropy_confidence,
    expected_calibration_error,
    present_rows,
)
from mer_utils.fusion.fitting import (
    GUARDED_METHOD,
    MAIN_METHOD,
    METHOD_DESCRIPTIONS,
    SINGLE_PREFIX,
    VALIDATION_FIT,
    FittedFusion,
    chosen_weights,
    fit_fusion,
    fuse_with_method,
    method_names,
)
from mer_utils.fusion.methods import entropy_trust_fusion
from mer_utils.fusion.selection import FAMILY_METHODS
from mer_utils.fusion.statistics import BOOTSTRAP_SAMPLES, mcnemar_test, method_metrics, predicted_indices


@dataclass
class FusionComparison:
    """Everything compare_fusion_methods computed, for the table, the figures and the notebook."""

    table: pd.DataFrame
    metrics: dict[str, dict]
    fitted: FittedFusion
    test: AlignedProbabilities
    targets: np.ndarray
    scores: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]  # the seed's rule, per modality (n,)
    mcnemar: dict
    chosen_weights: dict[str, np.ndarray] | None = None  # the validation-chosen default method


TABLE_COLUMNS = [
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "macro_f1",
    "macro_f1_ci_low",
    "macro_f1_ci_high",
    "n",
]


def describe(fitted: FittedFusion, method: str) -> str:
    """One line on a table row, with the hyper-parameters validation chose for a family row."""
    if method.startswith(SINGLE_PREFIX):
        text = f"{method[len(SINGLE_PREFIX) :]} alone"
    else:
        text = METHOD_DESCRIPTIONS.get(method, method)
    if method in FAMILY_METHODS[1:]:
        p = fitted.parameters_of(method)
        text += f" (gamma {p.gamma:g}, alpha {p.confidence_exponent:g}, trust {p.trust_kind})"
    if method == GUARDED_METHOD:
        text += f": {fitted.chosen}"
    return text


def score_methods(
    fitted: FittedFusion,
    tables: Mapping[str, pd.DataFrame],
    seed: int = 42,
    n_boot: int = BOOTSTRAP_SAMPLES,
) -> tuple[AlignedProbabilities, np.ndarray, dict[str, np.ndarray], dict[str, dict], pd.DataFrame]:
    """Score every method of a fitted fusion on prediction tables: (aligned, targets, scores, metrics, table).

    The table has one row per method (single runs first) with accuracy and macro-F1 and their 95%
    bootstrap intervals, n, the cross-validated validation accuracy behind the choice, whether the
    row is the validation-chosen default, and a description.
    """
    if set(tables) != set(fitted.modalities):
        raise ValueError(f"modalities {list(tables)} differ from validation {fitted.modalities}")
    # A run that could use none of the clips (an empty table) is missing on every clip.
    aligned = align_modalities({name: table for name, table in tables.items() if len(table)})
    if aligned.labels != fitted.labels:
        raise ValueError(f"label order {aligned.labels} differs from validation {fitted.labels}")
    nothing = np.full((len(aligned.clip_ids), len(fitted.labels)), np.nan)
    probabilities = {name: aligned.probabilities.get(name, nothing) for name in fitted.modalities}
    aligned = aligned._replace(probabilities=probabilities)
    targets = label_indices(aligned.true_labels, aligned.labels)
    scores, metrics = {}, {}
    for method in method_names(fitted.modalities):
        if method == "stacking" and fitted.stacking is None:
            continue  # runs validated on different samples: no shared clips to fit stacking on
        scores[method] = fuse_with_method(fitted, probabilities, method)
        metrics[method] = method_metrics(
            targets, predicted_indices(scores[method]), fitted.labels, n_boot, seed
        )
    table = pd.DataFrame({m: {c: metrics[m][c] for c in TABLE_COLUMNS} for m in metrics}).T
    table["n"] = table["n"].astype(int)
    table["val_cv_accuracy"] = [fitted.cv_accuracy.get(m, np.nan) for m in table.index]
    table["chosen"] = [m == fitted.chosen for m in table.index]
    table["description"] = [describe(fitted, m) for m in table.index]
    table.index.name = "method"
    return aligned, targets, scores, metrics, table


def best_single_method(fitted: FittedFusion) -> str:
    """The single run with the highest validation trust (never chosen on test)."""
    return f"{SINGLE_PREFIX}{max(fitted.modalities, key=lambda name: fitted.trust[name])}"


def mcnemar_against_best_single(
    fitted: FittedFusion, targets: np.ndarray, scores: Mapping[str, np.ndarray]
) -> dict:
    """McNemar of the chosen fusion (and of the seed's rule) against the best single run on validation."""
    best_single = best_single_method(fitted)
    method = GUARDED_METHOD if fitted.chosen.startswith(SINGLE_PREFIX) else fitted.chosen
    result = {
        "method_a": method,
        "method_b": best_single,
        "chosen_by": f"{fitted.fitted_on} {fitted.trust_metric}",
        "guard": dict(fitted.guard),
    }
    result.update(
        mcnemar_test(targets, predicted_indices(scores[method]), predicted_indices(scores[best_single]))
    )
    seed_rule = mcnemar_test(
        targets, predicted_indices(scores[MAIN_METHOD]), predicted_indices(scores[best_single])
    )
    result["seed_rule"] = {"method_a": MAIN_METHOD, "method_b": best_single, **seed_rule}
    return result


def run_comparison(
    val_tables: Mapping[str, pd.DataFrame],
    test_tables: Mapping[str, pd.DataFrame],
    trust: str = "macro_f1",
    seed: int = 42,
    n_boot: int = BOOTSTRAP_SAMPLES,
    fitted_on: str = VALIDATION_FIT,
) -> FusionComparison:
    """Fit on validation (or, with ``fitted_on="out-of-fold"``, on the out-of-fold tables given as
    ``val_tables``), score every method on test, with CIs and McNemar (full result)."""
    fitted = fit_fusion(val_tables, trust=trust, seed=seed, fitted_on=fitted_on)
    return compare_fitted(fitted, test_tables, seed=seed, n_boot=n_boot)


def compare_fitted(
    fitted: FittedFusion, tables: Mapping[str, pd.DataFrame], seed: int = 42, n_boot: int = BOOTSTRAP_SAMPLES
) -> FusionComparison:
    """Score a fitted fusion on held-out tables (test split, or another data set)."""
    test, targets, scores, metrics, table = score_methods(fitted, tables, seed=seed, n_boot=n_boot)
    weights = entropy_trust_fusion(test.probabilities, fitted.trust, fitted.temperatures)[1]
    mcnemar = mcnemar_against_best_single(fitted, targets, scores)
    return FusionComparison(
        table,
        metrics,
        fitted,
        test,
        targets,
        scores,
        weights,
        mcnemar,
        chosen_weights(fitted, test.probabilities),
    )


def compare_fusion_methods(
    val_tables: Mapping[str, pd.DataFrame],
    test_tables: Mapping[str, pd.DataFrame],
    trust: str = "macro_f1",
    seed: int = 42,
    n_boot: int = BOOTSTRAP_SAMPLES,
) -> pd.DataFrame:
    """The results table: one row per method (each single modality first), accuracy and macro-F1 with CIs."""
    return run_comparison(val_tables, test_tables, trust=trust, seed=seed, n_boot=n_boot).table


def calibration_table(comparison: FusionComparison) -> pd.DataFrame:
    """Per modality: fitted temperature, trust and ECE before/after calibration on validation and test."""
    fitted = comparison.fitted
    rows = {}
    for name in fitted.modalities:
        p = comparison.test.probabilities[name]
        present = present_rows(p)
        targets = comparison.targets[present]
        rows[name] = {
            "temperature": fitted.temperatures[name],
            "trust": fitted.trust[name],
            "val_ece_before": fitted.validation[name]["ece_before"],
            "val_ece_after": fitted.validation[name]["ece_after"],
            "test_ece_before": expected_calibration_error(p[present], targets),
            "test_ece_after": expected_calibration_error(
                apply_temperature(p[present], fitted.temperatures[name]), targets
            ),
        }
    return pd.DataFrame(rows).T.rename_axis("modality")


# ----------------------------------------------------------------------------- per-clip weights


def weight_examples(comparison: FusionComparison, limit: int = 5) -> pd.DataFrame:
    """Clips where the entropy x trust weights rescued (right, plain mean wrong) or hurt a prediction.

    One row per clip with its outcome, true and predicted labels, and each modality's prediction,
    confidence and weight.
    """
    labels = comparison.fitted.labels
    targets = comparison.targets
    ours = predicted_indices(comparison.scores[MAIN_METHOD])
    mean = predicted_indices(comparison.scores["mean"])
    calibrated = calibrate(comparison.test.probabilities, comparison.fitted.temperatures)
    rows = []
    for outcome, mask in (
        ("rescued", (ours == targets) & (mean != targets)),
        ("hurt", (ours != targets) & (mean == targets)),
    ):
        for i in np.flatnonzero(mask)[:limit]:
            row = {
                "outcome": outcome,
                "clip_id": comparison.test.clip_ids[i],
                "true_label": labels[targets[i]],
                "entropy_trust": labels[ours[i]],
                "mean": labels[mean[i]],
            }
            for name, p in calibrated.items():
                available = not np.isnan(p[i]).any()
                row[f"{name}_pred"] = labels[int(p[i].argmax())] if available else "<unavailable>"
                row[f"{name}_confidence"] = (
                    float(entropy_confidence(p[i : i + 1])[0]) if available else np.nan
                )
                row[f"{name}_weight"] = float(comparison.weights[name][i])
            rows.append(row)
    return pd.DataFrame(rows)


def weights_by_emotion(
    comparison: FusionComparison, statistic: str = "mean", chosen: bool = False
) -> pd.DataFrame:
    """Entropy x trust weight of each modality per true emotion (rows emotions, columns modalities).

    ``statistic`` is a pandas groupby reduction: "mean" (the default) or "std" for the spread over
    clips. ``chosen`` shows the validation-chosen method's weights instead of the seed's rule.
    """
    labels = comparison.fitted.labels
    weights = comparison.chosen_weights if chosen and comparison.chosen_weights else comparison.weights
    frame = pd.DataFrame(weights)
    frame["true_label"] = [labels[t] for t in comparison.targets]
    summary = frame.groupby("true_label").agg(statistic)
    return summary.reindex([label for label in labels if label in summary.index])
