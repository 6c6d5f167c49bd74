"""Late fusion of per-clip probabilities: calibrated entropy x trust weighting and its baselines.

Fusion works on prediction tables only (``predictions_val.csv`` / ``predictions_test.csv`` of run
folders, rows keyed by the RAVDESS take id) and never imports a model.

The method: every modality's probabilities are first temperature-scaled on validation so that
their entropies are comparable. Per clip, a modality's *confidence* is ``1 - H(p) / log(K)``;
its *trust* is its validation accuracy or macro-F1. The weight of a modality on a clip is
``trust x confidence``, normalised over the modalities present on that clip; the fused
distribution is the weighted sum of the calibrated probabilities and the label its argmax.
A modality that is missing on a clip (no face, no audio track) has a NaN row and simply drops
out of that clip's sum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from mer_utils.evaluation import classification_metrics, labels_from_columns, probabilities_of

# Probabilities are clipped to this before taking logs, so log(0) never appears.
EPSILON = 1e-12
# Search interval for the temperature: below 1 sharpens, above 1 softens.
TEMPERATURE_BOUNDS = (0.05, 20.0)
# Number of equal-width confidence bins of the expected calibration error (Guo et al. 2017).
ECE_BINS = 15
# Bootstrap resamples for the 95% confidence intervals of the results table.
BOOTSTRAP_SAMPLES = 1000
# Two-sided level of the bootstrap confidence intervals.
CONFIDENCE_LEVEL = 0.95
# Below this many discordant pairs McNemar uses the exact binomial test, above it chi-square.
MCNEMAR_EXACT_LIMIT = 25
# Validation metrics that may serve as a modality's trust.
TRUST_METRICS = ("accuracy", "macro_f1")
# Shares of test clips dropped from one modality in the missing-modality curves.
MISSING_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
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
    "entropy_trust",
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
    "entropy_trust": "trust x confidence, temperature-calibrated (this project)",
}
# The method `mer predict` uses and the McNemar test checks against the best single modality.
MAIN_METHOD = "entropy_trust"
# Prefix of the table rows that are a single modality on its own.
SINGLE_PREFIX = "single_"
# The file `mer fuse` writes with what `mer predict` needs (trust and temperature per modality).
FUSION_FILE = "fusion.json"


# ----------------------------------------------------------------------------- alignment


class AlignedProbabilities(NamedTuple):
    """Probabilities of several modalities on one shared list of clips."""

    clip_ids: np.ndarray  # (n,) clip ids (RAVDESS take ids), sorted
    true_labels: np.ndarray  # (n,) label strings
    probabilities: dict[str, np.ndarray]  # modality -> (n, K), NaN rows where it is missing
    labels: list[str]  # the label order of the probability columns


def align_modalities(tables: Mapping[str, pd.DataFrame]) -> AlignedProbabilities:
    """Align prediction tables of several modalities by clip_id.

    Clips absent from one table get a NaN row for that modality (the missing-modality case).
    Raises ValueError naming the modalities/clips when label orders differ, a table repeats a
    clip, the same clip has different true labels, or no clip is shared by all tables.
    """
    if not tables:
        raise ValueError("no prediction tables to align")
    names = list(tables)
    labels = None
    indexed: dict[str, pd.DataFrame] = {}
    for name in names:
        table = tables[name]
        for column in ("clip_id", "true_label"):
            if column not in table.columns:
                raise ValueError(f"prediction table of '{name}' has no '{column}' column")
        if table.empty:
            raise ValueError(f"prediction table of '{name}' is empty")
        table_labels = labels_from_columns(table)
        if labels is None:
            labels = table_labels
        elif table_labels != labels:
            raise ValueError(
                f"label orders differ: '{names[0]}' has {labels} but '{name}' has {table_labels}; "
                "fusion needs the same classes in the same order"
            )
        clip_ids = table["clip_id"].astype(str)
        repeated = sorted(set(clip_ids[clip_ids.duplicated()]))
        if repeated:
            raise ValueError(f"prediction table of '{name}' repeats clips {repeated[:5]}")
        frame = pd.DataFrame(probabilities_of(table, labels), index=clip_ids.to_numpy())
        frame["true_label"] = table["true_label"].fillna("").astype(str).to_numpy()
        indexed[name] = frame

    common = set.intersection(*(set(frame.index) for frame in indexed.values()))
    if not common:
        raise ValueError(
            f"the prediction tables of {names} share no clip_id; they must come from the same "
            "clips (RAVDESS take ids), e.g. the same data and split"
        )
    all_clips = sorted(set().union(*(set(frame.index) for frame in indexed.values())))
    true_labels = pd.Series("", index=all_clips, dtype=object)
    owner = pd.Series("", index=all_clips, dtype=object)
    probabilities = {}
    for name, frame in indexed.items():
        frame_labels = frame["true_label"]
        known = true_labels.loc[frame.index]
        conflict = (known != "") & (frame_labels != "") & (known != frame_labels)
        if conflict.any():
            clip = conflict[conflict].index[0]
            raise ValueError(
                f"{int(conflict.sum())} clips have different true labels in '{owner[clip]}' and "
                f"'{name}', e.g. clip {clip}: '{known[clip]}' vs '{frame_labels[clip]}'"
            )
        fill = (known == "") & (frame_labels != "")
        true_labels.loc[fill[fill].index] = frame_labels[fill]
        owner.loc[fill[fill].index] = name
        probabilities[name] = frame.drop(columns="true_label").reindex(all_clips).to_numpy(dtype=float)
    return AlignedProbabilities(
        np.asarray(all_clips, dtype=object), true_labels.to_numpy(dtype=object), probabilities, labels
    )


def label_indices(true_labels: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Integer class indices of label strings, with an error naming unknown labels."""
    position = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(y) for y in true_labels} - set(position))
    if "" in unknown:
        count = sum(str(y) == "" for y in true_labels)
        raise ValueError(
            f"{count} clips have no true label; fusion is fitted and scored on labelled clips only"
        )
    if unknown:
        raise ValueError(f"true labels {unknown} are not in the label order {list(labels)}")
    return np.asarray([position[str(y)] for y in true_labels], dtype=int)


# ----------------------------------------------------------------------------- confidence and calibration


def _present(probabilities: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows that hold probabilities (not NaN)."""
    return ~np.isnan(probabilities).any(axis=1)


def _normalise(probabilities: np.ndarray) -> np.ndarray:
    """Clip to EPSILON and renormalise rows to sum to one (NaN rows stay NaN)."""
    clipped = np.clip(np.asarray(probabilities, dtype=float), EPSILON, None)
    return clipped / clipped.sum(axis=1, keepdims=True)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row; NaN for missing rows."""
    p = _normalise(np.atleast_2d(probabilities))
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
    present = _present(probabilities)
    logits = np.log(_normalise(probabilities[present])) / temperature
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
    present = _present(probabilities)
    if not present.any():
        raise ValueError("cannot fit a temperature: no rows with probabilities")
    log_probabilities = np.log(_normalise(probabilities[present]))
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
    present = _present(probabilities)
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


# ----------------------------------------------------------------------------- trust and weights


def _score(targets: np.ndarray, predictions: np.ndarray, metric: str | Callable, num_classes: int) -> float:
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


def trust_from_validation(
    probabilities: Mapping[str, np.ndarray], targets: Sequence[int], metric: str = "macro_f1"
) -> dict[str, float]:
    """Trust of each modality: its validation accuracy or macro-F1 on the clips where it is present."""
    if metric not in TRUST_METRICS:
        raise ValueError(f"unknown trust metric '{metric}'; choose one of {TRUST_METRICS}")
    targets = np.asarray(targets, dtype=int)
    trust = {}
    for name, p in probabilities.items():
        present = _present(p)
        if not present.any():
            raise ValueError(f"modality '{name}' has no validation predictions to measure its trust")
        trust[name] = _score(targets[present], p[present].argmax(axis=1), metric, p.shape[1])
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


def entropy_trust_fusion(
    probabilities: Mapping[str, np.ndarray],
    trust: Mapping[str, float],
    temperatures: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The method: weight = trust x entropy confidence, normalised over present modalities.

    ``temperatures`` (modality -> T) calibrates each modality first; None fuses the raw
    probabilities. Returns (fused (n, K), weights per modality (n,)).
    """
    missing = [name for name in probabilities if name not in trust]
    if missing:
        raise ValueError(f"no trust for modalities {missing}; fit it on validation first")
    calibrated = _calibrate(probabilities, temperatures)
    raw_weights = {name: trust[name] * entropy_confidence(p) for name, p in calibrated.items()}
    return weighted_fusion(calibrated, raw_weights)


def _calibrate(
    probabilities: Mapping[str, np.ndarray], temperatures: Mapping[str, float] | None
) -> dict[str, np.ndarray]:
    """Apply each modality's temperature (or only renormalise when temperatures is None)."""
    if temperatures is None:
        return {name: _normalise(p) for name, p in probabilities.items()}
    missing = [name for name in probabilities if name not in temperatures]
    if missing:
        raise ValueError(f"no temperature for modalities {missing}")
    return {name: apply_temperature(p, temperatures[name]) for name, p in probabilities.items()}


# ----------------------------------------------------------------------------- baselines


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
    log_sum = sum(np.nan_to_num(np.log(_normalise(p)), nan=0.0) for p in probabilities.values())
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
        present = _present(p)
        votes[np.flatnonzero(present), p[present].argmax(axis=1)] += 1.0
        counts += present
    shares = votes / counts[:, None]
    # A tie-break far smaller than one vote (1/M) so it only decides between tied labels.
    scores = shares + 1e-3 * mean_fusion(probabilities)
    return scores / scores.sum(axis=1, keepdims=True)


def _check_some_present(probabilities: Mapping[str, np.ndarray]) -> None:
    """Raise when a clip has no modality (weighted_fusion does the same check)."""
    present = np.stack([_present(p) for p in probabilities.values()])
    if not present.any(axis=0).all():
        rows = np.flatnonzero(~present.any(axis=0))
        raise ValueError(f"{len(rows)} clips have no modality to fuse (rows {rows[:5].tolist()})")


def _stacking_features(probabilities: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Concatenated log-probabilities; a missing modality is replaced by the uniform distribution."""
    columns = []
    for name in names:
        p = np.asarray(probabilities[name], dtype=float)
        filled = np.where(np.isnan(p), 1.0 / p.shape[1], p)
        columns.append(np.log(_normalise(filled)))
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


# ----------------------------------------------------------------------------- fitting all methods


@dataclass
class FittedFusion:
    """Everything fitted on validation: labels, trust, temperatures and the stacking model."""

    labels: list[str]
    trust: dict[str, float]
    temperatures: dict[str, float]
    trust_metric: str = "macro_f1"
    stacking: StackingModel | None = None
    validation: dict = field(default_factory=dict)  # per modality: accuracy, macro_f1, ECE before/after

    @property
    def modalities(self) -> list[str]:
        """Modality names in table order."""
        return list(self.trust)


def fit_fusion(
    val_tables: Mapping[str, pd.DataFrame], trust: str = "macro_f1", seed: int = 42, stacking: bool = True
) -> FittedFusion:
    """Fit temperatures, trust and (unless ``stacking`` is False) the stacking model on validation tables."""
    aligned = align_modalities(val_tables)
    targets = label_indices(aligned.true_labels, aligned.labels)
    temperatures, validation = {}, {}
    for name, p in aligned.probabilities.items():
        present = _present(p)
        temperatures[name] = fit_temperature(p[present], targets[present])
        calibrated = apply_temperature(p[present], temperatures[name])
        predictions = p[present].argmax(axis=1)
        validation[name] = {
            "accuracy": _score(targets[present], predictions, "accuracy", p.shape[1]),
            "macro_f1": _score(targets[present], predictions, "macro_f1", p.shape[1]),
            "ece_before": expected_calibration_error(p[present], targets[present]),
            "ece_after": expected_calibration_error(calibrated, targets[present]),
            "n": int(present.sum()),
        }
    trust_values = trust_from_validation(aligned.probabilities, targets, trust)
    calibrated = _calibrate(aligned.probabilities, temperatures)
    stacker = fit_stacking(calibrated, targets, seed=seed) if stacking else None
    return FittedFusion(aligned.labels, trust_values, temperatures, trust, stacker, validation)


def fit_fusion_parameters(val_tables: Mapping[str, pd.DataFrame], trust: str = "macro_f1") -> dict:
    """What `mer predict` needs, fitted on validation: labels, trust metric, per-modality trust and T."""
    fitted = fit_fusion(val_tables, trust=trust, stacking=False)
    return fusion_parameters(fitted)


def fusion_parameters_for_runs(
    run_dirs: Sequence[str | Path], fusion_path: str | Path | None = None, trust: str = "macro_f1"
) -> dict:
    """Fusion parameters for `mer predict`, keyed by the modality names of ``run_dirs``.

    With ``fusion_path`` (fusion.json or its folder, written by `mer fuse`) the stored trust and
    temperatures are used and must cover every run; without it they are fitted now on the runs'
    predictions_val.csv. Each modality entry gets its ``run_dir``. Same layout as fusion.json.
    """
    names = modality_names(run_dirs)
    if fusion_path is not None:
        parameters = load_fusion_parameters(fusion_path)
        missing = [name for name in names if name not in parameters["modalities"]]
        if missing:
            raise ValueError(
                f"{fusion_path}: no trust/temperature for modalities {missing} "
                f"(it has {list(parameters['modalities'])}); run `mer fuse` on these run folders"
            )
        parameters["modalities"] = {name: dict(parameters["modalities"][name]) for name in names}
    else:
        val_tables = read_run_tables(list(names.values()), splits=("val",))[0]
        parameters = fit_fusion_parameters(val_tables, trust=trust)
    for name, run_dir in names.items():
        parameters["modalities"][name]["run_dir"] = str(Path(run_dir).resolve())
    return parameters


def fusion_parameters(fitted: FittedFusion, run_dirs: Mapping[str, str | Path] | None = None) -> dict:
    """The JSON-ready content of fusion.json from a fitted fusion."""
    modalities = {}
    for name in fitted.modalities:
        entry = {"trust": fitted.trust[name], "temperature": fitted.temperatures[name]}
        entry.update({f"val_{key}": value for key, value in fitted.validation.get(name, {}).items()})
        if run_dirs is not None and name in run_dirs:
            entry["run_dir"] = str(Path(run_dirs[name]).resolve())
            entry["branch"] = _run_branch(run_dirs[name])
        modalities[name] = entry
    return {
        "method": MAIN_METHOD,
        "labels": list(fitted.labels),
        "trust_metric": fitted.trust_metric,
        "modalities": modalities,
    }


def load_fusion_parameters(path: str | Path) -> dict:
    """Read fusion.json (a file, or the fusion folder holding it) and check its keys."""
    from mer_utils.runs import read_json

    path = Path(path)
    if path.is_dir():
        path = path / FUSION_FILE
    parameters = read_json(path)
    if not isinstance(parameters, dict) or not isinstance(parameters.get("modalities"), dict):
        raise ValueError(f"{path}: not a fusion file (no 'modalities'); write one with `mer fuse`")
    for name, entry in parameters["modalities"].items():
        for key in ("trust", "temperature"):
            if key not in entry:
                raise ValueError(f"{path}: modality '{name}' has no '{key}'")
    return parameters


def trust_and_temperatures(parameters: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(trust, temperatures) per modality from fusion parameters (fusion.json layout), for fuse_single."""
    modalities = parameters["modalities"]
    trust = {name: float(entry["trust"]) for name, entry in modalities.items()}
    temperatures = {name: float(entry["temperature"]) for name, entry in modalities.items()}
    return trust, temperatures


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
    calibrated = _calibrate(probabilities, fitted.temperatures)
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
    if method == "entropy_trust":
        return entropy_trust_fusion(probabilities, fitted.trust, fitted.temperatures)[0]
    raise ValueError(f"unknown fusion method '{method}'; choose one of {FUSION_METHODS} or single_<modality>")


def method_names(modalities: Sequence[str]) -> list[str]:
    """Table rows: each single modality, then every fusion method."""
    return [f"{SINGLE_PREFIX}{name}" for name in modalities] + list(FUSION_METHODS)


def predicted_indices(scores: np.ndarray) -> np.ndarray:
    """Argmax per row, -1 for rows without an answer (NaN)."""
    scores = np.asarray(scores, dtype=float)
    present = _present(scores)
    predictions = np.full(len(scores), -1, dtype=int)
    predictions[present] = scores[present].argmax(axis=1)
    return predictions


# ----------------------------------------------------------------------------- statistics


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
        values[b] = _score(targets[sample], predictions[sample], metric, num_classes)
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


# ----------------------------------------------------------------------------- comparison


@dataclass
class FusionComparison:
    """Everything compare_fusion_methods computed, for the table, the figures and the notebook."""

    table: pd.DataFrame
    metrics: dict[str, dict]
    fitted: FittedFusion
    test: AlignedProbabilities
    targets: np.ndarray
    scores: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    mcnemar: dict


TABLE_COLUMNS = [
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "macro_f1",
    "macro_f1_ci_low",
    "macro_f1_ci_high",
    "n",
]


def run_comparison(
    val_tables: Mapping[str, pd.DataFrame],
    test_tables: Mapping[str, pd.DataFrame],
    trust: str = "macro_f1",
    seed: int = 42,
    n_boot: int = BOOTSTRAP_SAMPLES,
) -> FusionComparison:
    """Fit on validation, score every method on test, with CIs and McNemar (full result)."""
    fitted = fit_fusion(val_tables, trust=trust, seed=seed)
    test = align_modalities(test_tables)
    if test.labels != fitted.labels:
        raise ValueError(f"test label order {test.labels} differs from validation {fitted.labels}")
    if set(test.probabilities) != set(fitted.modalities):
        raise ValueError(
            f"test modalities {list(test.probabilities)} differ from validation {fitted.modalities}"
        )
    targets = label_indices(test.true_labels, test.labels)
    scores, metrics = {}, {}
    for method in method_names(fitted.modalities):
        scores[method] = fuse_with_method(fitted, test.probabilities, method)
        metrics[method] = method_metrics(
            targets, predicted_indices(scores[method]), fitted.labels, n_boot, seed
        )
    weights = entropy_trust_fusion(test.probabilities, fitted.trust, fitted.temperatures)[1]
    singles = [f"{SINGLE_PREFIX}{name}" for name in fitted.modalities]
    # The best single modality is chosen on validation, so the test does not pick its own opponent.
    best_single = max(singles, key=lambda m: fitted.trust[m[len(SINGLE_PREFIX) :]])
    mcnemar = mcnemar_test(
        targets, predicted_indices(scores[MAIN_METHOD]), predicted_indices(scores[best_single])
    )
    mcnemar = {
        "method_a": MAIN_METHOD,
        "method_b": best_single,
        "chosen_by": f"validation {trust}",
        **mcnemar,
    }
    table = pd.DataFrame({m: {c: metrics[m][c] for c in TABLE_COLUMNS} for m in metrics}).T
    table["n"] = table["n"].astype(int)
    table["description"] = [
        METHOD_DESCRIPTIONS.get(m, f"{m[len(SINGLE_PREFIX) :]} alone") for m in table.index
    ]
    table.index.name = "method"
    return FusionComparison(table, metrics, fitted, test, targets, scores, weights, mcnemar)


def compare_fusion_methods(
    val_tables: Mapping[str, pd.DataFrame],
    test_tables: Mapping[str, pd.DataFrame],
    trust: str = "macro_f1",
    seed: int = 42,
    n_boot: int = BOOTSTRAP_SAMPLES,
) -> pd.DataFrame:
    """The results table: one row per method (each single modality first), accuracy and macro-F1 with CIs."""
    return run_comparison(val_tables, test_tables, trust=trust, seed=seed, n_boot=n_boot).table


# ----------------------------------------------------------------------------- robustness


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
    others = [_present(p) for name, p in result.items() if name != modality]
    if not others:
        raise ValueError("simulate_missing needs at least two modalities")
    candidates = np.flatnonzero(_present(target) & np.any(others, axis=0))
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
                "accuracy": _score(targets, predictions, "accuracy", len(fitted.labels)),
                "macro_f1": _score(targets, predictions, "macro_f1", len(fitted.labels)),
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


def calibration_table(comparison: FusionComparison) -> pd.DataFrame:
    """Per modality: fitted temperature, trust and ECE before/after calibration on validation and test."""
    fitted = comparison.fitted
    rows = {}
    for name in fitted.modalities:
        p = comparison.test.probabilities[name]
        present = _present(p)
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
    calibrated = _calibrate(comparison.test.probabilities, comparison.fitted.temperatures)
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


def weights_by_emotion(comparison: FusionComparison, statistic: str = "mean") -> pd.DataFrame:
    """Entropy x trust weight of each modality per true emotion (rows emotions, columns modalities).

    ``statistic`` is a pandas groupby reduction: "mean" (the default) or "std" for the spread over clips.
    """
    labels = comparison.fitted.labels
    frame = pd.DataFrame(comparison.weights)
    frame["true_label"] = [labels[t] for t in comparison.targets]
    summary = frame.groupby("true_label").agg(statistic)
    return summary.reindex([label for label in labels if label in summary.index])


# ----------------------------------------------------------------------------- single clip (mer predict)


def fuse_single(
    probabilities: Mapping[str, np.ndarray | None],
    trust: Mapping[str, float],
    temperatures: Mapping[str, float],
    labels: Sequence[str] | None = None,
) -> dict:
    """Fuse one clip for `mer predict`; a modality given as None is reported as unavailable.

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
    fused, weights = entropy_trust_fusion(vectors, trust, {name: temperatures[name] for name in available})
    calibrated = _calibrate(vectors, {name: temperatures[name] for name in available})
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


# ----------------------------------------------------------------------------- figures


def plot_reliability_diagrams(
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    targets: np.ndarray,
    bins: int = ECE_BINS,
):
    """Reliability diagrams per modality (columns), before and after temperature scaling (rows)."""
    from mer_utils.plotting import pyplot

    plt = pyplot()
    names = list(before)
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 7), squeeze=False)
    for column, name in enumerate(names):
        for row, (stage, probabilities) in enumerate((("before", before[name]), ("after", after[name]))):
            ax = axes[row, column]
            curve = reliability_curve(probabilities, targets, bins)
            centres = (curve["bin_low"] + curve["bin_high"]) / 2
            ax.bar(
                centres,
                curve["accuracy"].fillna(0),
                width=1.0 / bins,
                edgecolor="black",
                alpha=0.7,
                label="accuracy",
            )
            ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
            ece = expected_calibration_error(probabilities, targets, bins)
            ax.set_title(f"{name} {stage}: ECE {ece:.3f}")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence (top probability)")
            ax.set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_weights_by_emotion(
    weights: pd.DataFrame, spread: pd.DataFrame | None = None, title: str = "entropy x trust weights"
):
    """Grouped bars: mean fusion weight of each modality per true emotion (error bars: ``spread``)."""
    from mer_utils.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(weights), 4))
    width = 0.8 / max(1, weights.shape[1])
    positions = np.arange(len(weights))
    for m, name in enumerate(weights.columns):
        errors = spread[name].reindex(weights.index) if spread is not None else None
        offset = (m - (weights.shape[1] - 1) / 2) * width
        ax.bar(positions + offset, weights[name], width, yerr=errors, capsize=2, label=name)
    ax.set_xticks(positions, weights.index, rotation=45, ha="right")
    ax.set_ylabel("mean weight" + (" (bars: std over clips)" if spread is not None else ""))
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_robustness_curves(
    curve: pd.DataFrame,
    x: str,
    panel: str,
    title: str = "{}",
    metric: str = "accuracy",
    xlabel: str | None = None,
):
    """One panel per value of ``panel`` (e.g. missing_modality), one line per method over ``x``.

    ``title`` is formatted with the panel value. Single modalities are dashed, the main method bold.
    """
    from mer_utils.plotting import pyplot

    plt = pyplot()
    panels = list(dict.fromkeys(curve[panel]))
    methods = list(dict.fromkeys(curve["method"]))
    colours = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, value in zip(axes[0], panels, strict=True):
        subset = curve[curve[panel] == value]
        for number, method in enumerate(methods):
            line = subset[subset["method"] == method].sort_values(x)
            main = method == MAIN_METHOD
            ax.plot(
                line[x],
                line[metric],
                marker="o",
                ms=3,
                lw=2.8 if main else 1.2,
                color="black" if main else colours(number % 20),
                linestyle="--" if method.startswith(SINGLE_PREFIX) else "-",
                label=method,
            )
        ax.set_title(title.format(value))
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- run folders (mer fuse)


def _run_branch(run_dir: str | Path) -> str:
    """The branch recorded in a run folder's run.json."""
    from mer_utils.runs import read_run_info

    info = read_run_info(run_dir)
    if "branch" not in info:
        raise ValueError(f"{Path(run_dir) / 'run.json'}: no 'branch'")
    return str(info["branch"])


def modality_names(run_dirs: Sequence[str | Path]) -> dict[str, Path]:
    """Name each run by its branch; runs of the same branch become '<branch>-<folder name>'."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    if len({run_dir.resolve() for run_dir in run_dirs}) != len(run_dirs):
        raise ValueError(f"the same run folder is given twice: {[str(r) for r in run_dirs]}")
    branches = [_run_branch(run_dir) for run_dir in run_dirs]
    names: dict[str, Path] = {}
    for run_dir, branch in zip(run_dirs, branches, strict=True):
        name = branch if branches.count(branch) == 1 else f"{branch}-{run_dir.name}"
        base, counter = name, 2
        while name in names:
            name, counter = f"{base}-{counter}", counter + 1
        names[name] = run_dir
    return names


def read_run_tables(
    run_dirs: Sequence[str | Path], splits: Sequence[str] = ("val", "test")
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], dict[str, Path]]:
    """(val tables, test tables, run folders), each keyed by modality name, checking labels vs run.json.

    Only the ``splits`` asked for are read (the other dict stays empty).
    """
    from mer_utils.evaluation import labels_from_columns as columns_labels
    from mer_utils.runs import read_predictions, read_run_info

    names = modality_names(run_dirs)
    val_tables, test_tables = {}, {}
    for name, run_dir in names.items():
        labels = read_run_info(run_dir).get("labels")
        for split, store in (("val", val_tables), ("test", test_tables)):
            if split not in splits:
                continue
            table = read_predictions(run_dir, split)
            if labels is not None and columns_labels(table) != list(labels):
                raise ValueError(
                    f"{run_dir}/predictions_{split}.csv: probability columns {columns_labels(table)} "
                    f"do not match run.json labels {list(labels)}"
                )
            store[name] = table
    return val_tables, test_tables, names


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """The results table as GitHub markdown: value [CI low, CI high] for accuracy and macro-F1."""
    lines = [
        "| method | accuracy [95% CI] | macro-F1 [95% CI] | n | description |",
        "|---|---|---|---|---|",
    ]
    for method, row in table.iterrows():
        accuracy = f"{row['accuracy']:.{digits}f} [{row['accuracy_ci_low']:.{digits}f}, {row['accuracy_ci_high']:.{digits}f}]"
        f1 = f"{row['macro_f1']:.{digits}f} [{row['macro_f1_ci_low']:.{digits}f}, {row['macro_f1_ci_high']:.{digits}f}]"
        lines.append(f"| {method} | {accuracy} | {f1} | {int(row['n'])} | {row.get('description', '')} |")
    return "\n".join(lines) + "\n"


def write_fusion_outputs(
    comparison: FusionComparison,
    out: str | Path,
    run_dirs: Mapping[str, str | Path] | None = None,
    missing_curve: pd.DataFrame | None = None,
    seed: int = 42,
) -> dict[str, Path]:
    """Write table (CSV, markdown), metrics.json, mcnemar.json, fusion.json, examples and figures to ``out``."""
    from mer_utils.plotting import pyplot, save_figure
    from mer_utils.runs import atomic_write_bytes, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "table_csv": atomic_write_bytes(out / "fusion_table.csv", comparison.table.to_csv().encode()),
        "table_md": atomic_write_bytes(out / "fusion_table.md", markdown_table(comparison.table).encode()),
        "metrics": write_json(out / "metrics.json", comparison.metrics),
        "mcnemar": write_json(out / "mcnemar.json", comparison.mcnemar),
    }
    parameters = fusion_parameters(comparison.fitted, run_dirs)
    parameters["seed"] = seed
    written["fusion"] = write_json(out / FUSION_FILE, parameters)
    written["calibration"] = atomic_write_bytes(
        out / "calibration.csv", calibration_table(comparison).to_csv().encode()
    )
    examples = weight_examples(comparison)
    written["examples"] = atomic_write_bytes(
        out / "weight_examples.csv", examples.to_csv(index=False).encode()
    )
    plt = pyplot()
    test = comparison.test
    before = {name: test.probabilities[name] for name in comparison.fitted.modalities}
    after = _calibrate(before, comparison.fitted.temperatures)
    figures = {
        "reliability_diagrams": plot_reliability_diagrams(before, after, comparison.targets),
        "weights_by_emotion": plot_weights_by_emotion(
            weights_by_emotion(comparison), weights_by_emotion(comparison, "std")
        ),
    }
    if missing_curve is not None and not missing_curve.empty:
        written["missing_curve"] = atomic_write_bytes(
            out / "missing_modality_curve.csv", missing_curve.to_csv(index=False).encode()
        )
        figures["missing_modality_curve"] = plot_robustness_curves(
            missing_curve, "share", "missing_modality", "{} missing", xlabel="share of test clips without it"
        )
    for name, figure in figures.items():
        written[name] = save_figure(figure, name, folder=out)
        plt.close(figure)
    return written


def fuse_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    seed: int = 42,
    trust: str = "macro_f1",
    n_boot: int = BOOTSTRAP_SAMPLES,
) -> pd.DataFrame:
    """`mer fuse`: compare every fusion method on run folders' predictions and write the results to ``out``.

    Reads run.json (branch) and predictions_val/test.csv of each run, fits calibration, trust and
    stacking on validation, scores on test and writes fusion_table.csv/.md, metrics.json,
    mcnemar.json, fusion.json (what `mer predict` loads), weight_examples.csv,
    missing_modality_curve.csv and figures. Returns the table.
    """
    if len(run_dirs) < 2:
        raise ValueError(f"fusion needs at least two run folders, got {len(run_dirs)}")
    val_tables, test_tables, names = read_run_tables(run_dirs)
    comparison = run_comparison(val_tables, test_tables, trust=trust, seed=seed, n_boot=n_boot)
    missing_curve = missing_modality_curve(comparison.fitted, comparison.test, seed=seed)
    write_fusion_outputs(comparison, out, names, missing_curve, seed=seed)
    return comparison.table
