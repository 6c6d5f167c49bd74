"""Robustness curves: every method while one run goes missing or its input is degraded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mer_utils.fusion.alignment import AlignedProbabilities, align_modalities, label_indices
from mer_utils.fusion.calibration import present_rows
from mer_utils.fusion.fitting import FittedFusion, fuse_with_method, method_names
from mer_utils.fusion.statistics import predicted_indices, score

# Shares of test clips dropped from one modality in the missing-modality curves.
MISSING_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def simulate_missing(
    probabilities: Mapping[str, np.ndarray], modality: str, share: float, seed: int = 42
) -> dict[str, np.ndarray]:
    """Copy of ``probabilities`` with ``modality`` removed (NaN) on a random share of the clips.

    Only clips where another modality is present can lose it (so every clip keeps an answer);
    ``share`` is a fraction of all clips, capped by that.
    """
    if modality not in probabilities:
        raise ValueError(f"no modality '{modality}' (have {list(probabilities)})")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    result = {name: np.array(p, dtype=float, copy=True) for name, p in probabilities.items()}
    target = result[modality]
    others = [present_rows(p) for name, p in result.items() if name != modality]
    if not others:
        raise ValueError("simulate_missing needs at least two modalities")
    candidates = np.flatnonzero(present_rows(target) & np.any(others, axis=0))
    count = min(len(candidates), int(round(share * len(target))))
    drop = np.random.default_rng(seed).choice(candidates, size=count, replace=False)
    target[drop] = np.nan
    return result


def _curve_rows(
    fitted: FittedFusion,
    probabilities: Mapping[str, np.ndarray],
    targets: np.ndarray,
    methods: Sequence[str],
    extra: dict,
) -> list[dict]:
    """Accuracy and macro-F1 of each method on one (modified) test set."""
    rows = []
    for method in methods:
        predictions = predicted_indices(fuse_with_method(fitted, probabilities, method))
        rows.append(
            {
                **extra,
                "method": method,
                "accuracy": score(targets, predictions, "accuracy", len(fitted.labels)),
                "macro_f1": score(targets, predictions, "macro_f1", len(fitted.labels)),
            }
        )
    return rows


def missing_modality_curve(
    fitted: FittedFusion,
    test: AlignedProbabilities,
    shares: Sequence[float] = MISSING_SHARES,
    modalities: Sequence[str] | None = None,
    seed: int = 42,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Accuracy of every method while one modality goes missing on a growing share of test clips.

    Returns long format: missing_modality, share, method, accuracy, macro_f1.
    """
    targets = label_indices(test.true_labels, test.labels)
    methods = list(methods) if methods is not None else method_names(fitted.modalities)
    rows = []
    for modality in modalities or fitted.modalities:
        for share in shares:
            damaged = simulate_missing(test.probabilities, modality, share, seed=seed)
            extra = {"missing_modality": modality, "share": float(share)}
            rows.extend(_curve_rows(fitted, damaged, targets, methods, extra))
    return pd.DataFrame(rows)


def degraded_modality_curve(
    fitted: FittedFusion,
    test_tables: Mapping[str, pd.DataFrame],
    modality: str,
    degraded_tables: Mapping[float, pd.DataFrame],
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Accuracy of every method when ``modality``'s test table is replaced by degraded versions.

    ``degraded_tables`` maps a level (SNR in dB, occluded share, ...) to the prediction table the
    modality's model produced on degraded test input. Returns: modality, level, method, accuracy, macro_f1.
    """
    if modality not in test_tables:
        raise ValueError(f"no modality '{modality}' in the test tables (have {list(test_tables)})")
    if not degraded_tables:
        raise ValueError(f"no degraded tables for '{modality}'")
    methods = list(methods) if methods is not None else method_names(fitted.modalities)
    test_clips = set().union(*(set(table["clip_id"].astype(str)) for table in test_tables.values()))
    rows = []
    for level, table in degraded_tables.items():
        # Only the test clips count; a degraded table may hold more (e.g. every clip of the data).
        in_test = table["clip_id"].astype(str).isin(test_clips)
        if not in_test.any():
            raise ValueError(
                f"the degraded '{modality}' table at level {level} shares no clip_id with the test tables"
            )
        aligned = align_modalities({**test_tables, modality: table[in_test]})
        targets = label_indices(aligned.true_labels, aligned.labels)
        probabilities = {name: aligned.probabilities[name] for name in fitted.modalities}
        extra = {
            "modality": modality,
            "level": level,
            "unavailable": int(np.isnan(probabilities[modality]).any(axis=1).sum()),
        }
        rows.extend(_curve_rows(fitted, probabilities, targets, methods, extra))
    return pd.DataFrame(rows)
