"""Fit every fusion method on validation tables and apply any of them by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mer_utils.fusion.alignment import align_modalities, clip_groups, label_indices
from mer_utils.fusion.calibration import (
    apply_temperature,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    present_rows,
)
from mer_utils.fusion.methods import (
    StackingModel,
    class_trust_from_validation,
    confidence_fusion,
    entropy_trust_fusion,
    fit_stacking,
    inverse_entropy_fusion,
    majority_vote_fusion,
    mean_fusion,
    product_fusion,
    trust_from_validation,
    trust_fusion,
)
from mer_utils.fusion.selection import (
    FAMILY_METHODS,
    SEED_RULE,
    FamilyParameters,
    fuse_family,
    select_method,
)
from mer_utils.fusion.statistics import score

# The row that applies the validation choice, falling back to the best single run (the guard).
GUARDED_METHOD = "entropy_trust_guarded"
# The fusion methods compared in the table, in display order (single modalities come first).
FUSION_METHODS = (
    "mean",
    "trust_only",
    "confidence_only",
    "inverse_entropy",
    "product",
    "majority_vote",
    "stacking",
    "entropy_trust_uncalibrated",
    *FAMILY_METHODS,
    GUARDED_METHOD,
)
# One line per method for the markdown table and the notebook.
METHOD_DESCRIPTIONS = {
    "mean": "plain mean of calibrated probabilities",
    "trust_only": "weights = validation trust (fixed per modality)",
    "confidence_only": "weights = per-clip confidence 1 - H/log K",
    "inverse_entropy": "weights = 1/H (Misra, Bourlard & Tyagi, ICASSP 2003)",
    "product": "product of calibrated probabilities (naive Bayes)",
    "majority_vote": "majority vote of argmax labels (ties: mean probability)",
    "stacking": "logistic regression on validation probabilities",
    "entropy_trust_uncalibrated": "trust x confidence, raw probabilities",
    "entropy_trust": "trust x confidence, temperature-calibrated (the seed's rule)",
    "entropy_trust_gamma": "trust^gamma x confidence, gamma chosen on validation",
    "entropy_trust_class": "per-class trust (precision or recall)^gamma x confidence, chosen on validation",
    "entropy_trust_tuned": "trust^gamma x confidence^alpha, trust kind, gamma, alpha chosen on validation",
    GUARDED_METHOD: "the validation choice; the best single run if no fusion beats it on validation",
}
# The seed's rule: the reference of the examples and the weights by emotion.
MAIN_METHOD = "entropy_trust"
# What a fusion is fitted on: the runs' out-of-fold predictions of every training and validation
# actor (predictions_oof.csv, when every run has one), or their validation predictions.
OUT_OF_FOLD_FIT = "out-of-fold"
VALIDATION_FIT = "validation"
FIT_SOURCES = (OUT_OF_FOLD_FIT, VALIDATION_FIT)
# Prefix of the table rows that are a single modality on its own.
SINGLE_PREFIX = "single_"
# Fixed-weight rows that are members of the family, so `mer predict` can apply them too.
FAMILY_ALIASES = {
    "mean": FamilyParameters(0.0, 0.0),
    "trust_only": FamilyParameters(1.0, 0.0),
    "confidence_only": FamilyParameters(0.0, 1.0),
}


@dataclass
class FittedFusion:
    """Everything fitted on validation: trust, temperatures, stacking and the chosen method."""

    labels: list[str]
    trust: dict[str, float]
    temperatures: dict[str, float]
    trust_metric: str = "macro_f1"
    stacking: StackingModel | None = None
    validation: dict = field(default_factory=dict)  # per modality: accuracy, macro_f1, ECE before/after
    class_trust: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # kind -> run -> (K,)
    variants: dict[str, FamilyParameters] = field(default_factory=dict)  # family row -> parameters
    chosen: str = MAIN_METHOD  # the default method (a table row), chosen on validation
    fallback: FamilyParameters = SEED_RULE  # used where a chosen single run is missing
    cv_accuracy: dict[str, float] = field(default_factory=dict)  # cross-validated, on validation
    cv_folds: str = ""  # how the validation clips were folded for cv_accuracy
    guard: dict = field(default_factory=dict)  # the paired test of the choice against the best single run
    fitted_on: str = VALIDATION_FIT  # which predictions everything was fitted on (FIT_SOURCES)
    fit_data: dict = field(default_factory=dict)  # clips and actors fitted on, runs lacking out-of-fold files

    @property
    def modalities(self) -> list[str]:
        """Modality names in table order."""
        return list(self.trust)

    def parameters_of(self, method: str) -> FamilyParameters:
        """The family member a row applies (the seed's rule for an unfitted row)."""
        if method in FAMILY_ALIASES:
            return FAMILY_ALIASES[method]
        if method == GUARDED_METHOD:
            return self.fallback
        return self.variants.get(method, SEED_RULE)


def fit_fusion(
    val_tables: Mapping[str, pd.DataFrame],
    trust: str = "macro_f1",
    seed: int = 42,
    stacking: bool = True,
    select: bool = True,
    fitted_on: str = VALIDATION_FIT,
) -> FittedFusion:
    """Fit temperatures, trust, per-class trust, the stacking model and the method choice on validation.

    ``val_tables`` are the tables fitted on: the runs' validation predictions, or (``fitted_on`` =
    "out-of-fold") their out-of-fold predictions of every training and validation actor.
    ``stacking=False`` skips the stacking baseline; ``select=False`` skips the cross-validated
    choice (every family row is then the seed's rule, which is also the default method).
    """
    if fitted_on not in FIT_SOURCES:
        raise ValueError(f"fitted_on must be one of {FIT_SOURCES}, got {fitted_on!r}")
    aligned = align_modalities(val_tables)
    targets = label_indices(aligned.true_labels, aligned.labels)
    temperatures, validation = {}, {}
    for name, p in aligned.probabilities.items():
        present = present_rows(p)
        temperatures[name] = fit_temperature(p[present], targets[present])
        calibrated = apply_temperature(p[present], temperatures[name])
        predictions = p[present].argmax(axis=1)
        validation[name] = {
            "accuracy": score(targets[present], predictions, "accuracy", p.shape[1]),
            "macro_f1": score(targets[present], predictions, "macro_f1", p.shape[1]),
            "ece_before": expected_calibration_error(p[present], targets[present]),
            "ece_after": expected_calibration_error(calibrated, targets[present]),
            "n": int(present.sum()),
        }
    trust_values = trust_from_validation(aligned.probabilities, targets, trust)
    class_trust = {
        kind: class_trust_from_validation(aligned.probabilities, targets, kind)
        for kind in ("precision", "recall")
    }
    calibrated = calibrate(aligned.probabilities, temperatures)
    stacker = fit_stacking(calibrated, targets, seed=seed) if stacking else None
    fitted = FittedFusion(aligned.labels, trust_values, temperatures, trust, stacker, validation, class_trust)
    groups = clip_groups(aligned.clip_ids)
    fitted.fitted_on = fitted_on
    fitted.fit_data = {
        "n": len(aligned.clip_ids),
        "actors": sorted(int(a) for a in np.unique(groups)) if groups is not None else None,
    }
    if select:
        selection = select_method(
            aligned.probabilities, targets, trust_values, trust, seed, SINGLE_PREFIX, groups
        )
        fitted.variants = dict(selection.parameters)
        fitted.chosen = selection.chosen
        fitted.fallback = selection.fallback
        fitted.cv_accuracy = dict(selection.cv_accuracy)
        fitted.cv_folds = selection.folds
        fitted.guard = dict(selection.guard)
    else:
        fitted.variants = {method: SEED_RULE for method in FAMILY_METHODS}
    return fitted


def fit_fusion_independent(val_tables: Mapping[str, pd.DataFrame], trust: str = "macro_f1") -> FittedFusion:
    """Fit runs validated on different samples (a faces run scored on face images beside RAVDESS
    clip runs): each run's temperature, trust and per-class trust come from its own validation
    part. No method can be chosen, nor stacking fitted, without shared clips: the default is the
    seed's entropy x trust rule."""
    parts = {
        name: fit_fusion({name: table}, trust=trust, stacking=False, select=False)
        for name, table in val_tables.items()
    }
    labels = None
    for name, part in parts.items():
        if labels is not None and part.labels != labels:
            raise ValueError(f"run {name!r}: label order {part.labels} differs from {labels}")
        labels = part.labels
    kinds = {kind for part in parts.values() for kind in part.class_trust}
    return FittedFusion(
        labels,
        {name: part.trust[name] for name, part in parts.items()},
        {name: part.temperatures[name] for name, part in parts.items()},
        trust,
        None,
        {name: part.validation[name] for name, part in parts.items()},
        {kind: {name: part.class_trust[kind][name] for name, part in parts.items()} for kind in kinds},
        {method: SEED_RULE for method in FAMILY_METHODS},
        MAIN_METHOD,
        SEED_RULE,
        {},
        "none: the runs share no validation clip; each run fitted on its own validation part",
    )


def fuse_with_method(
    fitted: FittedFusion, probabilities: Mapping[str, np.ndarray], method: str
) -> np.ndarray:
    """Fused (n, K) scores of one method (a FUSION_METHODS name or 'single_<modality>').

    A single modality gives NaN rows on clips where it is missing (it cannot answer).
    """
    unknown = [name for name in probabilities if name not in fitted.trust]
    if unknown:
        raise ValueError(f"modalities {unknown} were not fitted (fitted: {fitted.modalities})")
    if method.startswith(SINGLE_PREFIX):
        name = method[len(SINGLE_PREFIX) :]
        if name not in probabilities:
            raise ValueError(f"no modality '{name}' for method '{method}'")
        return apply_temperature(probabilities[name], fitted.temperatures[name])
    if method in FAMILY_METHODS:
        return family_scores(fitted, probabilities, fitted.parameters_of(method))[0]
    if method == GUARDED_METHOD:
        return guarded_scores(fitted, probabilities)
    calibrated = calibrate(probabilities, fitted.temperatures)
    if method == "mean":
        return mean_fusion(calibrated)
    if method == "trust_only":
        return trust_fusion(calibrated, fitted.trust)
    if method == "confidence_only":
        return confidence_fusion(calibrated)
    if method == "inverse_entropy":
        return inverse_entropy_fusion(calibrated)
    if method == "product":
        return product_fusion(calibrated)
    if method == "majority_vote":
        return majority_vote_fusion(calibrated)
    if method == "stacking":
        if fitted.stacking is None:
            raise ValueError("stacking was not fitted")
        return fitted.stacking.predict_proba(calibrated)
    if method == "entropy_trust_uncalibrated":
        return entropy_trust_fusion(probabilities, fitted.trust, None)[0]
    raise ValueError(f"unknown fusion method '{method}'; choose one of {FUSION_METHODS} or single_<modality>")


def family_scores(
    fitted: FittedFusion, probabilities: Mapping[str, np.ndarray], parameters: FamilyParameters
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fused scores and per-clip weights of one family member with the fitted trust and temperatures."""
    return fuse_family(probabilities, fitted.trust, fitted.temperatures, fitted.class_trust, parameters)


def guarded_scores(fitted: FittedFusion, probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
    """The validation choice: a family row, or the chosen single run (the family where it is missing)."""
    if not fitted.chosen.startswith(SINGLE_PREFIX):
        return family_scores(fitted, probabilities, fitted.parameters_of(fitted.chosen))[0]
    fused = family_scores(fitted, probabilities, fitted.fallback)[0]
    alone = apply_temperature(
        probabilities[fitted.chosen[len(SINGLE_PREFIX) :]],
        fitted.temperatures[fitted.chosen[len(SINGLE_PREFIX) :]],
    )
    available = present_rows(alone)
    fused[available] = alone[available]
    return fused


def chosen_weights(fitted: FittedFusion, probabilities: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-clip weights of the default method (a chosen single run weighs 1 wherever it is present)."""
    if not fitted.chosen.startswith(SINGLE_PREFIX):
        return family_scores(fitted, probabilities, fitted.parameters_of(fitted.chosen))[1]
    weights = family_scores(fitted, probabilities, fitted.fallback)[1]
    name = fitted.chosen[len(SINGLE_PREFIX) :]
    available = present_rows(probabilities[name])
    for other in weights:
        weights[other] = np.where(available, float(other == name), weights[other])
    return weights


def method_names(modalities: Sequence[str]) -> list[str]:
    """Table rows: each single modality, then every fusion method."""
    return [f"{SINGLE_PREFIX}{name}" for name in modalities] + list(FUSION_METHODS)
