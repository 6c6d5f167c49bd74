"""Record the key metrics of a `mer train` or `mer fuse` output folder in results/NAME.json.

    python scripts/record_result.py audio runs/audio_real --key whisper \
        --command "mer train audio --data ../shared/data/ravdess_speech_16k --out runs/audio_real"
    python scripts/record_result.py fusion runs/fusion_real --key "whisper + logreg + spectrogram" \
        --command "mer fuse runs/audio_whisper runs/audio_logreg runs/spectrogram --out runs/fusion_real"

A training run gives one row: test accuracy, macro-F1, n, a 95% bootstrap interval of accuracy from
``predictions_test.csv``, macro AUC and validation accuracy (and per-class recall with ``--per-class``). A fusion
folder (it holds fusion.json) gives one row for the fused runs: the default's test accuracy and
interval, the validation choice, the best single run, the plain mean, product, stacking and the
seed's entropy x trust rule. The row replaces the one with the same ``--key`` (other rows stay);
a new results file takes its data and protocol from the run (``--data-description`` adds a line).
Then ``python scripts/render_results.py`` updates docs/results.md (and the README headline).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mer_utils.results import load_results, merge_rows, results_path, write_results
from mer_utils.runs import read_json

# Bootstrap resamples of the recorded interval (as `mer fuse`).
BOOTSTRAP_SAMPLES = 1000
# Fusion rows shown beside the default, by their column name in the results table.
FUSION_COLUMNS = {
    "plain mean": "mean",
    "product": "product",
    "stacking": "stacking",
    "entropy x trust": "entropy_trust",
}


def accuracy_interval(run_dir: Path, seed: int = 42) -> list[float] | None:
    """95% bootstrap interval of test accuracy from a run's predictions_test.csv (None without it)."""
    import numpy as np

    from mer_utils.fusion import bootstrap_ci
    from mer_utils.runs import read_predictions

    if not (run_dir / "predictions_test.csv").is_file():
        return None
    # In clip order, as `mer fuse` resamples, so both give the same interval for the same predictions.
    table = read_predictions(run_dir, "test").sort_values("clip_id", kind="stable")
    labels = sorted(set(table["true_label"].astype(str)) | set(table["pred_label"].astype(str)))
    targets = np.array([labels.index(label) for label in table["true_label"].astype(str)])
    predictions = np.array([labels.index(label) for label in table["pred_label"].astype(str)])
    low, high = bootstrap_ci(targets, predictions, "accuracy", n_boot=BOOTSTRAP_SAMPLES, seed=seed)
    return [round(low, 4), round(high, 4)]


def run_row(run_dir: Path, key: str, per_class: bool) -> dict:
    """The results row of a `mer train` run folder."""
    metrics = read_json(run_dir / "metrics.json")
    # A run trained without some labels (a faces run has no calm) is scored over the labels it
    # knows, as other models of that data are.
    present = metrics.get("present_labels") if isinstance(metrics.get("present_labels"), dict) else {}
    row = {
        "name": key,
        "key": key,
        "accuracy": present.get("accuracy", metrics["accuracy"]),
        "macro_f1": present.get("macro_f1", metrics["macro_f1"]),
    }
    row["n"] = metrics["n"]
    interval = accuracy_interval(run_dir, int(metrics.get("seed", 42)))
    if interval:
        row["ci95"] = {"accuracy": interval}
    values = {"macro AUC": metrics.get("macro_auc")}
    if isinstance(metrics.get("val"), dict):
        values["val accuracy"] = metrics["val"].get("accuracy")
    row["values"] = {name: value for name, value in values.items() if value is not None}
    if per_class:
        row["per_class_recall"] = {
            label: scores["recall"]
            for label, scores in metrics["per_class"].items()
            if not present or scores.get("support", 1) > 0
        }
    kept = ("model", "seed", "train_seconds", "train_images_per_second", "epochs")
    row["details"] = {key: metrics.get(key) for key in kept if key in metrics}
    row["details"]["run"] = str(run_dir)
    return row


def fusion_row(fusion_dir: Path, key: str) -> dict:
    """The results row of a `mer fuse` output folder: the default and the usual baselines."""
    from mer_utils.fusion import GUARDED_METHOD, SINGLE_PREFIX

    metrics = read_json(fusion_dir / "metrics.json")
    parameters = read_json(fusion_dir / "fusion.json")
    default = metrics[GUARDED_METHOD]
    chosen = str(parameters.get("method", GUARDED_METHOD))
    trust = {name: entry.get("trust", 0.0) for name, entry in parameters.get("modalities", {}).items()}
    best_single = f"{SINGLE_PREFIX}{max(trust, key=trust.get)}" if trust else None
    values = {}
    if "fitted_on" in parameters:
        fit_data = parameters.get("fit_data") or {}
        actors = fit_data.get("actors") or []
        values["fitted on"] = (
            f"{parameters['fitted_on']} ({len(actors)} actors, {fit_data.get('n', '?')} clips)"
        )
    values["chosen"] = f"`{chosen}`"
    if chosen.startswith(SINGLE_PREFIX):
        # A single run is named by its folder (the modality name may repeat the branch: audio-audio_x).
        entry = parameters.get("modalities", {}).get(chosen.removeprefix(SINGLE_PREFIX), {})
        run = Path(entry["run_dir"]).name if entry.get("run_dir") else chosen.removeprefix(SINGLE_PREFIX)
        values["chosen"] = f"{run} alone"
    values["best single"] = metrics[best_single]["accuracy"] if best_single in metrics else None
    values |= {
        column: metrics[method]["accuracy"] for column, method in FUSION_COLUMNS.items() if method in metrics
    }
    cv = parameters.get("val_cv_accuracy", {}).get(FUSION_COLUMNS["entropy x trust"])
    if cv is not None:
        values["its val CV"] = cv
    row = {"name": key, "key": key, "accuracy": default["accuracy"], "n": default["n"], "values": values}
    if "accuracy_ci_low" in default:
        row["ci95"] = {"accuracy": [default["accuracy_ci_low"], default["accuracy_ci_high"]]}
    guard = parameters.get("guard") or {}
    if guard:
        values["guard p"] = guard.get("p_value")
    row["details"] = {
        "fusion_dir": str(fusion_dir),
        "fitted_on": parameters.get("fitted_on", "validation"),
        "guard": guard,
        "methods": {m: v["accuracy"] for m, v in metrics.items()},
        "val_cv_accuracy": parameters.get("val_cv_accuracy", {}),
        "variants": parameters.get("variants", {}),
    }
    return row


def new_record(run_dir: Path, command: str, description: str | None) -> dict:
    """A results file for a run not recorded before: data and protocol from its metrics and run.json."""
    metrics = read_json(run_dir / "metrics.json")
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    data = metrics.get("data") or info.get("data") or str(run_dir)
    split = metrics.get("split")
    return {
        "data": {"path": str(data), **({"description": description} if description else {})},
        "protocol": {
            "split": f"the run's split: {split}" if split else "the run's own split",
            "test": "its test part, scored once",
        },
        "command": command,
        "metrics": [],
    }


def main(argv: list[str] | None = None) -> int:
    """Copy one run's key metrics into a results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="results file name (results/NAME.json)")
    parser.add_argument("run_dir", type=Path, help="a `mer train` run folder or a `mer fuse` output folder")
    parser.add_argument("--command", required=True, help="the command line that made the run")
    parser.add_argument("--key", help="row id (default: the folder name); the row with this key is replaced")
    parser.add_argument("--row", help="row label shown in the results table (default: the key)")
    parser.add_argument("--per-class", action="store_true", help="also record per-class recall")
    parser.add_argument("--data-description", help="what the data is (a new results file only)")
    parser.add_argument("--results-dir", type=Path, help="results folder (default: results/ of the checkout)")
    args = parser.parse_args(argv)

    if not (args.run_dir / "metrics.json").is_file():
        parser.error(f"{args.run_dir}: no metrics.json; give a `mer train` or `mer fuse` output folder")
    key = args.key or args.run_dir.name
    is_fusion = (args.run_dir / "fusion.json").is_file()
    row = fusion_row(args.run_dir, key) if is_fusion else run_row(args.run_dir, key, args.per_class)
    if args.row:
        row["name"] = args.row
    if results_path(args.name, args.results_dir).is_file():
        record = load_results(args.name, args.results_dir)
    else:
        record = new_record(args.run_dir, args.command, args.data_description)
    row["command"] = args.command
    keep = ("bold", "decimals") if args.row else ("name", "bold", "decimals")
    record["metrics"] = merge_rows(record["metrics"], [row], keep=keep)
    path = write_results(args.name, record, args.results_dir)
    print(f"{path}: row {key!r}: accuracy {row['accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
