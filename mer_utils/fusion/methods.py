"""Fusion rules on aligned probabilities: the entropy x trust family, its baselines, one clip.

The entropy x trust family weighs run m on clip i by ``t^gamma x c^alpha``, normalised over the
runs present on the clip: ``c = 1 - H(p) / log K`` is the run's confidence on this clip and ``t``
its trust, either one number per run (its validation macro-F1 or accuracy) or per class (its
validation precision or recall for the class it predicts on this clip). ``gamma = alpha = 1`` is
the seed's rule; ``gamma = 0`` drops trust (the confidence rule), a large ``gamma`` hands the clip
to the most trusted run, ``alpha = 0`` drops the per-clip confidence (fixed weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mer_utils.fusion.calibration import (
    EPSILON,
    calibrate,
    entropy,
    entropy_confidence,
    normalise,
    present_rows,
)
from mer_utils.fusion.statistics import TRUST_METRICS, score

# Kinds of trust: one number per run, or per predicted class (precision or recall on validation).
TRUST_KINDS = ("modality", "precision", "recall")
# Pseudo-count that shrinks a per-class trust towards the run's overall trust: a class a run
# predicted on only a few validation clips must not get a trust of 0 or 1 from them.
CLASS_TRUST_PRIOR = 5.0


def trust_from_validation(
    probabilities: Mapping[str, np.ndarray], targets: Sequence[int], metric: str = "macro_f1"
) -> dict[str, float]:
    """Trust of each modality: its validation accuracy or macro-F1 on the clips where it is present."""
    if metric not in TRUST_METRICS:
        raise ValueError(f"unknown trust metric '{metric}'; choose one of {TRUST_METRICS}")
    targets = np.asarray(targets, dtype=int)
    trust = {}
    for name, p in probabilities.items():
        present = present_rows(p)
        if not present.any():
            raise ValueError(f"modality '{name}' has no validation predictions to measure its trust")
        trust[name] = score(targets[present], p[present].argmax(axis=1), metric, p.shape[1])
    return trust


def weighted_fusion(
    probabilities: Mapping[str, np.ndarray], raw_weights: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fuse with per-clip weights normalised over the modalities present on each clip.

    Returns (fused (n, K), normalised weights per modality (n,), 0 where missing). When all present
    weights of a clip are zero (e.g. uniform probabilities) the present modalities share equally.
    Raises ValueError when a clip has no modality at all.
    """
    names = list(probabilities)
    stacked = np.stack([np.asarray(probabilities[name], dtype=float) for name in names])  # (M, n, K)
    present = ~np.isnan(stacked).any(axis=2)  # (M, n)
    none_present = ~present.any(axis=0)
    if none_present.any():
        rows = np.flatnonzero(none_present)
        raise ValueError(
            f"{len(rows)} clips have no modality to fuse (rows {rows[:5].tolist()}); "
            "at least one modality must give probabilities"
        )
    weights = np.stack(
        [np.broadcast_to(np.asarray(raw_weights[name], float), present[0].shape) for name in names]
    )
    weights = np.where(present, np.nan_to_num(np.clip(weights, 0.0, None)), 0.0)
    totals = weights.sum(axis=0)
    # Equal shares where every present modality has zero weight, so the clip still gets an answer.
    weights = np.where(totals > 0, weights, present.astype(float))
    weights = weights / weights.sum(axis=0)
    fused = np.einsum("mn,mnk->nk", weights, np.nan_to_num(stacked))
    return fused, {name: weights[m] for m, name in enumerate(names)}


def class_trust_from_validation(
    probabilities: Mapping[str, np.ndarray],
    targets: Sequence[int],
    kind: str,
    prior: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Per-class trust of each run: its validation precision or recall for each class, shape (K,).

    Precision of class k = share of the clips the run calls k that are k; recall = share of the
    clips of class k it calls k. Both are shrunk towards ``prior[run]`` (default: the run's
    accuracy) with CLASS_TRUST_PRIOR pseudo-clips, so a rarely predicted class gets a sane trust.
    """
    if kind not in ("precision", "recall"):
        raise ValueError(f"unknown class trust '{kind}'; choose 'precision' or 'recall'")
    targets = np.asarray(targets, dtype=int)
    result = {}
    for name, p in probabilities.items():
        present = present_rows(p)
        if not present.any():
            raise ValueError(f"modality '{name}' has no validation predictions to measure its trust")
        num_classes = p.shape[1]
        truth, predicted = targets[present], p[present].argmax(axis=1)
        hits = np.bincount(truth[truth == predicted], minlength=num_classes)[:num_classes]
        base = np.bincount(predicted if kind == "precision" else truth, minlength=num_classes)[:num_classes]
        centre = float(np.mean(truth == predicted)) if prior is None else float(prior[name])
        result[name] = (hits + CLASS_TRUST_PRIOR * centre) / (base + CLASS_TRUST_PRIOR)
    return result


def family_weights(
    calibrated: Mapping[str, np.ndarray],
    trust: Mapping[str, float],
    gamma: float = 1.0,
    confidence_exponent: float = 1.0,
    class_trust: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Raw (unnormalised) entropy x trust weights ``t^gamma x c^alpha`` of each run on each clip.

    With ``class_trust`` (run -> (K,) array) ``t`` is the run's trust for the class it predicts on
    the clip; otherwise it is the run's single ``trust``.
    """
    if gamma < 0 or confidence_exponent < 0:
        raise ValueError(f"exponents must be >= 0, got gamma={gamma}, alpha={confidence_exponent}")
    missing = [name for name in calibrated if name not in trust]
    if missing:
        raise ValueError(f"no trust for modalities {missing}; fit it on validation first")
    weights = {}
    for name, p in calibrated.items():
        if class_trust is not None:
            present = present_rows(p)
            per_clip = np.full(len(p), np.nan)
            per_clip[present] = np.asarray(class_trust[name], dtype=float)[p[present].argmax(axis=1)]
        else:
            per_clip = np.full(len(p), float(trust[name]))
        # 0 ** 0 is 1, so gamma = 0 (or alpha = 0) really removes that factor.
        weights[name] = np.power(per_clip, gamma) * np.power(entropy_confidence(p), confidence_exponent)
    return weights


def entropy_trust_fusion(
    probabilities: Mapping[str, np.ndarray],
    trust: Mapping[str, float],
    temperatures: Mapping[str, float] | None = None,
    gamma: float = 1.0,
    confidence_exponent: float = 1.0,
    class_trust: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The method: weight = trust^gamma x confidence^alpha, normalised over present modalities.

    ``temperatures`` (modality -> T) calibrates each modality first; None fuses the raw
    probabilities. The defaults (gamma = alpha = 1, one trust per run) are the seed's rule.
    Returns (fused (n, K), weights per modality (n,)).
    """
    calibrated = calibrate(probabilities, temperatures)
    raw_weights = family_weights(calibrated, trust, gamma, confidence_exponent, class_trust)
    return weighted_fusion(calibrated, raw_weights)


def mean_fusion(probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
    """Plain mean of the present modalities' probabilities."""
    return weighted_fusion(probabilities, {name: np.ones(1) for name in probabilities})[0]


def trust_fusion(probabilities: Mapping[str, np.ndarray], trust: Mapping[str, float]) -> np.ndarray:
    """Fixed weights proportional to validation trust."""
    return weighted_fusion(probabilities, {name: np.full(1, trust[name]) for name in probabilities})[0]


def confidence_fusion(probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
    """Weights proportional to per-clip entropy confidence only."""
    return weighted_fusion(probabilities, {name: entropy_confidence(p) for name, p in probabilities.items()})[
        0
    ]


def inverse_entropy_fusion(probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
    """Inverse-entropy weighting (Misra, Bourlard & Tyagi, ICASSP 2003): weight = 1 / H(p)."""
    return weighted_fusion(
        probabilities, {name: 1.0 / np.clip(entropy(p), EPSILON, None) for name, p in probabilities.items()}
    )[0]


def product_fusion(probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
    """Normalised product of the present modalities' probabilities (sum of logs)."""
    _check_some_present(probabilities)
    log_sum = sum(np.nan_to_num(np.log(normalise(p)), nan=0.0) for p in probabilities.values())
    log_sum = log_sum - log_sum.max(axis=1, keepdims=True)
    product = np.exp(log_sum)
    return product / product.sum(axis=1, keepdims=True)


def majority_vote_fusion(probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
    """Vote shares of the present modalities' argmax labels; ties broken by the mean probability."""
    _check_some_present(probabilities)
    first = next(iter(probabilities.values()))
    votes = np.zeros_like(first, dtype=float)
    counts = np.zeros(len(first))
    for p in probabilities.values():
        present = present_rows(p)
        votes[np.flatnonzero(present), p[present].argmax(axis=1)] += 1.0
        counts += present
    shares = votes / counts[:, None]
    # A tie-break far smaller than one vote (1/M) so it only decides between tied labels.
    scores = shares + 1e-3 * mean_fusion(probabilities)
    return scores / scores.sum(axis=1, keepdims=True)


def _check_some_present(probabilities: Mapping[str, np.ndarray]) -> None:
    """Raise when a clip has no modality (weighted_fusion does the same check)."""
    present = np.stack([present_rows(p) for p in probabilities.values()])
    if not present.any(axis=0).all():
        rows = np.flatnonzero(~present.any(axis=0))
        raise ValueError(f"{len(rows)} clips have no modality to fuse (rows {rows[:5].tolist()})")


def _stacking_features(probabilities: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Concatenated log-probabilities; a missing modality is replaced by the uniform distribution."""
    columns = []
    for name in names:
        p = np.asarray(probabilities[name], dtype=float)
        filled = np.where(np.isnan(p), 1.0 / p.shape[1], p)
        columns.append(np.log(normalise(filled)))
    return np.hstack(columns)


@dataclass
class StackingModel:
    """Logistic regression on the concatenated log-probabilities of the modalities."""

    names: list[str]
    num_classes: int
    model: object

    def predict_proba(self, probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, K) probabilities; classes never seen in validation get probability 0."""
        _check_some_present(probabilities)
        scores = self.model.predict_proba(_stacking_features(probabilities, self.names))
        full = np.zeros((scores.shape[0], self.num_classes))
        full[:, self.model.classes_] = scores
        return full


def fit_stacking(
    probabilities: Mapping[str, np.ndarray], targets: Sequence[int], seed: int = 42
) -> StackingModel:
    """Fit the stacking baseline on validation probabilities."""
    from sklearn.linear_model import LogisticRegression

    names = list(probabilities)
    num_classes = next(iter(probabilities.values())).shape[1]
    model = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    model.fit(_stacking_features(probabilities, names), np.asarray(targets, dtype=int))
    return StackingModel(names, num_classes, model)


def fuse_single(
    probabilities: Mapping[str, np.ndarray | None],
    trust: Mapping[str, float],
    temperatures: Mapping[str, float],
    labels: Sequence[str] | None = None,
    gamma: float = 1.0,
    confidence_exponent: float = 1.0,
    class_trust: Mapping[str, Sequence[float]] | None = None,
    single: str | None = None,
) -> dict:
    """Fuse one clip for `mer predict`; a modality given as None is reported as unavailable.

    ``gamma``, ``confidence_exponent`` and ``class_trust`` select the member of the entropy x trust
    family (see :func:`family_weights`); ``single`` names a run that answers alone whenever it is
    available (the validation guard chose it), the family answering only when it is missing.
    Returns {"label", "label_index", "fused_probabilities", "available", "unavailable",
    "modalities": {name: {available, probabilities, calibrated_probabilities, confidence, trust,
    temperature, weight}}} (probabilities as lists). Raises ValueError when no modality is available.
    """
    available = [name for name, p in probabilities.items() if p is not None]
    if not available:
        raise ValueError(
            f"no modality could be used for this clip (all of {list(probabilities)} are unavailable)"
        )
    vectors = {}
    for name in available:
        p = np.asarray(probabilities[name], dtype=float).reshape(1, -1)
        if np.isnan(p).any():
            raise ValueError(f"probabilities of '{name}' contain NaN; pass None for an unavailable modality")
        vectors[name] = p
    sizes = {name: p.shape[1] for name, p in vectors.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"modalities give different numbers of classes: {sizes}")
    num_classes = next(iter(sizes.values()))
    if labels is not None and len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels for {num_classes} probabilities")
    for name in available:
        for what, table in (("trust", trust), ("temperature", temperatures)):
            if name not in table:
                raise ValueError(f"no {what} for modality '{name}' (fusion.json has {list(table)})")
    chosen_vectors = {single: vectors[single]} if single in vectors else vectors
    chosen_class_trust = None
    if class_trust is not None:
        chosen_class_trust = {name: np.asarray(class_trust[name], dtype=float) for name in chosen_vectors}
    fused, chosen_weights = entropy_trust_fusion(
        chosen_vectors,
        trust,
        {name: temperatures[name] for name in chosen_vectors},
        gamma=gamma,
        confidence_exponent=confidence_exponent,
        class_trust=chosen_class_trust,
    )
    weights = {name: chosen_weights.get(name, np.zeros(1)) for name in available}
    calibrated = calibrate(vectors, {name: temperatures[name] for name in available})
    index = int(fused[0].argmax())
    modalities = {}
    for name, p in probabilities.items():
        if p is None:
            modalities[name] = {
                "available": False,
                "trust": trust.get(name),
                "temperature": temperatures.get(name),
                "weight": 0.0,
            }
            continue
        modalities[name] = {
            "available": True,
            "probabilities": vectors[name][0].tolist(),
            "calibrated_probabilities": calibrated[name][0].tolist(),
            "confidence": float(entropy_confidence(calibrated[name])[0]),
            "trust": float(trust[name]),
            "temperature": float(temperatures[name]),
            "weight": float(weights[name][0]),
        }
    return {
        "label": labels[index] if labels is not None else None,
        "label_index": index,
        "fused_probabilities": fused[0].tolist(),
        "labels": list(labels) if labels is not None else None,
        "available": available,
        "unavailable": [name for name, p in probabilities.items() if p is None],
        "modalities": modalities,
    }
