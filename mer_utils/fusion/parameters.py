"""fusion.json: what `mer predict` needs to fuse a new clip, written by `mer fuse`, checked on load."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

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
from mer_utils.fusion.selection import FAMILY_METHODS, FamilyParameters

# The file `mer fuse` writes with what `mer predict` needs (trust and temperature per modality).
FUSION_FILE = "fusion.json"
# Methods a single clip can be fused with from fusion.json alone (plus "single_<run>").
CLIP_METHODS = (*FAMILY_METHODS, GUARDED_METHOD, *FAMILY_ALIASES)


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
    if value < low or value > high or (low_open and value == low):
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
        _number(entry["temperature"], f"temperature of '{name}'", path, 0.0, math.inf, low_open=True)
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
    _number(rule.get("gamma", 1.0), "parameters.gamma", path, 0.0, math.inf)
    _number(rule.get("confidence_exponent", 1.0), "parameters.confidence_exponent", path, 0.0, math.inf)
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
