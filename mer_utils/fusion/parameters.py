"""fusion.json: what `mer predict` needs to fuse a new clip, written by `mer fuse`, checked on load."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from mer_utils.fusion.calibration import TEMPERATURE_BOUNDS
from mer_utils.fusion.fitting import (
    FAMILY_ALIASES,
    GUARDED_METHOD,
    MAIN_METHOD,
    OUT_OF_FOLD_FIT,
    SINGLE_PREFIX,
    VALIDATION_FIT,
    FittedFusion,
    fit_fusion,
)
from mer_utils.fusion.methods import TRUST_KINDS
from mer_utils.fusion.selection import CONFIDENCE_EXPONENTS, FAMILY_METHODS, GAMMAS, FamilyParameters

# The file `mer fuse` writes with what `mer predict` needs (trust and temperature per modality).
FUSION_FILE = "fusion.json"
# Methods a single clip can be fused with from fusion.json alone (plus "single_<run>").
CLIP_METHODS = (*FAMILY_METHODS, GUARDED_METHOD, *FAMILY_ALIASES)
# Ranges accepted on load: what `mer fuse` can fit (a temperature of 1e-300 would turn p = 0.8
# into a fused 1.00; an exponent of 1e6 would let one run decide alone).
TEMPERATURE_RANGE = TEMPERATURE_BOUNDS
GAMMA_RANGE = (0.0, float(max(GAMMAS)))
CONFIDENCE_EXPONENT_RANGE = (0.0, float(max(CONFIDENCE_EXPONENTS)))
# fusion.json key, per modality: the run's model_fingerprint (run.json) the entry was fitted on.
FINGERPRINT_KEY = "model_fingerprint"
# A fused answer says little when its top probability is below this many times chance (1 / labels).
FLAT_TOP_FACTOR = 2.0
# A run is near chance when its validation accuracy is less than this many standard errors above it.
CHANCE_STANDARD_ERRORS = 2.0


def fusion_parameters(
    fitted: FittedFusion,
    run_dirs: Mapping[str, str | Path] | None = None,
    branches: Mapping[str, str] | None = None,
) -> dict:
    """The JSON-ready content of fusion.json from a fitted fusion.

    "method" is the validation-chosen row of the table and "parameters" the family member it
    applies (for a chosen single run: the member used on clips where that run is missing).
    """
    modalities = {}
    for name in fitted.modalities:
        entry = {"trust": fitted.trust[name], "temperature": fitted.temperatures[name]}
        for kind, per_run in fitted.class_trust.items():
            entry[f"class_{kind}"] = [float(value) for value in per_run[name]]
        entry.update({f"val_{key}": value for key, value in fitted.validation.get(name, {}).items()})
        if run_dirs is not None and name in run_dirs:
            entry["run_dir"] = str(Path(run_dirs[name]).resolve())
            entry[FINGERPRINT_KEY] = _run_fingerprint(run_dirs[name])
        if branches is not None and name in branches:
            entry["branch"] = branches[name]
        modalities[name] = entry
    chosen = fitted.chosen
    parameters = fitted.fallback if chosen.startswith(SINGLE_PREFIX) else fitted.parameters_of(chosen)
    return {
        "method": chosen,
        "parameters": parameters.as_dict(),
        "chosen_by": f"cross-validated accuracy on the {fit_clips_text(fitted)} (one-standard-error rule, "
        "guarded by the best single run)",
        "fitted_on": fitted.fitted_on,
        "fit_data": dict(fitted.fit_data),
        "guard": dict(fitted.guard),
        "val_cv_accuracy": dict(fitted.cv_accuracy),
        "cv_folds": fitted.cv_folds,
        "variants": {method: p.as_dict() for method, p in fitted.variants.items()},
        "labels": list(fitted.labels),
        "trust_metric": fitted.trust_metric,
        "modalities": modalities,
    }


def _run_fingerprint(run_dir: str | Path) -> str | None:
    """The model_fingerprint recorded in a run folder's run.json (None for a run without one)."""
    from mer_utils.runs import FINGERPRINT_KEY as RUN_FINGERPRINT_KEY
    from mer_utils.runs import read_run_info

    return read_run_info(run_dir).get(RUN_FINGERPRINT_KEY)


def fit_clips_text(fitted: FittedFusion) -> str:
    """What a fusion was fitted on, in words: "out-of-fold predictions of 15 actors (900 clips)"."""
    data = fitted.fit_data or {}
    what = "out-of-fold predictions" if fitted.fitted_on == OUT_OF_FOLD_FIT else "validation clips"
    actors = data.get("actors")
    if actors and data.get("n") is not None:
        return f"{what} of {len(actors)} actors ({data['n']} clips)"
    if data.get("n") is not None:
        return f"{what} ({data['n']} clips)"
    return what


def fit_fusion_parameters(
    val_tables: Mapping[str, pd.DataFrame], trust: str = "macro_f1", fitted_on: str = VALIDATION_FIT
) -> dict:
    """What `mer predict` needs, fitted on validation (or out-of-fold) tables: labels, trust,
    temperatures and the chosen method."""
    return fusion_parameters(fit_fusion(val_tables, trust=trust, stacking=False, fitted_on=fitted_on))


def _number(value, what: str, path: Path, low: float, high: float, low_open: bool = False) -> float:
    """A finite number in [low, high] (or (low, high] with ``low_open``), else a ValueError naming the file."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {what} must be a finite number, got {value!r}; re-run `mer fuse`")
    # A relative slack of 1e-9 keeps a fitted bound (exp(log(20)) = 20.000000000000004) inside.
    if value < low - 1e-9 * abs(low) or value > high + 1e-9 * abs(high) or (low_open and value == low):
        bounds = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ValueError(f"{path}: {what} must be in {bounds}, got {value!r}; re-run `mer fuse`")
    return float(value)


def validate_fusion_parameters(parameters, path: str | Path = FUSION_FILE) -> dict:
    """Check fusion.json content: modalities with finite trust in [0, 1] and temperature > 0, known method.

    Raises ValueError naming ``path`` and the bad entry. Files written before the method choice
    existed (no "method" or "parameters") get the seed's rule.
    """
    path = Path(path)
    if not isinstance(parameters, dict) or not isinstance(parameters.get("modalities"), dict):
        raise ValueError(f"{path}: not a fusion file (no 'modalities'); write one with `mer fuse`")
    if not parameters["modalities"]:
        raise ValueError(f"{path}: 'modalities' is empty; write the file with `mer fuse`")
    labels = parameters.get("labels")
    if labels is not None and (
        not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels)
    ):
        raise ValueError(f"{path}: 'labels' must be a non-empty list of label names, got {labels!r}")
    for name, entry in parameters["modalities"].items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: modality '{name}' is not an object")
        for key in ("trust", "temperature"):
            if key not in entry:
                raise ValueError(f"{path}: modality '{name}' has no '{key}'")
        _number(entry["trust"], f"trust of '{name}'", path, 0.0, 1.0)
        _number(entry["temperature"], f"temperature of '{name}'", path, *TEMPERATURE_RANGE)
        fingerprint = entry.get(FINGERPRINT_KEY)
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ValueError(f"{path}: {FINGERPRINT_KEY} of '{name}' must be a string, got {fingerprint!r}")
        for kind in ("precision", "recall"):
            values = entry.get(f"class_{kind}")
            if values is None:
                continue
            if not isinstance(values, list) or (labels is not None and len(values) != len(labels)):
                raise ValueError(f"{path}: class_{kind} of '{name}' must be a list with one value per label")
            for value in values:
                _number(value, f"class_{kind} of '{name}'", path, 0.0, 1.0)
    method = parameters.setdefault("method", MAIN_METHOD)
    singles = [f"{SINGLE_PREFIX}{name}" for name in parameters["modalities"]]
    if method not in (*CLIP_METHODS, *singles):
        raise ValueError(
            f"{path}: unknown method {method!r}; `mer predict` can apply {list(CLIP_METHODS)} or {singles}"
        )
    rule = parameters.setdefault("parameters", FamilyParameters().as_dict())
    if not isinstance(rule, dict):
        raise ValueError(f"{path}: 'parameters' must be an object")
    _number(rule.get("gamma", 1.0), "parameters.gamma", path, *GAMMA_RANGE)
    _number(
        rule.get("confidence_exponent", 1.0),
        "parameters.confidence_exponent",
        path,
        *CONFIDENCE_EXPONENT_RANGE,
    )
    kind = rule.get("trust_kind", "modality")
    if kind not in TRUST_KINDS:
        raise ValueError(f"{path}: parameters.trust_kind must be one of {TRUST_KINDS}, got {kind!r}")
    if kind != "modality":
        lacking = [n for n, entry in parameters["modalities"].items() if f"class_{kind}" not in entry]
        if lacking:
            raise ValueError(f"{path}: trust_kind '{kind}' but modalities {lacking} have no class_{kind}")
    return parameters


def load_fusion_parameters(path: str | Path) -> dict:
    """Read fusion.json (a file, or the fusion folder holding it) and validate it."""
    from mer_utils.runs import read_json

    path = Path(path)
    if path.is_dir():
        path = path / FUSION_FILE
    return validate_fusion_parameters(read_json(path), path)


def check_fusion_runs(parameters: dict, run_dirs: Mapping[str, str | Path], path: str | Path) -> None:
    """Refuse fusion parameters fitted on other runs than ``run_dirs`` (modality name -> run folder).

    Each modality's recorded model_fingerprint must be the run's (run.json), and fusion.json's
    labels the run's labels; both errors name the fusion file and the run. A fusion file written
    before fingerprints were recorded is refused unless runs are trusted (``--trust-run``).
    """
    from mer_utils.runs import FINGERPRINT_KEY as RUN_FINGERPRINT_KEY
    from mer_utils.runs import TRUST_RUN_ENV, read_run_info, run_trusted

    path = Path(path)
    if path.is_dir():
        path = path / FUSION_FILE
    fix = "re-run `mer fuse` on the run folders you predict with"
    for name, run_dir in run_dirs.items():
        info = read_run_info(run_dir)
        labels = parameters.get("labels")
        if labels is not None and list(info["labels"]) != list(labels):
            raise ValueError(
                f"{path}: fitted on the labels {list(labels)}, but {Path(run_dir) / 'run.json'} lists "
                f"{list(info['labels'])}; {fix}"
            )
        recorded = parameters["modalities"][name].get(FINGERPRINT_KEY)
        actual = info.get(RUN_FINGERPRINT_KEY)
        if recorded is None:
            if run_trusted():
                continue
            raise ValueError(
                f"{path}: records no model fingerprint for '{name}' (a file from before fusion files were "
                f"tied to their runs), so it may have been fitted on another model than {run_dir}; {fix} "
                f"(or, for runs you made yourself, pass --trust-run / set {TRUST_RUN_ENV}=1)"
            )
        if recorded != actual:
            others = [
                other
                for other, entry in parameters["modalities"].items()
                if other != name and entry.get(FINGERPRINT_KEY) == actual
            ]
            hint = f" (it matches the entry '{others[0]}')" if others else ""
            raise ValueError(
                f"{path}: '{name}' was fitted on the model with fingerprint {str(recorded)[:12]}..., but "
                f"{run_dir} holds {str(actual)[:12]}...{hint}: another model or a retrained run, whose trust "
                f"and temperature were never measured; {fix}"
            )


def trust_and_temperatures(parameters: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(trust, temperatures) per modality from fusion parameters (fusion.json layout), for fuse_single."""
    modalities = parameters["modalities"]
    trust = {name: float(entry["trust"]) for name, entry in modalities.items()}
    temperatures = {name: float(entry["temperature"]) for name, entry in modalities.items()}
    return trust, temperatures


def single_clip_rule(parameters: dict) -> dict:
    """Keyword arguments of :func:`fuse_single` that apply fusion.json's chosen method to one clip."""
    method = parameters.get("method", MAIN_METHOD)
    if method in FAMILY_ALIASES:
        rule = FAMILY_ALIASES[method]
    else:
        stored = parameters.get("parameters", {})
        rule = FamilyParameters(
            float(stored.get("gamma", 1.0)),
            float(stored.get("confidence_exponent", 1.0)),
            str(stored.get("trust_kind", "modality")),
        )
    class_trust = None
    if rule.trust_kind != "modality":
        class_trust = {
            name: entry[f"class_{rule.trust_kind}"] for name, entry in parameters["modalities"].items()
        }
    single = method[len(SINGLE_PREFIX) :] if method.startswith(SINGLE_PREFIX) else None
    return {
        "gamma": rule.gamma,
        "confidence_exponent": rule.confidence_exponent,
        "class_trust": class_trust,
        "single": single,
    }


def near_chance(entry: Mapping, num_labels: int) -> bool:
    """True when a modality's validation accuracy (fusion.json ``val_accuracy``, ``val_n``) is not
    clearly above chance: less than :data:`CHANCE_STANDARD_ERRORS` binomial standard errors above 1/K."""
    accuracy = entry.get("val_accuracy")
    if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool) or not math.isfinite(accuracy):
        return False
    chance = 1.0 / num_labels
    n = entry.get("val_n")
    if isinstance(n, int) and n > 0:
        margin = CHANCE_STANDARD_ERRORS * math.sqrt(chance * (1 - chance) / n)
    else:
        margin = 0.5 * chance
    return accuracy < chance + margin


def weak_answer(parameters: dict, fused_probabilities, used: list[str]) -> str | None:
    """Why a fused answer carries little information about the clip, or None when it does.

    Two signs, each enough: every run used scored near chance on its validation clips
    (:func:`near_chance`), or the fused probabilities are close to uniform (top probability below
    :data:`FLAT_TOP_FACTOR` / K). Such an answer tends to be the same label for any clip.
    """
    fused = [float(p) for p in fused_probabilities]
    num_labels = len(fused)
    chance = 1.0 / num_labels
    reasons = []
    entries = {name: parameters["modalities"].get(name, {}) for name in used}
    weak = [name for name, entry in entries.items() if near_chance(entry, num_labels)]
    if used and len(weak) == len(used):
        scores = ", ".join(f"{name} {entries[name]['val_accuracy']:.2f}" for name in weak)
        reasons.append(
            f"every run used scored near chance on its validation clips ({scores}; chance {chance:.2f})"
        )
    top = max(fused)
    if top < FLAT_TOP_FACTOR * chance:
        reasons.append(f"the fused probabilities are close to uniform (top {top:.2f}, uniform {chance:.2f})")
    if not reasons:
        return None
    return (
        "; ".join(reasons)
        + ": the label carries little information about this clip (runs trained on more or real data help)"
    )
