"""`mer predict`: the whole pipeline on one new clip, from file to fused emotion.

Each run folder carries its model, label order and preprocessing parameters (run.json), so
nothing else is needed: frames and faces for the video model, audio features for the audio
models, then entropy x trust fusion with the trust and temperatures fitted on validation
(from a `mer fuse` folder's fusion.json, or fitted on the runs' predictions_val.csv).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mer_utils.branches import clip_branches
from mer_utils.pipelines import base, branch_module
from mer_utils.runs import read_run_info

if TYPE_CHECKING:
    import pandas as pd

# The branches that can read a video clip come from the registry (mer_utils.branches.clip_branches:
# text models take sentences, not clips; a faces run is the video modality: frames -> detected
# faces -> frame probabilities -> clip mean).


class NoModalityError(ValueError):
    """No model could read the clip (no face, no speech, no readable stream): nothing to fuse."""


def load_models(
    run_dirs: Sequence[str | Path], fusion: str | Path | None = None, warm_up: bool = True
) -> dict:
    """Load every run's model once and the fusion parameters; returns what :func:`predict_clip` reuses.

    With ``warm_up`` each model predicts one synthetic clip first, so later clips run at steady speed.
    """
    from mer_utils.fusion.io import fusion_parameters_for_runs

    if not run_dirs:
        raise ValueError("give at least one run folder with --models")
    timings: dict[str, float] = {}
    parameters = fusion_parameters_for_runs(run_dirs, fusion_path=fusion)
    models = {}
    labels = None
    for name, entry in parameters["modalities"].items():
        run_dir = Path(entry["run_dir"])
        info = read_run_info(run_dir)
        if info["branch"] not in clip_branches():
            raise ValueError(
                f"{run_dir}: a '{info['branch']}' run cannot read a video clip; use {clip_branches()} runs"
            )
        if labels is None:
            labels = info["labels"]
        elif info["labels"] != labels:
            raise ValueError(f"{run_dir}: label order {info['labels']} differs from the other runs' {labels}")
        module = branch_module(info["branch"])
        start = time.perf_counter()
        models[name] = {
            "module": module,
            "model": base.load_model(run_dir),
            "run_dir": run_dir,
            "branch": info["branch"],
        }
        timings[f"load {name}"] = time.perf_counter() - start
    if warm_up:
        _warm_up(models, timings)
    return {"models": models, "parameters": parameters, "labels": labels, "timings": timings}


def _warm_up(models: dict, timings: dict[str, float]) -> None:
    """Run every model once on a synthetic clip so that one-off costs (graph tracing, numba
    compilation of librosa, the face detector's start-up) are paid at load time, not per clip."""
    import tempfile

    from mer_utils.demo import make_demo_clip

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        clip = make_demo_clip(Path(folder) / "01-01-01-01-01-01-01.mp4", "neutral", "normal", 1, 1)
        for entry in models.values():
            base.predict_file(entry["run_dir"], clip, model=entry["model"])
    timings["warm-up"] = time.perf_counter() - start


def predict_clip(
    clip: str | Path,
    run_dirs: Sequence[str | Path] | None = None,
    verbose: bool = False,
    fusion: str | Path | None = None,
    loaded: dict | None = None,
    arrays: dict | None = None,
) -> dict:
    """Predict the emotion of one clip with every model and fuse them.

    Pass ``loaded`` (from :func:`load_models`) to reuse loaded models across clips.
    Returns a JSON-ready dict: clip, label, fused_probabilities, modalities (per modality:
    available, reason, probabilities, confidence, trust, weight, details), weak_answer (why the
    fused label says little about the clip, or None) and timings (s). Pass a dict as ``arrays``
    to receive, per modality, what the answer leaves out for being no JSON (a faces run's crops,
    :data:`mer_utils.pipelines.base.ARRAYS_KEY`), computed by the same pass.
    """
    import warnings

    from mer_utils.fusion.methods import fuse_single
    from mer_utils.fusion.parameters import single_clip_rule, trust_and_temperatures, weak_answer
    from mer_utils.media import MediaWarning

    clip = Path(clip)
    if not clip.is_file():
        raise FileNotFoundError(f"{clip}: no such file")
    if loaded is None:
        loaded = load_models(run_dirs or [], fusion=fusion)
    timings = dict(loaded["timings"])
    trust, temperatures = trust_and_temperatures(loaded["parameters"])
    probabilities, outcomes = {}, {}
    total = time.perf_counter()
    for name, entry in loaded["models"].items():
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            # Reading problems (a truncated file that decodes only in part) travel with the result.
            warnings.simplefilter("always", MediaWarning)
            outcome = base.predict_file(entry["run_dir"], clip, model=entry["model"])
        shown = outcome.pop(base.ARRAYS_KEY, None)
        if arrays is not None and shown:
            arrays[name] = shown
        notices = sorted({str(w.message) for w in caught if issubclass(w.category, MediaWarning)})
        if notices:
            outcome.setdefault("details", {})["warnings"] = notices
        timings[f"predict {name}"] = time.perf_counter() - start
        outcomes[name] = outcome
        probabilities[name] = outcome["probabilities"] if outcome["available"] else None
    if not any(p is not None for p in probabilities.values()):
        reasons = "; ".join(f"{n}: {o.get('reason')}" for n, o in outcomes.items())
        raise NoModalityError(f"{clip}: no modality could be used ({reasons})")
    start = time.perf_counter()
    rule = single_clip_rule(loaded["parameters"])
    fused = fuse_single(probabilities, trust, temperatures, labels=loaded["labels"], **rule)
    timings["fusion"] = time.perf_counter() - start
    timings["total after loading"] = time.perf_counter() - total
    for name, outcome in outcomes.items():
        fused["modalities"][name]["reason"] = outcome.get("reason")
        fused["modalities"][name]["details"] = outcome.get("details", {})
        fused["modalities"][name]["branch"] = loaded["models"][name]["branch"]
    result = {
        "clip": str(clip),
        "label": loaded["labels"][fused["label_index"]],
        "labels": loaded["labels"],
        "fused_probabilities": fused["fused_probabilities"],
        "method": loaded["parameters"].get("method"),
        "method_chosen_by": loaded["parameters"].get("chosen_by", "the seed's rule"),
        "modalities": fused["modalities"],
        "weak_answer": weak_answer(
            loaded["parameters"],
            fused["fused_probabilities"],
            [name for name, p in probabilities.items() if p is not None],
        ),
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    try:
        from mer_utils.ravdess import parse_filename

        result["true_label"] = parse_filename(clip).emotion
    except ValueError:
        pass  # not a RAVDESS-named file: no ground truth to show
    return result


def format_prediction(result: dict, verbose: bool = False) -> str:
    """A human-readable report of :func:`predict_clip`'s result."""
    labels = result["labels"]
    lines = [f"{result['clip']}: {result['label']}"]
    if "true_label" in result:
        lines[0] += f"  (file name says: {result['true_label']})"
    lines.append(
        "fused:   "
        + "  ".join(
            f"{label} {p:.2f}" for label, p in zip(labels, result["fused_probabilities"], strict=True)
        )
    )
    if result.get("weak_answer"):
        lines.append(f"note:    {result['weak_answer']}")
    if result.get("method"):
        lines.append(
            f"method:  {result['method']} ({result.get('method_chosen_by', 'chosen on validation')})"
        )
    for name, entry in result["modalities"].items():
        for message in entry.get("details", {}).get("warnings", []):
            lines.append(f"{name:12s} warning: {message}")
        if not entry["available"]:
            lines.append(f"{name:12s} unavailable: {entry.get('reason')}")
            continue
        best = max(range(len(labels)), key=lambda i: entry["probabilities"][i])
        lines.append(
            f"{name:12s} {labels[best]:9s} p={entry['probabilities'][best]:.2f}  confidence {entry['confidence']:.2f}"
            f"  trust {entry['trust']:.2f}  weight {entry['weight']:.2f}"
        )
        if verbose:
            lines.append(
                "             "
                + "  ".join(
                    f"{label} {p:.2f}" for label, p in zip(labels, entry["probabilities"], strict=True)
                )
            )
    if verbose:
        lines.append("timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in result["timings"].items()))
    return "\n".join(lines)


def predict_tables(run_dirs: dict[str, Path], data: str | Path) -> dict[str, pd.DataFrame]:
    """Each run's prediction table on another data set (`mer fuse --data`), keyed like ``run_dirs``.

    Each run predicts ``data`` itself through its branch's ``predict_table``; clips a run cannot
    use (no face, no audio) are absent from that run's table only.
    """
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such data folder")
    tables = {}
    for name, run_dir in run_dirs.items():
        branch = read_run_info(run_dir)["branch"]
        if branch not in clip_branches():
            raise ValueError(f"{run_dir}: a '{branch}' run cannot predict the clips of {data}")
        tables[name] = base.predict_table(run_dir, data, progress=True)
    return tables
