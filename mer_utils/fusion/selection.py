"""Choose the entropy x trust variant on validation: cross-validated, tie-aware, guarded.

"Validation clips" below are the clips the fusion is fitted on: the runs' validation predictions,
or their out-of-fold predictions of every training and validation actor when every run has them
(900 clips of 15 actors instead of 180 of 3; :func:`smallest_detectable_gain` shows why it matters).
Validation sets are small (RAVDESS: three actors, 180 clips), so every hyper-parameter of the
family (trust exponent gamma, confidence exponent alpha, kind of trust) is scored by
cross-validation *on the validation clips*: temperatures and trust are refitted on the training
folds and the fused prediction scored on the held-out fold. When the clips carry speakers
(RAVDESS take ids) the folds are speaker-disjoint (leave one actor out, like every RAVDESS
split of the project): folds that share actors score a fusion on the voices it was fitted on
and overstate its gain. Otherwise: repeated stratified K-fold. Between candidates whose
held-out accuracies differ by less than TIE_STANDARD_ERRORS standard errors of the paired
per-clip difference (or by at most one point), the simpler one wins (the one-standard-error rule).
The guard: the family row that would be deployed (the simplest one tied with the best row)
replaces the best single run only when it beats that run on validation by at least TIE_MIN_GAIN
and significantly: exact one-sided McNemar (sign) test on the clips where they disagree,
p < GUARD_ALPHA. Otherwise that run answers alone. Testing the deployed row, not the row with
the highest score, avoids the winner's curse of a maximum over many candidates; the exact test
is the right one for the handful of discordant clips a 180-clip validation set gives (a normal
approximation calls 8 against 3 significant, the exact test p = 0.11). Clips of one speaker are
not independent (a voice the runs misread is misread on all its clips), so the guard also reports
on how many speakers the deployed row beats the best single run and on how many it loses
(``speakers_won`` / ``speakers_lost``), the evidence per voice beside the evidence per clip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from mer_utils.fusion.calibration import apply_temperature, entropy_confidence, fit_temperature, present_rows
from mer_utils.fusion.methods import (
    TRUST_KINDS,
    class_trust_from_validation,
    entropy_trust_fusion,
    trust_from_validation,
)

# Trust exponents tried, simplest first (1 is the seed's rule; 0 drops trust; 32 ~ best run only).
GAMMAS = (1.0, 2.0, 0.5, 4.0, 0.0, 8.0, 16.0, 32.0)
# Confidence exponents tried, simplest first (0 turns the per-clip weights into fixed ones).
CONFIDENCE_EXPONENTS = (1.0, 0.5, 2.0, 0.0)
# Folds and repeats of the cross-validation on the validation clips.
CV_FOLDS = 5
CV_REPEATS = 4
# Candidates within this many standard errors of the best count as tied; the simpler one wins.
TIE_STANDARD_ERRORS = 1.0
# ... and so do candidates at most this far below the best (one point of accuracy): with few
# discordant clips the standard error alone would call a gain of two clips clear.
TIE_MIN_GAIN = 0.01
# The guard's significance level (one-sided exact McNemar test of the deployed row against the
# best single run on the validation clips).
GUARD_ALPHA = 0.05
# The family's rows, simplest first, and the part of the grid each one may use.
FAMILY_METHODS = ("entropy_trust", "entropy_trust_gamma", "entropy_trust_class", "entropy_trust_tuned")


@dataclass(frozen=True)
class FamilyParameters:
    """One member of the entropy x trust family: weight = trust^gamma x confidence^alpha."""

    gamma: float = 1.0
    confidence_exponent: float = 1.0
    trust_kind: str = "modality"  # "modality" (one trust per run), "precision" or "recall" per class

    def as_dict(self) -> dict:
        """JSON-ready parameters."""
        return asdict(self)


SEED_RULE = FamilyParameters()


def family_grid(method: str) -> list[FamilyParameters]:
    """The hyper-parameters a family row may choose from, simplest first."""
    if method == "entropy_trust":
        return [SEED_RULE]
    if method == "entropy_trust_gamma":
        return [FamilyParameters(gamma) for gamma in GAMMAS]
    if method == "entropy_trust_class":
        return [FamilyParameters(gamma, 1.0, kind) for kind in ("precision", "recall") for gamma in GAMMAS]
    if method == "entropy_trust_tuned":
        return [
            FamilyParameters(gamma, alpha, kind)
            for kind in TRUST_KINDS
            for alpha in CONFIDENCE_EXPONENTS
            for gamma in GAMMAS
        ]
    raise ValueError(f"'{method}' is not a row of the entropy x trust family {FAMILY_METHODS}")


def fuse_family(
    probabilities: Mapping[str, np.ndarray],
    trust: Mapping[str, float],
    temperatures: Mapping[str, float],
    class_trust: Mapping[str, Mapping[str, np.ndarray]],
    parameters: FamilyParameters,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fused scores and weights of one family member; ``class_trust`` maps trust kind -> run -> (K,)."""
    per_class = None if parameters.trust_kind == "modality" else class_trust[parameters.trust_kind]
    return entropy_trust_fusion(
        probabilities,
        trust,
        temperatures,
        gamma=parameters.gamma,
        confidence_exponent=parameters.confidence_exponent,
        class_trust=per_class,
    )


def fit_trust(
    probabilities: Mapping[str, np.ndarray], targets: np.ndarray, metric: str
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, np.ndarray]]]:
    """(temperatures, trust, per-class trust by kind) of each run, fitted on these clips."""
    temperatures = {}
    for name, p in probabilities.items():
        present = present_rows(p)
        temperatures[name] = fit_temperature(p[present], targets[present])
    trust = trust_from_validation(probabilities, targets, metric)
    class_trust = {
        kind: class_trust_from_validation(probabilities, targets, kind) for kind in ("precision", "recall")
    }
    return temperatures, trust, class_trust


def _folds(
    targets: np.ndarray, seed: int, groups: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs: group K-fold over ``groups`` (speakers) when there are two or
    more, else repeated stratified K-fold (plain K-fold for rare classes)."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(targets):
            raise ValueError(f"got {len(groups)} groups for {len(targets)} validation clips")
        distinct = len(np.unique(groups))
        if distinct >= 2:
            splitter = GroupKFold(min(CV_FOLDS, distinct))
            return list(splitter.split(np.zeros(len(targets)), targets, groups))
    counts = np.bincount(targets)
    smallest = counts[counts > 0].min()
    splits = int(min(CV_FOLDS, len(targets)))
    if splits < 2:
        raise ValueError(f"cross-validation needs at least 2 validation clips, got {len(targets)}")
    folds = []
    for repeat in range(CV_REPEATS):
        if smallest >= splits:
            splitter = StratifiedKFold(splits, shuffle=True, random_state=seed + repeat)
            folds.extend(splitter.split(np.zeros(len(targets)), targets))
        else:
            folds.extend(KFold(splits, shuffle=True, random_state=seed + repeat).split(targets))
    return folds


def grid_predictions(
    probabilities: Mapping[str, np.ndarray],
    trust: Mapping[str, float],
    temperatures: Mapping[str, float],
    class_trust: Mapping[str, Mapping[str, np.ndarray]],
    grid: Sequence[FamilyParameters],
) -> np.ndarray:
    """(len(grid), n) fused labels of many family members at once (as :func:`fuse_family`, batched).

    The calibration, confidences and per-clip trusts are computed once and only the exponents vary.
    """
    names = list(probabilities)
    calibrated = {name: apply_temperature(probabilities[name], temperatures[name]) for name in names}
    stacked = np.stack([calibrated[name] for name in names])  # (M, n, K)
    present = ~np.isnan(stacked).any(axis=2)  # (M, n)
    if not present.any(axis=0).all():
        raise ValueError("some clips have no modality to fuse")
    filled = np.nan_to_num(stacked)
    confidence = np.nan_to_num(np.stack([entropy_confidence(calibrated[name]) for name in names]))
    argmax = filled.argmax(axis=2)
    clip_trust = {"modality": np.stack([np.full(present.shape[1], float(trust[n])) for n in names])}
    for kind, per_run in class_trust.items():
        clip_trust[kind] = np.stack(
            [np.asarray(per_run[n], dtype=float)[argmax[m]] for m, n in enumerate(names)]
        )
    labels = np.empty((len(grid), present.shape[1]), dtype=int)
    for g, parameters in enumerate(grid):
        weights = np.power(clip_trust[parameters.trust_kind], parameters.gamma) * np.power(
            confidence, parameters.confidence_exponent
        )
        weights = np.where(present, np.clip(weights, 0.0, None), 0.0)
        # Equal shares where every present run has zero weight, as weighted_fusion does.
        weights = np.where(weights.sum(axis=0) > 0, weights, present.astype(float))
        weights = weights / weights.sum(axis=0)
        labels[g] = np.einsum("mn,mnk->nk", weights, filled).argmax(axis=1)
    return labels


def cross_validated_correctness(
    probabilities: Mapping[str, np.ndarray],
    targets: Sequence[int],
    grid: Sequence[FamilyParameters],
    trust_metric: str = "macro_f1",
    seed: int = 42,
    groups: Sequence[int] | None = None,
) -> np.ndarray:
    """(len(grid), n) share of repeats in which each family member got each validation clip right.

    Temperatures and trust are refitted on the training folds, so every clip is scored by a
    fusion that did not see it (nor, with ``groups``, its speaker).
    """
    targets = np.asarray(targets, dtype=int)
    correct = np.zeros((len(grid), len(targets)))
    scored = np.zeros(len(targets))
    for train, held in _folds(targets, seed, None if groups is None else np.asarray(groups)):
        train_probabilities = {name: p[train] for name, p in probabilities.items()}
        if any(not present_rows(p).any() for p in train_probabilities.values()):
            continue  # a run absent from every training clip of this fold cannot be fitted
        temperatures, trust, class_trust = fit_trust(train_probabilities, targets[train], trust_metric)
        held_probabilities = {name: p[held] for name, p in probabilities.items()}
        predictions = grid_predictions(held_probabilities, trust, temperatures, class_trust, grid)
        correct[:, held] += predictions == targets[held]
        scored[held] += 1
    if not scored.any():
        raise ValueError("cross-validation could not fit any fold; give more validation clips")
    return correct / np.maximum(scored, 1)


def simplest_within_tie(correctness: Sequence[np.ndarray], eligible: Sequence[bool] | None = None) -> int:
    """Index of the first (simplest) candidate tied with the best; candidates are ordered simplest first.

    Tied: the mean paired per-clip difference to the best is at most TIE_STANDARD_ERRORS standard
    errors, or at most TIE_MIN_GAIN. ``eligible`` restricts the answer (not the best) to some candidates; -1 if none is.
    """
    scores = np.array([np.mean(c) for c in correctness])
    best = int(np.argmax(scores))
    for index, candidate in enumerate(correctness):
        if eligible is not None and not eligible[index]:
            continue
        difference = np.asarray(correctness[best]) - np.asarray(candidate)
        error = difference.std(ddof=1) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
        if difference.mean() <= max(TIE_STANDARD_ERRORS * error, TIE_MIN_GAIN) + 1e-12:
            return index
    if eligible is not None:
        return -1
    return best


@dataclass
class Selection:
    """What validation chose: each family row's parameters and scores, and the default method."""

    parameters: dict[str, FamilyParameters]  # family row -> its chosen hyper-parameters
    cv_accuracy: dict[str, float]  # family row or single run -> cross-validated accuracy
    chosen: str  # the default method: a family row, or "single_<run>" when the guard fell back
    fallback: FamilyParameters  # the family member used where a chosen single run is missing
    best_single: str
    folds: str = ""  # how the validation clips were folded
    guard: dict = field(default_factory=dict)  # the paired test behind the choice (:func:`guard_test`)


def select_method(
    probabilities: Mapping[str, np.ndarray],
    targets: Sequence[int],
    trust: Mapping[str, float],
    trust_metric: str = "macro_f1",
    seed: int = 42,
    single_prefix: str = "single_",
    groups: Sequence[int] | None = None,
) -> Selection:
    """Choose each family row's hyper-parameters, then the default method, on validation clips.

    ``groups`` (the speaker of each clip) makes the cross-validation speaker-disjoint.
    """
    targets = np.asarray(targets, dtype=int)
    grid = family_grid("entropy_trust_tuned")
    position = {parameters: g for g, parameters in enumerate(grid)}
    correctness = cross_validated_correctness(probabilities, targets, grid, trust_metric, seed, groups)
    parameters, row_correctness, cv_accuracy = {}, {}, {}
    for method in FAMILY_METHODS:
        candidates = [position[p] for p in family_grid(method)]
        pick = candidates[simplest_within_tie([correctness[g] for g in candidates])]
        parameters[method] = grid[pick]
        row_correctness[method] = correctness[pick]
        cv_accuracy[method] = float(correctness[pick].mean())
    # The best single run is chosen by its validation trust, as the comparison table does.
    best_run = max(trust, key=lambda name: trust[name])
    singles = {}
    for name, p in probabilities.items():
        present = present_rows(p)
        right = np.zeros(len(targets))
        right[present] = p[present].argmax(axis=1) == targets[present]
        singles[name] = right
        cv_accuracy[f"{single_prefix}{name}"] = float(right.mean())
    rows = list(FAMILY_METHODS)
    # The guard: the row that would be deployed replaces the best single run only when it beats
    # that run on validation clearly (TIE_MIN_GAIN) and significantly (exact one-sided McNemar).
    row = rows[simplest_within_tie([row_correctness[method] for method in rows])]
    fallback = parameters[row]
    guard = guard_test(row_correctness[row], singles[best_run])
    guard.update({"method": row, "baseline": f"{single_prefix}{best_run}"})
    guard.update(speaker_signs(row_correctness[row], singles[best_run], groups))
    chosen = row if guard["passed"] else f"{single_prefix}{best_run}"
    return Selection(
        parameters,
        cv_accuracy,
        chosen,
        fallback,
        f"{single_prefix}{best_run}",
        describe_folds(targets, groups),
        guard,
    )


def speaker_signs(candidate: np.ndarray, baseline: np.ndarray, groups: Sequence[int] | None) -> dict:
    """On how many speakers ``candidate`` is right more often than ``baseline`` (won) and less often
    (lost), of how many; empty without speakers. Per-clip correctness in [0, 1], as :func:`guard_test`."""
    if groups is None:
        return {}
    groups = np.asarray(groups)
    difference = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    if len(groups) != len(difference):
        raise ValueError(f"got {len(groups)} speakers for {len(difference)} clips")
    means = np.array([difference[groups == speaker].mean() for speaker in np.unique(groups)])
    return {
        "speakers_won": int((means > 1e-12).sum()),
        "speakers_lost": int((means < -1e-12).sum()),
        "speakers": int(len(means)),
    }


def guard_test(candidate: np.ndarray, baseline: np.ndarray, alpha: float = GUARD_ALPHA) -> dict:
    """The guard's paired test of ``candidate`` against ``baseline`` (per-clip correctness in [0, 1]).

    Returns n, gain (mean difference in accuracy), wins and losses (the clips each one alone gets
    right, summed over repeats and rounded to whole discordant clips), the exact one-sided sign
    (McNemar) p-value, alpha, the minimum gain and ``passed``: a gain of at least TIE_MIN_GAIN and
    p < ``alpha``.
    """
    from scipy.stats import binom

    difference = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    gain = float(difference.mean()) if len(difference) else 0.0
    wins = int(round(float(difference.clip(0, None).sum())))
    losses = int(round(float((-difference).clip(0, None).sum())))
    # P(at least `wins` of the discordant clips go to the candidate | no difference).
    p_value = float(binom.sf(wins - 1, wins + losses, 0.5)) if wins + losses else 1.0
    passed = gain >= TIE_MIN_GAIN - 1e-12 and wins + losses > 0 and p_value < alpha
    return {
        "n": int(len(difference)),
        "gain": gain,
        "wins": wins,
        "losses": losses,
        "p_value": p_value,
        "alpha": float(alpha),
        "min_gain": TIE_MIN_GAIN,
        "test": "exact one-sided McNemar (sign) test",
        "passed": bool(passed),
    }


def beats_significantly(candidate: np.ndarray, baseline: np.ndarray, alpha: float = GUARD_ALPHA) -> bool:
    """True when ``candidate`` is right more often than ``baseline`` on paired clips, by at least
    TIE_MIN_GAIN and with an exact one-sided sign (McNemar) test p < ``alpha`` (:func:`guard_test`)."""
    return guard_test(candidate, baseline, alpha)["passed"]


def describe_folds(targets: Sequence[int], groups: Sequence[int] | None = None) -> str:
    """How :func:`cross_validated_correctness` folds these validation clips, in words."""
    distinct = 0 if groups is None else len(np.unique(np.asarray(groups)))
    if distinct >= 2:
        return f"speaker-disjoint {min(CV_FOLDS, distinct)}-fold over {distinct} speakers"
    return f"{CV_REPEATS} x stratified {int(min(CV_FOLDS, len(targets)))}-fold"


# Power the smallest detectable gain is defined at (the usual 80%).
TARGET_POWER = 0.8


def guard_power(
    n: int,
    gain: float,
    discordant_share: float,
    alpha: float = GUARD_ALPHA,
    min_gain: float = TIE_MIN_GAIN,
) -> float:
    """Probability that the guard lets a fusion through on ``n`` paired clips when it truly gains ``gain``.

    Model: each clip is discordant (exactly one of fusion and best single run right) with
    probability ``discordant_share`` = d, and a discordant clip goes to the fusion with
    probability q = (1 + gain / d) / 2. The guard passes with w wins of D discordant clips when
    the exact one-sided sign test gives p < ``alpha`` and (2w - D) / n >= ``min_gain``; the
    power sums that over the binomial distributions of D and w exactly.
    """
    from scipy.stats import binom

    n = int(n)
    if n < 1:
        raise ValueError(f"the guard needs at least one clip, got n = {n}")
    if not 0.0 < discordant_share <= 1.0:
        raise ValueError(f"discordant_share must be in (0, 1], got {discordant_share}")
    if not 0.0 <= gain <= discordant_share:
        raise ValueError(
            f"a gain of {gain} is impossible with {discordant_share} of the clips discordant (0 <= gain <= share)"
        )
    discordant = np.arange(n + 1)
    # Smallest number of wins with p < alpha, for every number of discordant clips.
    critical = binom.ppf(1.0 - alpha, discordant, 0.5).astype(int) + 1
    critical = np.where(binom.sf(critical - 1, discordant, 0.5) >= alpha, critical + 1, critical)
    critical = np.maximum(critical, np.ceil((discordant + n * min_gain - 1e-9) / 2.0)).astype(int)
    q = 0.5 * (1.0 + gain / discordant_share)
    passes = np.where(discordant > 0, binom.sf(critical - 1, discordant, q), 0.0)
    return float(np.sum(binom.pmf(discordant, n, discordant_share) * passes))


def smallest_detectable_gain(
    n: int,
    discordant_share: float,
    power: float = TARGET_POWER,
    alpha: float = GUARD_ALPHA,
    min_gain: float = TIE_MIN_GAIN,
) -> float:
    """The smallest true accuracy gain the guard detects with probability ``power`` on ``n`` clips
    (:func:`guard_power`, bisection to 1e-4); NaN when even a fusion right on every discordant clip
    would not be detected that often."""
    if guard_power(n, discordant_share, discordant_share, alpha, min_gain) < power:
        return float("nan")
    low, high = 0.0, float(discordant_share)
    while high - low > 1e-4:
        middle = (low + high) / 2
        if guard_power(n, middle, discordant_share, alpha, min_gain) >= power:
            high = middle
        else:
            low = middle
    return high
