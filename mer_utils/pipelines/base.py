"""The branch contract: one train / evaluate / predict skeleton and one run-folder schema for every branch.

A branch (an entry of the registry of :mod:`mer_utils.branches`, the one list of branches, which
also says what it reads, its run.json keys, model variants, ``mer train`` options and the
degradation kinds its input accepts besides ``"missing"``) is a module that supplies only its own
parts:

* ``BRANCH`` (its name);
* its training, as the hooks of the one driver :func:`train` (``index``, ``split``, ``features``,
  ``fit``, ``tables``, optionally ``split_record(index, features)``: run.json's ``split``, and
  ``choose(model, settings, smoke)``: the model name and settings of the run) with its frozen
  :class:`Settings` subclass and ``FULL`` / ``SMOKE`` instances (every branch: no branch has a
  ``train`` of its own);
* ``table_of(run_dir, info, data, model, degradation, progress)``: the prediction table of a loaded
  model on a folder or an index, with ``attrs["skipped"]``;
* ``file_prediction(run_dir, info, path, model)``: the prediction of one file (a dict, see
  :func:`predict_file`); it may return :func:`unavailable` for bad media, and may add what JSON
  cannot carry under :data:`ARRAYS_KEY` (the face crops it classified);
* optionally ``load(run_dir, info)`` (a model that is more than ``model.*``),
  ``evaluation_extras(info, table)`` (keys added to ``mer evaluate``'s metrics) and
  ``segment_prediction(run_dir, info, segment, model)``: the prediction of one decoded window of a
  clip (a :class:`Segment`, for ``mer predict --timeline``) by a branch that reads frames; without
  it :func:`predict_segment` hands the window's sound to ``file_prediction`` as a WAV.

The shared drivers :func:`predict_table`, :func:`evaluate`, :func:`predict_file`, :func:`predict_segment`,
:func:`load_model` and :func:`run_info` read and check run.json, load the model once, apply the
degradation and shape the results; callers use them for every branch (a branch module has no
forwarders of its own). Choosing on validation
happens in one place per kind of choice: the epoch of a Keras model in :mod:`mer_utils.training`
(early stopping on validation loss in ``fit_classifier``; the best validation accuracy with
:func:`mer_utils.training.best_validation_callback`), a model among candidates (text) with
:func:`choose_on_validation`.

Run folder schema (written by :func:`write_run`, checked by ``tests/test_run_schema.py``):

* ``model.keras`` or ``model.skops`` (plus the files run.json's ``model_files`` lists);
* ``run.json``: :data:`RUN_KEYS` (branch, labels, model, seed, smoke, data, split, model_files,
  model_fingerprint) plus the branch's own keys (:data:`mer_utils.runs.BRANCH_KEYS` and more);
* ``metrics.json``: test metrics of :func:`mer_utils.evaluation.table_metrics` plus
  :data:`METRICS_KEYS` (model, seed, split, val = the same metrics on validation, skipped) plus the
  branch's own figures;
* ``history.json``: ``{"format": 1, "history": {metric: [per-epoch values]}, "phases": [...],
  "members": [history, ...]}`` — the saved model's curves, its training phases (empty for one
  phase) and the curves of every network trained (several for an ensemble); ``{}`` / ``[]`` for
  models without epochs. :func:`read_history` also reads the older formats (a list of histories,
  a bare history dict, ``{history, phases}``, or text runs' ``metrics.json["history"]``);
* ``skipped.csv``: columns ``path, reason`` (always written, possibly empty; a text run puts the
  CSV row id in ``path``);
* ``predictions_val.csv`` / ``predictions_test.csv``: :data:`PREDICTION_COLUMNS` then one
  ``prob_<label>`` column per label (extra columns, e.g. text's ``text``, may follow);
* optionally ``predictions_oof.csv``: the same columns plus ``fold``, every training and
  validation clip predicted by a refit that never saw its actor
  (:mod:`mer_utils.pipelines.out_of_fold`); run.json and metrics.json say under ``out_of_fold``
  whether it was written, and why not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mer_utils.branches import check_settings, get_branch
from mer_utils.pipelines import branch_module

log = logging.getLogger(__name__)

# Keys every run.json holds (branch-specific keys come after them).
RUN_KEYS = ("branch", "labels", "model", "seed", "smoke", "data", "split", "model_files", "model_fingerprint")
# Keys every metrics.json holds besides the test metrics of table_metrics.
METRIC_KEYS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1", "n", "per_class")
METRICS_KEYS = (*METRIC_KEYS, "model", "seed", "split", "val", "skipped")
# history.json: its format number and keys.
HISTORY_FILE = "history.json"
HISTORY_FORMAT = 1
HISTORY_KEYS = ("format", "history", "phases", "members")
# skipped.csv: one row per input left out, with the reason.
SKIPPED_FILE = "skipped.csv"
SKIPPED_COLUMNS = ("path", "reason")
# First columns of predictions_<split>.csv (then prob_<label> per label).
PREDICTION_COLUMNS = ("clip_id", "path", "true_label", "pred_label")
# Degradations of predict_table: "noise" (white noise at `level` dB SNR), "occlusion" (that share of
# each clip's face frames hidden) and "missing" (that share of the rows loses its prediction).
DEGRADATION_KINDS = ("noise", "occlusion", "missing")


# --- degradation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Degradation:
    """A degraded input for robustness curves: ``kind`` in :data:`DEGRADATION_KINDS` at ``level``."""

    kind: str
    level: float
    seed: int = 42

    def __post_init__(self) -> None:
        if self.kind not in DEGRADATION_KINDS:
            raise ValueError(f"unknown degradation {self.kind!r}; expected one of {DEGRADATION_KINDS}")
        if self.kind in ("occlusion", "missing") and not 0.0 <= float(self.level) <= 1.0:
            raise ValueError(f"{self.kind} level must be a share between 0 and 1, got {self.level}")


def as_degradation(value: Degradation | tuple | dict | None) -> Degradation | None:
    """A :class:`Degradation` from itself, ``(kind, level)``, ``{"kind", "level"}`` or None."""
    if value is None or isinstance(value, Degradation):
        return value
    if isinstance(value, Mapping):
        return Degradation(**value)
    if isinstance(value, tuple | list) and len(value) in (2, 3):
        return Degradation(*value)
    raise ValueError(f"a degradation is (kind, level) or a Degradation, got {value!r}")


def degradation_kind(branch: str) -> str:
    """The natural degradation of a branch's input: "noise" (audio), "occlusion" (faces) or "missing"."""
    kinds = get_branch(branch).degradations
    return kinds[0] if kinds else "missing"


def degraded_tables(
    run_dir: str | Path, data, levels: Sequence[float], kind: str | None = None, seed: int = 42
) -> dict[float, pd.DataFrame]:
    """Prediction tables of a saved run on ``data`` at each degradation level (one model load).

    ``kind`` defaults to the branch's natural degradation (:func:`degradation_kind`), so a caller
    needs no per-branch code: ``degraded_tables(run, files, levels)``.
    """
    info = run_info(run_dir)
    kind = kind or degradation_kind(info["branch"])
    model = load_model(run_dir)
    return {
        level: predict_table(run_dir, data, degradation=Degradation(kind, level, seed), model=model)
        for level in levels
    }


def _drop_share(table: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """``table`` with a random share of its rows made unavailable (NaN probabilities, empty pred_label)."""
    table = table.copy()
    count = int(round(share * len(table)))
    if count:
        drop = np.random.default_rng(seed).choice(len(table), size=count, replace=False)
        probs = [c for c in table.columns if c.startswith("prob_")]
        table.loc[table.index[drop], probs] = np.nan
        table.loc[table.index[drop], "pred_label"] = ""
    return table


# --- run.json, loading ----------------------------------------------------------------------------


def run_info(run_dir: str | Path, branch: str | None = None, complete: bool = True) -> dict:
    """A run folder's checked run.json; with ``branch``, a run of another branch raises ``ValueError``."""
    from mer_utils.runs import read_run_info

    info = read_run_info(run_dir, complete=complete)
    if branch is not None and info["branch"] != branch:
        article = "an" if branch[0] in "aeiou" else "a"
        raise ValueError(
            f"{run_dir}: is a {info['branch']!r} run, not {article} {branch} run (`mer train {branch}` makes one)"
        )
    return info


def load_model(run_dir: str | Path, branch: str | None = None):
    """The model of a run folder (checksums, labels and safe formats checked), by its branch's loader."""
    from mer_utils.runs import load_model_file

    info = run_info(run_dir, branch)
    module = branch_module(info["branch"])
    loader = getattr(module, "load", None)
    return loader(Path(run_dir), info) if loader is not None else load_model_file(run_dir, info)


# --- shared drivers ---------------------------------------------------------------------------------


def skipped_records(items: Sequence) -> list[dict]:
    """Skipped inputs as ``{"path", "reason", ...}`` dicts, from dicts or (path, reason) pairs."""
    records = []
    for item in items:
        if isinstance(item, Mapping):
            # Text rows have no file: their row id stands in the path column; other keys are kept.
            where = item.get("path", item.get("row_id", ""))
            records.append({**item, "path": str(where), "reason": str(item.get("reason", ""))})
        else:
            path, reason = item
            records.append({"path": str(path), "reason": str(reason)})
    return records


def predict_table(
    run_dir: str | Path,
    data,
    *,
    degradation: Degradation | tuple | None = None,
    model=None,
    progress: bool = False,
    branch: str | None = None,
    **options,
) -> pd.DataFrame:
    """Prediction table of a saved run on ``data`` (a folder, a CSV or an index), optionally degraded.

    ``degradation`` (:class:`Degradation` or ``(kind, level)``) is the one way to degrade input:
    "noise" and "occlusion" go to the branch's features (a branch refuses kinds its input has
    not), "missing" drops a share of the rows here. Inputs left out are in ``attrs["skipped"]``;
    ``options`` go to the branch's ``table_of`` (e.g. the video branch's ``workers``).
    """
    info = run_info(run_dir, branch)
    module = branch_module(info["branch"])
    accepted = get_branch(info["branch"]).degradations
    degradation = as_degradation(degradation)
    if degradation is not None and degradation.kind != "missing" and degradation.kind not in accepted:
        raise ValueError(
            f"{run_dir}: a {info['branch']} run cannot take {degradation.kind!r}; it accepts "
            f"{[*accepted, 'missing']}"
        )
    model = model if model is not None else load_model(run_dir)
    feature_degradation = degradation if degradation is not None and degradation.kind != "missing" else None
    table = module.table_of(Path(run_dir), info, data, model, feature_degradation, progress, **options)
    skipped = skipped_records(table.attrs.get("skipped", []))
    if degradation is not None and degradation.kind == "missing":
        attrs = dict(table.attrs)
        table = _drop_share(table, float(degradation.level), degradation.seed)
        table.attrs.update(attrs)
    table.attrs["skipped"] = skipped
    return table


def evaluate(
    run_dir: str | Path,
    data,
    branch: str | None = None,
    labels: Sequence[str] | None = None,
    out: str | Path | None = None,
    **options,
) -> dict:
    """Score a saved run on every usable input of ``data``: metrics + branch, model, seed, data, skipped.

    Rows the model could not score (no face in any frame, ...) are left out of the metrics and
    listed in ``skipped``. ``labels`` scores only those classes
    (:func:`mer_utils.evaluation.restrict_to_labels`: rows of other labels left out and counted
    in ``left_out``, the argmax restricted to ``labels``). A table with a ``corpus`` column (the
    audio and spectrogram branches) adds ``per_corpus``: each corpus's figures and predicted-label
    spread, and a note when its clips were scored as lone clips. ``out`` writes ``out/predictions.csv``
    (:func:`mer_utils.evaluation.evaluation_table`) and ``out/metrics.json``. ``options`` go to
    the branch's ``table_of`` (the text branch's ``text_column`` / ``label_column``).
    """
    from mer_utils.evaluation import per_corpus_metrics, restrict_to_labels, table_metrics

    info = run_info(run_dir, branch)
    module = branch_module(info["branch"])
    table = predict_table(run_dir, data, progress=True, **options)
    scored_labels, left_out = list(info["labels"]), None
    if labels is not None:
        attrs = dict(table.attrs)
        table, left_out = restrict_to_labels(table, labels)
        table.attrs.update(attrs)
        scored_labels = list(labels)
    scored = table[table["pred_label"].astype(str) != ""]
    if scored.empty:
        raise ValueError(f"{data}: no input could be scored (skipped: {table.attrs['skipped'][:3]})")
    metrics = table_metrics(scored, scored_labels)
    if left_out is not None:
        metrics["left_out"] = {"n": int(sum(left_out.values())), "by_label": left_out}
    if "corpus" in scored.columns:
        metrics["per_corpus"] = per_corpus_metrics(scored, scored_labels)
    metrics.update(
        {
            "branch": info["branch"],
            "model": info.get("model"),
            "seed": info.get("seed"),
            "run_dir": str(run_dir),
            "data": ", ".join(map(str, data)) if isinstance(data, list | tuple) else str(data),
            "skipped": table.attrs["skipped"],
        }
    )
    extras = getattr(module, "evaluation_extras", None)
    if extras is not None:
        metrics.update(extras(info, table))
    if out is not None:
        _write_evaluation(Path(out), table, metrics)
    return metrics


def _write_evaluation(out: Path, table: pd.DataFrame, metrics: dict) -> None:
    """``mer evaluate --out``: predictions.csv and metrics.json, written atomically."""
    from mer_utils.evaluation import evaluation_table
    from mer_utils.runs import atomic_write_bytes, write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "predictions.csv", evaluation_table(table).to_csv(index=False).encode())
    write_json(out / "metrics.json", {**metrics, "predictions": str(out / "predictions.csv")})


# Key of a file answer holding arrays for display, not for JSON ({"face_crops": uint8 (n, H, W, 3)},
# one crop per entry of details["face_frames"]): mer_utils.predict.predict_clip hands them to its
# caller apart from the answer, so `mer predict --json` never prints them.
ARRAYS_KEY = "arrays"


def face_frame_records(
    frame_probabilities: np.ndarray,
    labels: Sequence[str],
    frames: Sequence[int],
    detectors: Sequence[str],
    seconds: Sequence[float] | None = None,
) -> list[dict]:
    """One JSON-ready record per classified face: its sampled frame, time, detector, label and probabilities.

    ``frames`` are the positions of the classified faces among the sampled frames (a frame without
    a face has none); ``seconds`` the times of all sampled frames in the clip, when known.
    """
    records = []
    for row, frame in zip(np.asarray(frame_probabilities, dtype=float), frames, strict=True):
        best = int(np.argmax(row))
        records.append(
            {
                "frame": int(frame),
                "seconds": None if seconds is None else round(float(seconds[int(frame)]), 2),
                "detector": str(detectors[int(frame)]),
                "label": str(labels[best]),
                "probability": round(float(row[best]), 4),
                "probabilities": [round(float(p), 4) for p in row],
            }
        )
    return records


def unavailable(reason: str, details: dict | None = None) -> dict:
    """The answer of :func:`predict_file` for a file the model cannot read (the reason says why)."""
    return {"available": False, "reason": reason, "probabilities": None, "details": details or {}}


def predict_file(run_dir: str | Path, path: str | Path, model=None, branch: str | None = None) -> dict:
    """Predict one file: ``{"available", "reason", "probabilities", "details"}`` (never raises on bad media).

    ``probabilities`` follow run.json's label order; ``available`` is False, with the reason, for
    a missing, unreadable or unusable file (no sound, no speech, no face). A branch may add
    :data:`ARRAYS_KEY` (arrays for display, left out of JSON answers).
    """
    from mer_utils.media import MediaError

    info = run_info(run_dir, branch)
    module = branch_module(info["branch"])
    path = Path(path)
    try:
        result = module.file_prediction(Path(run_dir), info, path, model)
    except (MediaError, FileNotFoundError) as error:
        return unavailable(str(error), {"path": str(path)})
    missing = {"available", "reason", "probabilities", "details"} - set(result)
    if missing:
        raise ValueError(f"{info['branch']}.file_prediction returned no {sorted(missing)}")
    result["details"] = {"path": str(path), **(result["details"] or {})}
    return result


@dataclass(frozen=True)
class Segment:
    """One time window of a clip, already decoded: what :func:`predict_segment` hands a branch.

    ``frames`` are RGB uint8 (n, H, W, 3) spread evenly over the window (None, with
    ``frames_reason``, when the clip has no readable video); ``audio`` is mono float32 at
    ``sample_rate`` Hz (None, with ``audio_reason``, when it has no readable sound).
    """

    path: Path
    start: float
    end: float
    frames: np.ndarray | None = None
    audio: np.ndarray | None = None
    sample_rate: int = 16_000
    frames_reason: str | None = None
    audio_reason: str | None = None

    @property
    def name(self) -> str:
        """The clip and the window, as errors and reasons name it: ``clip.mp4 [3.0-6.0 s]``."""
        return f"{self.path} [{self.start:.1f}-{self.end:.1f} s]"


def predict_segment(run_dir: str | Path, segment: Segment, model=None, branch: str | None = None) -> dict:
    """Predict one window of a clip: the same answer as :func:`predict_file` (never raises on bad media).

    A branch that reads frames supplies ``segment_prediction(run_dir, info, segment, model)``; any
    other clip branch reads the window's sound through its own ``file_prediction``, from a
    temporary WAV of ``segment.audio``, so its voice check, features and normalisation are the
    single-clip ones. Reasons name the window (:attr:`Segment.name`), never the temporary file.
    """
    import tempfile

    from mer_utils.media import MediaError, write_wav

    info = run_info(run_dir, branch)
    module = branch_module(info["branch"])
    details = {"path": str(segment.path), "start": segment.start, "end": segment.end}
    own = getattr(module, "segment_prediction", None)
    if own is not None:
        result = own(Path(run_dir), info, segment, model)
    elif segment.audio is None:
        result = unavailable(f"{segment.name}: {segment.audio_reason or 'no audio'}")
    else:
        with tempfile.TemporaryDirectory(prefix="mer-window-") as folder:
            sound = Path(folder) / f"{segment.path.stem}.wav"
            try:
                if not segment.audio.size:
                    raise MediaError(f"{sound}: the audio track ends before this window")
                write_wav(sound, segment.audio, segment.sample_rate)
                result = module.file_prediction(Path(run_dir), info, sound, model)
            except (MediaError, FileNotFoundError) as error:
                result = unavailable(str(error))
            if result.get("reason"):
                result["reason"] = str(result["reason"]).replace(str(sound), segment.name)
    missing = {"available", "reason", "probabilities", "details"} - set(result)
    if missing:
        raise ValueError(f"{info['branch']} segment prediction returned no {sorted(missing)}")
    result["details"] = {**(result["details"] or {}), **details}
    return result


# --- model selection on validation -------------------------------------------------------------------


def selection_score(metrics: dict) -> float:
    """Validation score that picks a model: the mean of accuracy and macro-F1."""
    return (metrics["accuracy"] + metrics["macro_f1"]) / 2


def choose_on_validation(
    val_metrics: Mapping[str, dict], score: Callable[[dict], float] = selection_score
) -> str:
    """The candidate whose validation metrics score highest (the first on ties): the one place models are chosen."""
    if not val_metrics:
        raise ValueError("no candidate models to choose from")
    return max(val_metrics, key=lambda name: score(val_metrics[name]))


# --- settings and the one training driver -------------------------------------------------------------

# The hooks a branch module supplies for :func:`train` (see the module docstring).
TRAIN_HOOKS = ("index", "split", "features", "fit", "tables")


@dataclass(frozen=True)
class Settings:
    """Base of every branch's frozen settings dataclass: numbers are range-checked when it is made.

    A branch subclasses it (``@dataclass(frozen=True) class FacesSettings(Settings): ...``) and
    defines ``FULL`` and ``SMOKE`` instances; :func:`train` writes the one used to run.json's
    ``"settings"``. One name per concept across branches: ``epochs``, ``batch_size``,
    ``learning_rate``, ``patience``, ``augmented_copies``, ... (ranges:
    :data:`mer_utils.branches.PARAMETER_RANGES`).
    """

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, list):
                # A list from a caller or run.json becomes a tuple: settings stay frozen and hashable
                # (actors as ints: a split's test_actors / val_actors).
                whole = item.name.endswith("_actors")
                object.__setattr__(self, item.name, tuple(int(v) if whole else v for v in value))
        check_settings(self, type(self).__name__)


def settings_for(branch: str, smoke: bool = False, settings: Any = None, **overrides) -> Any:
    """A branch's settings: ``settings`` (else its SMOKE or FULL instance) with ``overrides`` replaced, checked.

    An override that is not a field raises ``ValueError`` naming the known fields; a number out
    of range raises ``ValueError`` naming the field.
    """
    module = branch_module(branch)
    start = settings if settings is not None else (module.SMOKE if smoke else module.FULL)
    known = [item.name for item in fields(start)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown {branch} settings {unknown}; expected some of {known}")
    chosen = replace(start, **overrides) if overrides else start
    check_settings(chosen, f"{branch} settings")
    return chosen


@dataclass
class Fitted:
    """What a branch's ``fit`` hook returns: the model to save and what the run folder records of it."""

    model: Any
    # "keras" or "sklearn" (mer_utils.runs.save_model).
    model_format: str
    history: dict = field(default_factory=dict)
    phases: list = field(default_factory=list)
    members: list | None = None
    # The branch's own run.json and metrics.json keys.
    info: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # Files beside the model that belong to it (hashed with it), and what writes them into the
    # run folder after the model is saved (normalisation statistics, ...).
    extra_model_files: tuple[str, ...] = ()
    write_files: Callable[[Path], None] | None = None
    # Why predictions_oof.csv is not written (a network too slow to refit per actor), when it is not.
    out_of_fold_reason: str | None = None
    # The model run.json records when fit chose it among candidates (text's "best": the one chosen
    # on validation); None keeps the name ``choose`` or the registry gave.
    model_name: str | None = None
    # Prediction tables fit already made to choose on validation, for the branch's tables hook to return.
    tables: dict | None = None


def train(
    branch: str,
    data,
    out: str | Path,
    settings: Any = None,
    *,
    seed: int | None = None,
    smoke: bool = False,
    model: str | None = None,
    progress: bool = True,
    **overrides,
) -> dict:
    """Train ``branch`` on ``data`` and write the run folder ``out``: the one driver of ``mer train``.

    The steps are the branch's hooks, in order: optionally ``choose(model, settings, smoke)`` (the
    model name run.json records and the settings it trains with, checked by the branch; without it
    ``model`` defaults to the registry's default model and must be one of its models), ``index(data,
    settings)`` (rows, with ``attrs["skipped"]``), ``split(index, settings, seed)`` (adds a
    ``split`` column: train / val / test), ``features(index, settings, model, seed, progress)`` (a
    dict; an optional ``"skipped"`` list), ``fit(features, settings, model, seed)`` (a
    :class:`Fitted`), then the model is saved and ``tables(fitted, features, settings, labels)``
    gives the val and test prediction tables for :func:`write_run` (and may add to
    ``fitted.metrics`` figures read off them; a "oof" table becomes predictions_oof.csv); run.json
    gets ``"settings"`` and ``"data"`` the index's ``attrs["data"]`` when it has one (else ``data``).
    ``settings`` defaults to the branch's SMOKE or FULL instance; ``overrides`` replace single
    fields (``mer train``'s ``--epochs`` and ``--text-column`` land here).
    Returns metrics.json.
    """
    from mer_utils.config import DEFAULT_SEED, set_seed
    from mer_utils.runs import save_model

    spec = get_branch(branch)
    module = branch_module(branch)
    seed = DEFAULT_SEED if seed is None else int(seed)
    missing = [hook for hook in TRAIN_HOOKS if not hasattr(module, hook)]
    if missing:
        raise ValueError(f"branch {branch!r}: module {module.__name__} lacks the training hooks {missing}")
    chosen = settings_for(branch, smoke, settings, **overrides)
    choose = getattr(module, "choose", None)
    if choose is not None:
        model_name, chosen = choose(model, chosen, smoke)
    else:
        model_name = model or spec.default_model
        if model_name not in spec.models:
            raise ValueError(f"unknown {branch} model {model_name!r}; expected one of {list(spec.models)}")
    labels = list(spec.labels)
    set_seed(seed)
    index = module.index(data, chosen)
    skipped = list(index.attrs.get("skipped", []))
    # What run.json's "data" says: the branch's description of its input (text: the resolved
    # source paths; a given index: not its printout), else the data as given.
    data_record = index.attrs.get("data", data)
    index = module.split(index, chosen, seed)
    features = module.features(index, chosen, model_name, seed, progress)
    skipped += list(features.get("skipped", []))
    fitted = module.fit(features, chosen, model_name, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(out, fitted.model, fitted.model_format)
    if fitted.write_files is not None:
        fitted.write_files(out)
    tables = module.tables(fitted, features, chosen, labels)
    split_record = getattr(module, "split_record", None)
    split = (
        split_record(index, features)
        if split_record is not None
        else {part: int((index["split"] == part).sum()) for part in ("train", "val", "test")}
    )
    return write_run(
        out,
        branch=branch,
        labels=labels,
        model=fitted.model_name or model_name,
        seed=seed,
        smoke=smoke,
        data=data_record,
        split=split,
        tables=tables,
        skipped=skipped,
        history=fitted.history,
        phases=fitted.phases,
        members=fitted.members,
        extra_model_files=fitted.extra_model_files,
        info={**fitted.info, "settings": asdict(chosen)},
        metrics=fitted.metrics,
        out_of_fold_reason=fitted.out_of_fold_reason,
    )


# --- writing and reading the run folder ---------------------------------------------------------------


def history_record(
    history: dict | None = None, phases: Sequence[dict] = (), members: Sequence[dict] | None = None
) -> dict:
    """The one history.json content: the saved model's curves, its phases and every network's curves."""
    history = dict(history or {})
    return {
        "format": HISTORY_FORMAT,
        "history": history,
        "phases": list(phases),
        "members": list(members) if members is not None else ([history] if history else []),
    }


def write_run(
    out: str | Path,
    *,
    branch: str,
    labels: Sequence[str],
    model: str,
    seed: int,
    smoke: bool,
    data,
    split: Any,
    tables: Mapping[str, pd.DataFrame],
    skipped: Sequence = (),
    history: dict | None = None,
    phases: Sequence[dict] = (),
    members: Sequence[dict] | None = None,
    extra_model_files: Sequence[str] = (),
    info: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    out_of_fold_reason: str | None = None,
) -> dict:
    """Write a trained run's folder in the one schema (the model is saved first); return metrics.json.

    ``tables`` holds the "val" and "test" prediction tables and, optionally, "oof" (out-of-fold
    predictions of the training and validation clips, with a ``fold`` column:
    :mod:`mer_utils.pipelines.out_of_fold`), written as predictions_oof.csv; run.json and
    metrics.json then describe it under ``out_of_fold``, or give ``out_of_fold_reason`` for its
    absence. ``info`` holds the branch's own run.json keys and ``metrics`` its own metrics.json
    keys (neither may redefine a schema key).
    """
    from mer_utils.evaluation import table_metrics
    from mer_utils.pipelines import out_of_fold
    from mer_utils.runs import (
        MODEL_FILES_KEY,
        atomic_write_bytes,
        write_json,
        write_metrics,
        write_predictions,
        write_run_info,
    )

    out = Path(out)
    if not any(out.glob("model.*")):
        raise FileNotFoundError(f"{out}: save the model (runs.save_model) before write_run")
    info, extra_metrics = dict(info or {}), dict(metrics or {})
    oof_table = tables.get(out_of_fold.OOF_SPLIT)
    if oof_table is not None:
        parts = split if isinstance(split, Mapping) else {}
        actors = [int(actor) for part in ("train", "val") for actor in parts.get(part, [])]
        oof_entry = out_of_fold.summary(oof_table, labels, actors)
    else:
        oof_entry = out_of_fold.skipped(out_of_fold_reason)
    info.setdefault(
        out_of_fold.OOF_KEY, {k: v for k, v in oof_entry.items() if k not in ("accuracy", "macro_f1")}
    )
    extra_metrics.setdefault(out_of_fold.OOF_KEY, oof_entry)
    clash = set(info) & set(RUN_KEYS) | {MODEL_FILES_KEY} & set(info)
    if clash:
        raise ValueError(f"run.json keys {sorted(clash)} are fixed by the schema; pass them as arguments")
    for part in ("val", "test"):
        if part not in tables:
            raise ValueError(f"write_run needs the {part!r} prediction table")
        write_predictions(out, part, tables[part])
    oof_path = out / out_of_fold.OOF_FILE
    if oof_table is not None:
        write_predictions(out, out_of_fold.OOF_SPLIT, oof_table)
    elif oof_path.is_file():
        oof_path.unlink()  # an older run's file in a reused folder would be mistaken for this model's
    skipped = skipped_records(skipped)
    atomic_write_bytes(
        out / SKIPPED_FILE, pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)).to_csv(index=False).encode()
    )
    write_json(out / HISTORY_FILE, history_record(history, phases, members))

    def scored(table: pd.DataFrame) -> pd.DataFrame:
        return table[table["pred_label"].astype(str) != ""]

    result = table_metrics(scored(tables["test"]), list(labels))
    result.update(
        {
            "model": model,
            "seed": int(seed),
            "split": split,
            "val": table_metrics(scored(tables["val"]), list(labels)),
            "skipped": skipped,
        }
    )
    clash = set(extra_metrics) & set(result)
    if clash:
        raise ValueError(f"metrics.json keys {sorted(clash)} are fixed by the schema")
    result.update(extra_metrics)
    write_metrics(out, result)
    # run.json last: a run cut short (a full disk, a kill) leaves no folder that looks like a run.
    write_run_info(
        out,
        branch,
        list(labels),
        extra_model_files=extra_model_files,
        model=model,
        seed=int(seed),
        smoke=bool(smoke),
        data=", ".join(map(str, data)) if isinstance(data, list | tuple) else str(data),
        split=split,
        **info,
    )
    return result


def read_history(run_dir: str | Path) -> dict:
    """A run's training curves in the one format (:func:`history_record`), whatever format wrote them.

    Reads history.json as written now, or as older runs wrote it: a list of Keras histories
    (audio), a bare history dict (spectrogram), ``{history, phases}`` (video, faces); text runs
    kept the curves in ``metrics.json["history"]``. A run without curves gives empty ones.
    """
    from mer_utils.runs import METRICS_FILE, read_json

    run_dir = Path(run_dir)
    path = run_dir / HISTORY_FILE
    if path.is_file():
        stored = read_json(path)
    elif (run_dir / METRICS_FILE).is_file():
        stored = read_json(run_dir / METRICS_FILE).get("history") or {}
    else:
        stored = {}
    if isinstance(stored, list):
        members = [dict(h) for h in stored if isinstance(h, dict)]
        return history_record(members[0] if members else {}, (), members)
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: expected a JSON object or list of training curves; retrain the run")
    if "history" in stored and isinstance(stored["history"], dict):
        return history_record(stored["history"], stored.get("phases") or (), stored.get("members"))
    return history_record(stored)
