"""Scores and significance: fast accuracy / macro-F1, bootstrap intervals, McNemar's test."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mer_utils.evaluation import classification_metrics
from mer_utils.fusion.calibration import present_rows

# Bootstrap resamples for the 95% confidence intervals of the results table.
BOOTSTRAP_SAMPLES = 1000
# Two-sided level of the bootstrap confidence intervals.
CONFIDENCE_LEVEL = 0.95
# Below this many discordant pairs McNemar uses the exact binomial test, above it chi-square.
MCNEMAR_EXACT_LIMIT = 25
# Validation metrics that may serve as a modality's trust.
TRUST_METRICS = ("accuracy", "macro_f1")


def score(targets: np.ndarray, predictions: np.ndarray, metric: str | Callable, num_classes: int) -> float:
    """Accuracy or macro-F1 of class indices (a prediction of -1 means 'no answer' and counts as wrong)."""
    if callable(metric):
        return float(metric(targets, predictions))
    if metric == "accuracy":
        return float(np.mean(targets == predictions)) if len(targets) else float("nan")
    if metric == "macro_f1":
        return macro_f1(targets, predictions, num_classes)
    raise ValueError(f"unknown metric '{metric}'; choose one of {TRUST_METRICS} or pass a function")


def macro_f1(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    """Macro-F1 over classes 0..K-1, as sklearn's f1_score(labels=range(K), zero_division=0), but fast.

    The bootstrap calls it thousands of times; -1 predictions ('no answer') count as misses.
    """
    targets = np.asarray(targets, dtype=int)
    predictions = np.asarray(predictions, dtype=int)
    hits = targets == predictions
    true_positives = np.bincount(targets[hits], minlength=num_classes)[:num_classes]
    support = np.bincount(targets, minlength=num_classes)[:num_classes]
    answered = predictions[predictions >= 0]
    predicted = np.bincount(answered, minlength=num_classes)[:num_classes]
    denominator = support + predicted
    scores = np.divide(2.0 * true_positives, denominator, out=np.zeros(num_classes), where=denominator > 0)
    return float(scores.mean())


def predicted_indices(scores: np.ndarray) -> np.ndarray:
    """Argmax per row, -1 for rows without an answer (NaN)."""
    scores = np.asarray(scores, dtype=float)
    present = present_rows(scores)
    predictions = np.full(len(scores), -1, dtype=int)
    predictions[present] = scores[present].argmax(axis=1)
    return predictions


def bootstrap_ci(
    targets: Sequence[int],
    predictions: Sequence[int],
    metric: str | Callable = "accuracy",
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = 42,
    level: float = CONFIDENCE_LEVEL,
    num_classes: int | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a metric over clips (resampled with replacement).

    ``metric`` is 'accuracy', 'macro_f1' or a function (targets, predictions) -> float.
    """
    targets = np.asarray(targets)
    predictions = np.asarray(predictions)
    if len(targets) != len(predictions) or len(targets) == 0:
        raise ValueError(
            f"need equal, non-zero numbers of targets and predictions, got {len(targets)}, {len(predictions)}"
        )
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if num_classes is None:
        num_classes = int(max(targets.max(), predictions.max())) + 1
    generator = np.random.default_rng(seed)
    n = len(targets)
    values = np.empty(n_boot)
    for b in range(n_boot):
        sample = generator.integers(0, n, n)
        values[b] = score(targets[sample], predictions[sample], metric, num_classes)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def mcnemar_test(targets: Sequence[int], predictions_a: Sequence[int], predictions_b: Sequence[int]) -> dict:
    """McNemar's paired test of two classifiers on the same clips.

    Returns the discordant counts (a_only_correct, b_only_correct), the statistic, the two-sided
    p-value and the variant used: exact binomial when there are fewer than MCNEMAR_EXACT_LIMIT
    discordant pairs, else chi-square with continuity correction.
    """
    from scipy.stats import binom, chi2

    targets = np.asarray(targets)
    correct_a = np.asarray(predictions_a) == targets
    correct_b = np.asarray(predictions_b) == targets
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    discordant = a_only + b_only
    if discordant == 0:
        statistic, p_value, variant = 0.0, 1.0, "exact"
    elif discordant < MCNEMAR_EXACT_LIMIT:
        statistic = float(min(a_only, b_only))
        p_value = float(min(1.0, 2.0 * binom.cdf(min(a_only, b_only), discordant, 0.5)))
        variant = "exact"
    else:
        statistic = float((abs(a_only - b_only) - 1) ** 2 / discordant)
        p_value = float(chi2.sf(statistic, 1))
        variant = "chi2_continuity"
    return {
        "a_only_correct": a_only,
        "b_only_correct": b_only,
        "both_correct": int(np.sum(correct_a & correct_b)),
        "both_wrong": int(np.sum(~correct_a & ~correct_b)),
        "statistic": statistic,
        "p_value": p_value,
        "test": variant,
        "n": len(targets),
    }


def method_metrics(
    targets: np.ndarray,
    predictions: np.ndarray,
    labels: Sequence[str],
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = 42,
) -> dict:
    """classification_metrics plus 95% bootstrap intervals of accuracy and macro-F1."""
    predicted_labels = [labels[i] if i >= 0 else "<unavailable>" for i in predictions]
    metrics = classification_metrics([labels[i] for i in targets], predicted_labels, labels)
    for metric in ("accuracy", "macro_f1"):
        low, high = bootstrap_ci(
            targets, predictions, metric, n_boot=n_boot, seed=seed, num_classes=len(labels)
        )
        metrics[f"{metric}_ci_low"], metrics[f"{metric}_ci_high"] = low, high
    metrics["unavailable"] = int(np.sum(predictions < 0))
    return metrics
