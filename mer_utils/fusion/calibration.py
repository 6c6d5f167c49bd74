"""Confidence and calibration of per-clip probabilities: entropy, temperature scaling, ECE."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

# Probabilities are clipped to this before taking logs, so log(0) never appears.
EPSILON = 1e-12
# Search interval for the temperature: below 1 sharpens, above 1 softens.
TEMPERATURE_BOUNDS = (0.05, 20.0)
# Number of equal-width confidence bins of the expected calibration error (Guo et al. 2017).
ECE_BINS = 15


def present_rows(probabilities: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows that hold probabilities (not NaN)."""
    return ~np.isnan(probabilities).any(axis=1)


def normalise(probabilities: np.ndarray) -> np.ndarray:
    """Clip to EPSILON and renormalise rows to sum to one (NaN rows stay NaN)."""
    clipped = np.clip(np.asarray(probabilities, dtype=float), EPSILON, None)
    return clipped / clipped.sum(axis=1, keepdims=True)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row; NaN for missing rows."""
    p = normalise(np.atleast_2d(probabilities))
    return -(p * np.log(p)).sum(axis=1)


def entropy_confidence(probabilities: np.ndarray) -> np.ndarray:
    """Confidence of each row, 1 - H(p) / log(K): 1 for one-hot, 0 for uniform, NaN if missing."""
    p = np.atleast_2d(np.asarray(probabilities, dtype=float))
    num_classes = p.shape[1]
    if num_classes < 2:
        raise ValueError("entropy confidence needs at least two classes")
    return np.clip(1.0 - entropy(p) / np.log(num_classes), 0.0, 1.0)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scale probabilities: softmax(log p / T). NaN rows stay NaN."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    probabilities = np.atleast_2d(np.asarray(probabilities, dtype=float))
    result = np.full(probabilities.shape, np.nan)
    present = present_rows(probabilities)
    logits = np.log(normalise(probabilities[present])) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    result[present] = scaled / scaled.sum(axis=1, keepdims=True)
    return result


def fit_temperature(probabilities: np.ndarray, targets: Sequence[int]) -> float:
    """Fit the temperature that minimises validation NLL (bounded scalar search; NaN rows ignored).

    ``targets`` are class indices. Over-confident models get T > 1, under-confident ones T < 1.
    """
    from scipy.optimize import minimize_scalar

    probabilities = np.atleast_2d(np.asarray(probabilities, dtype=float))
    targets = np.asarray(targets, dtype=int)
    if len(targets) != len(probabilities):
        raise ValueError(f"{len(targets)} targets for {len(probabilities)} rows of probabilities")
    present = present_rows(probabilities)
    if not present.any():
        raise ValueError("cannot fit a temperature: no rows with probabilities")
    log_probabilities = np.log(normalise(probabilities[present]))
    targets = targets[present]

    def loss(log_temperature: float) -> float:
        logits = log_probabilities / np.exp(log_temperature)
        logits -= logits.max(axis=1, keepdims=True)
        log_normaliser = np.log(np.exp(logits).sum(axis=1))
        return float(-(logits[np.arange(len(targets)), targets] - log_normaliser).mean())

    # Searching log T treats sharpening and softening symmetrically.
    result = minimize_scalar(
        loss, bounds=tuple(np.log(TEMPERATURE_BOUNDS)), method="bounded", options={"xatol": 1e-4}
    )
    return float(np.exp(result.x))


def expected_calibration_error(
    probabilities: np.ndarray, targets: Sequence[int], bins: int = ECE_BINS
) -> float:
    """Expected calibration error of the top-label confidence (equal-width bins; NaN rows ignored)."""
    curve = reliability_curve(probabilities, targets, bins)
    total = curve["count"].sum()
    if total == 0:
        return float("nan")
    gaps = (curve["accuracy"] - curve["confidence"]).abs().fillna(0.0)
    return float((curve["count"] * gaps).sum() / total)


def reliability_curve(
    probabilities: np.ndarray, targets: Sequence[int], bins: int = ECE_BINS
) -> pd.DataFrame:
    """Per confidence bin: mean top-label confidence, accuracy and count (the reliability diagram)."""
    probabilities = np.atleast_2d(np.asarray(probabilities, dtype=float))
    targets = np.asarray(targets, dtype=int)
    present = present_rows(probabilities)
    top = probabilities[present].max(axis=1)
    correct = probabilities[present].argmax(axis=1) == targets[present]
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins so a confidence of exactly 1 lands in the last bin.
    which = np.clip(np.searchsorted(edges, top, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        in_bin = which == b
        rows.append(
            {
                "bin_low": edges[b],
                "bin_high": edges[b + 1],
                "count": int(in_bin.sum()),
                "confidence": float(top[in_bin].mean()) if in_bin.any() else np.nan,
                "accuracy": float(correct[in_bin].mean()) if in_bin.any() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def calibrate(
    probabilities: Mapping[str, np.ndarray], temperatures: Mapping[str, float] | None
) -> dict[str, np.ndarray]:
    """Apply each modality's temperature (or only renormalise when temperatures is None)."""
    if temperatures is None:
        return {name: normalise(p) for name, p in probabilities.items()}
    missing = [name for name in probabilities if name not in temperatures]
    if missing:
        raise ValueError(f"no temperature for modalities {missing}")
    return {name: apply_temperature(p, temperatures[name]) for name, p in probabilities.items()}
