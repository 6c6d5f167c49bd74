"""Run folders in, results out: what `mer fuse` reads (predictions) and writes (tables, fusion.json)."""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.fusion.calibration import calibrate
from mer_utils.fusion.comparison import (
    FusionComparison,
    calibration_table,
    compare_fitted,
    run_comparison,
    weight_examples,
    weights_by_emotion,
)
from mer_utils.fusion.fitting import OUT_OF_FOLD_FIT, VALIDATION_FIT, fit_fusion_independent
from mer_utils.fusion.parameters import (
    FUSION_FILE,
    check_fusion_runs,
    fit_clips_text,
    fit_fusion_parameters,
    fusion_parameters,
    load_fusion_parameters,
)
from mer_utils.fusion.plots import plot_reliability_diagrams, plot_robustness_curves, plot_weights_by_emotion
from mer_utils.fusion.robustness import missing_modality_curve
from mer_utils.fusion.statistics import BOOTSTRAP_SAMPLES

LOGGER = logging.getLogger(__name__)
# Folder of `mer fuse --data` results inside the fusion output folder.
DATA_FOLDER = "data"


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


# `mer fuse --fit-on`: "auto" fits on out-of-fold predictions when every run has them, else on
# validation; "validation" always fits on validation (the behaviour before out-of-fold predictions).
FIT_ON_CHOICES = ("auto", VALIDATION_FIT)
# The out-of-fold predictions of a run folder (written by training: mer_utils.pipelines.out_of_fold).
OOF_SPLIT = "oof"


def fitting_tables(
    names: Mapping[str, Path],
    val_tables: Mapping[str, pd.DataFrame],
    test_tables: Mapping[str, pd.DataFrame] | None = None,
    fit_on: str = "auto",
) -> tuple[dict[str, pd.DataFrame], str, dict]:
    """(tables to fit the fusion on, "out-of-fold" or "validation", what was used and why).

    With ``fit_on="auto"`` and a predictions_oof.csv in every run folder, the out-of-fold tables
    (every training and validation actor, each clip predicted by a model that never heard its
    actor) are used, less any clip that is in a run's test table (runs trained on other splits
    must not fit the fusion on the clips it is scored on). Otherwise the validation tables, and
    the returned note names the runs without out-of-fold predictions.
    """
    from mer_utils.evaluation import labels_from_columns as columns_labels
    from mer_utils.runs import read_predictions

    if fit_on not in FIT_ON_CHOICES:
        raise ValueError(f"fit_on must be one of {FIT_ON_CHOICES}, got {fit_on!r}")
    if fit_on == VALIDATION_FIT:
        return (
            dict(val_tables),
            VALIDATION_FIT,
            {"note": "validation predictions, as asked (--fit-on validation)"},
        )
    lacking = [
        name
        for name, run_dir in names.items()
        if not (Path(run_dir) / f"predictions_{OOF_SPLIT}.csv").is_file()
    ]
    if lacking:
        note = f"validation predictions: runs {lacking} have no predictions_{OOF_SPLIT}.csv"
        return dict(val_tables), VALIDATION_FIT, {"note": note, "runs_without_out_of_fold": lacking}
    test_clips = set()
    for table in (test_tables or {}).values():
        test_clips |= set(table["clip_id"].astype(str))
    tables = {}
    for name, run_dir in names.items():
        table = read_predictions(run_dir, OOF_SPLIT)
        if columns_labels(table) != columns_labels(val_tables[name]):
            raise ValueError(
                f"{run_dir}/predictions_{OOF_SPLIT}.csv: probability columns {columns_labels(table)} differ "
                f"from predictions_val.csv's {columns_labels(val_tables[name])}; retrain the run"
            )
        tables[name] = table[~table["clip_id"].astype(str).isin(test_clips)].reset_index(drop=True)
    if any(table.empty for table in tables.values()) or not _share_clips(tables):
        note = (
            "validation predictions: the runs' out-of-fold predictions share no clip outside the test parts"
        )
        return dict(val_tables), VALIDATION_FIT, {"note": note}
    return tables, OUT_OF_FOLD_FIT, {"note": "out-of-fold predictions of every training and validation actor"}


def _model_fingerprint(run_dir: Path) -> str | None:
    """SHA-256 of a run's model file(s) (``model.*``), or None when it has none."""
    files = sorted(path for path in run_dir.glob("model.*") if path.is_file())
    if not files:
        return None
    from mer_utils.runs import file_sha256

    return hashlib.sha256("".join(file_sha256(path) for path in files).encode()).hexdigest()


def _prediction_fingerprint(run_dir: Path) -> str | None:
    """Hash of a run's rounded validation and test probabilities by clip (None if it has none)."""
    from mer_utils.evaluation import labels_from_columns, probabilities_of
    from mer_utils.runs import read_predictions

    digest = hashlib.sha256()
    for split in ("val", "test"):
        try:
            table = read_predictions(run_dir, split)
        except FileNotFoundError:
            return None
        table = table.sort_values("clip_id")
        digest.update("|".join(table["clip_id"].astype(str)).encode())
        digest.update(np.round(probabilities_of(table, labels_from_columns(table)), 6).tobytes())
    return digest.hexdigest()


def drop_duplicate_runs(run_dirs: Sequence[str | Path]) -> list[Path]:
    """The run folders without repeats of one model: same model file hash or identical predictions.

    Each repeat is left out with a warning naming both folders, so one model is never counted
    twice (it would get double weight in every fusion rule).
    """
    kept: list[Path] = []
    seen: dict[str, Path] = {}
    for run_dir in (Path(r) for r in run_dirs):
        keys = [
            ("model file", _model_fingerprint(run_dir)),
            ("predictions", _prediction_fingerprint(run_dir)),
        ]
        duplicate = next(((what, seen[key]) for what, key in keys if key is not None and key in seen), None)
        if duplicate is not None:
            what, first = duplicate
            message = (
                f"{run_dir} holds the same model as {first} (identical {what}); "
                f"it is left out so that model is not counted twice"
            )
            warnings.warn(message, UserWarning, stacklevel=2)
            LOGGER.warning(message)
            continue
        for _, key in keys:
            if key is not None:
                seen[key] = run_dir
        kept.append(run_dir)
    return kept


def fusion_parameters_for_runs(
    run_dirs: Sequence[str | Path], fusion_path: str | Path | None = None, trust: str = "macro_f1"
) -> dict:
    """Fusion parameters for `mer predict`, keyed by the modality names of ``run_dirs``.

    With ``fusion_path`` (fusion.json or its folder, written by `mer fuse`) the stored trust,
    temperatures and chosen method are used and must cover every run; without it they are fitted
    now on the runs' predictions_val.csv. Each modality entry gets its ``run_dir``.
    """
    names = modality_names(drop_duplicate_runs(run_dirs))
    if fusion_path is not None:
        parameters = load_fusion_parameters(fusion_path)
        missing = [name for name in names if name not in parameters["modalities"]]
        if missing:
            raise ValueError(
                f"{fusion_path}: no trust/temperature for modalities {missing} "
                f"(it has {list(parameters['modalities'])}); run `mer fuse` on these run folders"
            )
        chosen = parameters.get("method", "")
        if chosen.startswith("single_") and chosen[len("single_") :] not in names:
            raise ValueError(
                f"{fusion_path}: the chosen method {chosen!r} needs that run; add it to --models"
            )
        parameters["modalities"] = {name: dict(parameters["modalities"][name]) for name in names}
        check_fusion_runs(parameters, names, fusion_path)
    else:
        val_tables = read_run_tables(list(names.values()), splits=("val",))[0]
        try:
            test_tables = read_run_tables(list(names.values()), splits=("test",))[1]
        except FileNotFoundError:
            test_tables = {}
        if len(val_tables) > 1 and not _share_clips(val_tables):
            parameters = _independent_parameters(val_tables, trust)
        else:
            fit_tables, fitted_on, note = fitting_tables(names, val_tables, test_tables)
            parameters = fit_fusion_parameters(fit_tables, trust=trust, fitted_on=fitted_on)
            parameters["fit_data"].update(note)
    for name, run_dir in names.items():
        parameters["modalities"][name]["run_dir"] = str(Path(run_dir).resolve())
    return parameters


def _share_clips(tables: Mapping[str, pd.DataFrame]) -> bool:
    """True when every pair of validation tables has clips in common (runs of the same clips)."""
    clip_sets = [set(table["clip_id"].astype(str)) for table in tables.values()]
    return all(a & b for i, a in enumerate(clip_sets) for b in clip_sets[i + 1 :])


# What fusion.json says when the runs were fitted each on its own validation part.
INDEPENDENT_CHOICE = (
    "the runs were validated on different samples (no clip in common), so each run's temperature and "
    "trust are fitted on its own validation part and the seed's rule combines them"
)


def _independent_parameters(val_tables: Mapping[str, pd.DataFrame], trust: str) -> dict:
    """Fusion parameters for runs validated on different samples (:func:`fit_fusion_independent`)."""
    parameters = fusion_parameters(fit_fusion_independent(val_tables, trust=trust))
    parameters["chosen_by"] = INDEPENDENT_CHOICE
    return parameters


def markdown_table(table: pd.DataFrame, digits: int = 3, caption: str = "") -> str:
    """The results table as GitHub markdown: value [CI low, CI high] for accuracy and macro-F1.

    The validation-chosen default method is marked "(chosen)"; ``caption`` (what the fusion was
    fitted on, the guard's test) follows the table.
    """
    lines = [
        "| method | accuracy [95% CI] | macro-F1 [95% CI] | n | val CV accuracy | description |",
        "|---|---|---|---|---|---|",
    ]
    for method, row in table.iterrows():
        accuracy = f"{row['accuracy']:.{digits}f} [{row['accuracy_ci_low']:.{digits}f}, {row['accuracy_ci_high']:.{digits}f}]"
        f1 = f"{row['macro_f1']:.{digits}f} [{row['macro_f1_ci_low']:.{digits}f}, {row['macro_f1_ci_high']:.{digits}f}]"
        cv = row.get("val_cv_accuracy", np.nan)
        cv_text = "" if pd.isna(cv) else f"{cv:.{digits}f}"
        name = f"**{method}** (chosen)" if bool(row.get("chosen", False)) else method
        lines.append(
            f"| {name} | {accuracy} | {f1} | {int(row['n'])} | {cv_text} | {row.get('description', '')} |"
        )
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


def fit_caption(fitted) -> str:
    """One line under the table: what the fusion was fitted on and the guard's paired test."""
    text = f"Fitted on {fit_clips_text(fitted)}"
    note = (fitted.fit_data or {}).get("note")
    if fitted.fitted_on == VALIDATION_FIT and note and "runs" in note:
        text += f" ({note.split(': ', 1)[-1]})"
    text += "; the val CV accuracy column is cross-validated on them."
    guard = fitted.guard or {}
    if guard:
        verdict = "replaces" if guard["passed"] else "does not replace"
        text += (
            f" Guard: {guard['method']} {verdict} {guard['baseline']} (gain {guard['gain']:+.3f} over "
            f"{guard['n']} clips, {guard['wins']} won vs {guard['losses']} lost, {guard['test']} "
            f"p = {guard['p_value']:.3g}"
        )
        if guard.get("speakers"):
            text += f"; better on {guard['speakers_won']} and worse on {guard['speakers_lost']} of {guard['speakers']} speakers"
        text += ")."
    return text


def write_tables(comparison: FusionComparison, out: Path) -> dict[str, Path]:
    """The table (CSV, markdown), metrics.json and mcnemar.json of one comparison."""
    from mer_utils.runs import atomic_write_bytes, write_json

    return {
        "table_csv": atomic_write_bytes(out / "fusion_table.csv", comparison.table.to_csv().encode()),
        "table_md": atomic_write_bytes(
            out / "fusion_table.md",
            markdown_table(comparison.table, caption=fit_caption(comparison.fitted)).encode(),
        ),
        "metrics": write_json(out / "metrics.json", comparison.metrics),
        "mcnemar": write_json(out / "mcnemar.json", comparison.mcnemar),
    }


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
    written = write_tables(comparison, out)
    branches = {name: _run_branch(run_dir) for name, run_dir in (run_dirs or {}).items()}
    parameters = fusion_parameters(comparison.fitted, run_dirs, branches)
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
    after = calibrate(before, comparison.fitted.temperatures)
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


def _fuse_independent_runs(
    val_tables: Mapping[str, pd.DataFrame],
    names: Mapping[str, Path],
    out: str | Path,
    seed: int,
    trust: str,
    n_boot: int,
    predict_data: Callable[[Mapping[str, Path]], Mapping[str, pd.DataFrame]] | None,
) -> pd.DataFrame:
    """`mer fuse` for runs validated on different samples (e.g. a faces run beside RAVDESS runs).

    Each run is fitted on its own validation part (:func:`fit_fusion_independent`); the runs'
    test parts share no clip either, so every method is scored on ``predict_data`` (each run
    predicting the same new clips), written to ``out/data/`` and returned.
    """
    if predict_data is None:
        raise ValueError(
            f"the runs {sorted(names)} were validated on different samples (no clip in common), so "
            "their fusion can only be scored on clips they all predict: give --data RAVDESS_DIR"
        )
    from mer_utils.runs import write_json

    fitted = fit_fusion_independent(val_tables, trust=trust)
    on_data = compare_fitted(fitted, dict(predict_data(names)), seed=seed, n_boot=n_boot)
    out = Path(out)
    folder = out / DATA_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    write_tables(on_data, folder)
    branches = {name: _run_branch(run_dir) for name, run_dir in names.items()}
    parameters = fusion_parameters(fitted, names, branches)
    parameters.update({"seed": seed, "chosen_by": INDEPENDENT_CHOICE})
    write_json(out / FUSION_FILE, parameters)
    return on_data.table


def fuse_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    seed: int = 42,
    trust: str = "macro_f1",
    n_boot: int = BOOTSTRAP_SAMPLES,
    predict_data: Callable[[Mapping[str, Path]], Mapping[str, pd.DataFrame]] | None = None,
    fit_on: str = "auto",
) -> pd.DataFrame:
    """`mer fuse`: compare every fusion method on run folders' predictions and write the results to ``out``.

    Reads run.json (branch) and predictions_val/test.csv of each run, fits calibration, trust,
    stacking and the method choice on the runs' out-of-fold predictions when every run has
    predictions_oof.csv (``fit_on="auto"``; see :func:`fitting_tables`), else on validation,
    scores on test and writes fusion_table.csv/.md,
    metrics.json, mcnemar.json, fusion.json (what `mer predict` loads), weight_examples.csv,
    missing_modality_curve.csv and figures. With ``predict_data`` (modality -> run folder in,
    modality -> prediction table out, e.g. every run predicting another data set) the fitted
    fusion and every baseline are also scored on those tables, written to ``out/data/``.
    Returns the test table.
    """
    if len(run_dirs) < 2:
        raise ValueError(f"fusion needs at least two run folders, got {len(run_dirs)}")
    modality_names(run_dirs)  # a folder given twice is an error, not a duplicate model
    kept = drop_duplicate_runs(run_dirs)
    if len(kept) < 2:
        raise ValueError(f"fusion needs at least two different models; {len(run_dirs)} folders hold one")
    val_tables, test_tables, names = read_run_tables(kept)
    if not _share_clips(val_tables):
        return _fuse_independent_runs(val_tables, names, out, seed, trust, n_boot, predict_data)
    fit_tables, fitted_on, note = fitting_tables(names, val_tables, test_tables, fit_on)
    comparison = run_comparison(
        fit_tables, test_tables, trust=trust, seed=seed, n_boot=n_boot, fitted_on=fitted_on
    )
    comparison.fitted.fit_data.update(note)
    missing_curve = missing_modality_curve(comparison.fitted, comparison.test, seed=seed)
    write_fusion_outputs(comparison, out, names, missing_curve, seed=seed)
    if predict_data is not None:
        data_tables = dict(predict_data(names))
        on_data = compare_fitted(comparison.fitted, data_tables, seed=seed, n_boot=n_boot)
        folder = Path(out) / DATA_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        write_tables(on_data, folder)
    return comparison.table
