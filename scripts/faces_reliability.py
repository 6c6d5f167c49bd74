"""Confusion matrix and reliability diagram of a faces run on unseen images, from `mer evaluate`'s predictions.

Fusion trusts the faces branch's probabilities, so they should mean what they say: of the faces
answered with top probability about 0.9, about 90% should be right. This script reads the
``predictions.csv`` that ``mer evaluate RUN --data DIR --out OUT`` writes, keeps the labels the
run was trained on (FER2013 has no calm), and writes

- ``<figures>/faces_confusion_<name>.png``: counts and row-normalised (recall), side by side;
- ``<figures>/faces_reliability_<name>.png``: accuracy against top-label confidence in equal-width
  bins (bar width = the bin, the count written on each bar), with the expected calibration error;
- with ``--results``: one row with accuracy, mean confidence and ECE, and one row per bin.

    mer evaluate mer_utils/default_runs/faces --data DATA_DIR/faces/fer2013/validation --out /tmp/faces_eval
    .venv/bin/python scripts/faces_reliability.py /tmp/faces_eval/predictions.csv \\
        --run mer_utils/default_runs/faces --name publictest --figures figures/reference \\
        --results faces_calibration
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# Equal-width confidence bins of the diagram and the ECE (the fusion module's choice, for comparison).
BINS = 10


def plot_reliability(curve: pd.DataFrame, ece: float, title: str):
    """Accuracy per confidence bin against the diagonal of perfect calibration; counts on the bars."""
    from mer_utils.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.6))
    centres = (curve["bin_low"] + curve["bin_high"]) / 2
    width = float(curve["bin_high"].iloc[0] - curve["bin_low"].iloc[0])
    bars = ax.bar(
        centres, curve["accuracy"].fillna(0), width=width, edgecolor="black", alpha=0.7, label="accuracy"
    )
    ax.plot(curve["confidence"], curve["confidence"], "o", color="tab:red", ms=3, label="mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    for bar, count in zip(bars, curve["count"], strict=True):
        if count:
            ax.text(
                bar.get_x() + width / 2, bar.get_height() + 0.01, str(int(count)), ha="center", fontsize=7
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy (share right)")
    ax.set_title(f"{title}: ECE {ece:.3f}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def _image_folder(table: pd.DataFrame) -> str:
    """The folder holding every scored image, as a results file names it (``DATA_DIR/...``)."""
    import os

    from mer_utils.results import placeholder_path

    if "path" not in table.columns:
        return "the images of the predictions file"
    return placeholder_path(os.path.commonpath(table["path"].astype(str).tolist()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path, help="predictions.csv written by `mer evaluate --out`")
    parser.add_argument(
        "--run", type=Path, required=True, help="the faces run that made them (for its labels)"
    )
    parser.add_argument("--name", default="publictest", help="name of the scored part in figure names")
    parser.add_argument("--figures", type=Path, default=Path("figures"), help="folder of the figures")
    parser.add_argument("--results", help="write the rows into results/RESULTS.json")
    args = parser.parse_args(argv)

    from mer_utils.evaluation import probabilities_of
    from mer_utils.fusion.calibration import expected_calibration_error, reliability_curve
    from mer_utils.plotting import plot_confusion_matrices, save_figure
    from mer_utils.runs import read_run_info

    if not args.predictions.is_file():
        parser.error(
            f"{args.predictions}: no such file; write it with `mer evaluate RUN --data DIR --out OUT`"
        )
    info = read_run_info(args.run)
    labels = list(info["labels"])
    present = [label for label in labels if label in info.get("present_labels", labels)]
    table = pd.read_csv(args.predictions)
    missing = {"true_label", "pred_label"} - set(table.columns)
    if missing:
        parser.error(
            f"{args.predictions}: no {sorted(missing)} column; is it a `mer evaluate` predictions.csv?"
        )
    table = table[table["true_label"].astype(str).isin(present)].reset_index(drop=True)
    if table.empty:
        parser.error(f"{args.predictions}: no row whose true label is one of {present}")
    probabilities = probabilities_of(table, labels)
    targets = np.array([labels.index(str(label)) for label in table["true_label"]])
    curve = reliability_curve(probabilities, targets, BINS)
    ece = expected_calibration_error(probabilities, targets, BINS)
    top = probabilities.max(axis=1)
    accuracy = float((probabilities.argmax(axis=1) == targets).mean())
    title = f"faces run on {args.name} (n = {len(table):,})"

    confusion = plot_confusion_matrices(table["true_label"], table["pred_label"], present, title=args.name)
    confusion_path = save_figure(confusion, f"faces_confusion_{args.name}", args.figures)
    reliability_path = save_figure(
        plot_reliability(curve, ece, title), f"faces_reliability_{args.name}", args.figures
    )
    print(f"accuracy {accuracy:.3f}  mean confidence {top.mean():.3f}  ECE {ece:.3f}  n {len(table)}")
    print(curve.round(3).to_string(index=False))
    print(f"figures: {confusion_path}, {reliability_path}")
    if args.results:
        from mer_utils.results import command_line, update_results

        rows = [
            {
                "key": f"{args.name}/all",
                "name": f"all {len(table):,} images",
                "accuracy": accuracy,
                "n": len(table),
                "values": {"mean confidence": round(float(top.mean()), 3), "ECE": round(ece, 3)},
            }
        ]
        for _, row in curve[curve["count"] > 0].iterrows():
            rows.append(
                {
                    "key": f"{args.name}/{row['bin_low']:.1f}-{row['bin_high']:.1f}",
                    "name": f"confidence {row['bin_low']:.1f}-{row['bin_high']:.1f}",
                    "accuracy": float(row["accuracy"]),
                    "n": int(row["count"]),
                    "values": {"mean confidence": round(float(row["confidence"]), 3)},
                }
            )
        defaults = {
            "title": "Faces: are the probabilities right as often as they say?",
            "data": {
                "path": _image_folder(table),
                "description": f"{args.name}: images the run never saw, scored by `mer evaluate`",
            },
            "protocol": {
                "split": f"the run {args.run}; rows whose true label it was trained on ({', '.join(present)})",
                "test": f"top-label confidence in {BINS} equal-width bins against the share right; "
                "ECE = the count-weighted mean gap",
                "n": len(table),
            },
            "row_label": "confidence bin",
        }
        path = update_results(args.results, rows, command_line(__file__, argv), defaults)
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
