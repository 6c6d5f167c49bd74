"""Robustness of every fusion method when one run's audio gets noisier (real recordings).

The fusion (temperatures, trust, the validation choice) is fitted on the runs' clean validation
predictions, as `mer fuse` does. Then the run named by --noisy re-predicts its own test clips with
white noise added at each SNR (``base.predict_table(degradation=("noise", snr))``), the other runs keep
their clean test predictions, and every method is scored at every level. Usage (about 1 min per
level for a Whisper run on 2 shared CPU cores):

    python scripts/fusion_noise_curves.py runs/audio_whisper runs/audio_logreg runs/spectrogram \
        --noisy audio_whisper --data ../shared/data/ravdess_speech_16k --out /tmp/noise \
        --figure figures/reference/06_degraded_audio_real.png

Writes ``degraded_curve.csv`` and ``degraded_curve.png`` in --out (and --figure if given), and
prints the accuracy of each method per SNR. With ``--results fusion_noise`` it also writes each
method's accuracy per SNR into results/fusion_noise.json (then ``python scripts/render_results.py``
updates the README).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

from mer_utils import fusion
from mer_utils.config import DEFAULT_SEED
from mer_utils.pipelines import base
from mer_utils.plotting import pyplot, save_figure
from mer_utils.ravdess import index_dataset

# White-noise levels (dB SNR), clean to very noisy.
SNR_LEVELS_DB = (30, 20, 10, 5, 0, -5)


def test_files(table: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """The index rows of the files a run scored in its test table (matched by file name)."""
    names = {Path(path).name for path in table["path"].dropna().astype(str)}
    return index[index["path"].map(lambda path: Path(path).name).isin(names)]


def main(argv: list[str] | None = None) -> int:
    """Fit the fusion on clean validation, degrade one run's test audio, score every method."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--noisy", required=True, help="folder name of the run whose audio gets noise")
    parser.add_argument(
        "--data", type=Path, required=True, help="the RAVDESS folder the runs were trained on"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--snr", type=float, nargs="+", default=list(SNR_LEVELS_DB))
    parser.add_argument("--figure", type=Path, help="also copy the figure here")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--results", help="also write the accuracies into results/RESULTS.json")
    args = parser.parse_args(argv)

    val_tables, test_tables, names = fusion.read_run_tables(fusion.drop_duplicate_runs(args.run_dirs))
    by_folder = {run_dir.name: name for name, run_dir in names.items()}
    if args.noisy not in by_folder:
        parser.error(f"--noisy {args.noisy!r} is not one of the run folders {sorted(by_folder)}")
    name = by_folder[args.noisy]
    fitted = fusion.fit_fusion(val_tables, seed=args.seed)
    print(f"chosen on validation: {fitted.chosen}")
    run_dir = names[name]
    files = test_files(test_tables[name], index_dataset(args.data))
    levels = {}
    for level in args.snr:
        levels[level] = base.predict_table(run_dir, files, degradation=("noise", level), progress=True)
        print(f"{name} at {level:g} dB: {len(levels[level])} clips", flush=True)
    curve = fusion.degraded_modality_curve(fitted, test_tables, name, levels)
    args.out.mkdir(parents=True, exist_ok=True)
    curve.to_csv(args.out / "degraded_curve.csv", index=False)
    figure = fusion.plot_robustness_curves(
        curve, "level", "modality", "{} with white noise", xlabel="SNR (dB)"
    )
    figure.axes[0].invert_xaxis()  # clean on the left, noisier to the right
    path = save_figure(figure, "degraded_curve", folder=args.out)
    pyplot().close(figure)
    if args.figure is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, args.figure)
    table = curve.pivot_table(index="method", columns="level", values="accuracy")
    print(table[sorted(table.columns, reverse=True)].round(3).to_string())
    if args.results:
        print(record_results(args.results, curve, args, name, argv))
    return 0


def record_results(
    results: str, curve: pd.DataFrame, args: argparse.Namespace, noisy: str, argv: list[str] | None
) -> Path:
    """Write each method's accuracy per SNR level into results/RESULTS.json (one row per method)."""
    from mer_utils.results import command_line, update_results

    rows = []
    for method, group in curve.groupby("method", sort=False):
        levels = group.sort_values("level", ascending=False)
        values = {
            f"{level:g} dB": float(accuracy)
            for level, accuracy in zip(levels["level"], levels["accuracy"], strict=True)
        }
        rows.append({"name": method, "key": method, "values": values})
    runs = ", ".join(str(run_dir) for run_dir in args.run_dirs)
    defaults = {
        "row_label": "method",
        "data": {"path": str(args.data), "description": f"RAVDESS, runs {runs}"},
        "protocol": {
            "split": "fusion fitted on the runs' clean validation predictions",
            "test": f"{noisy}'s test input with white noise at each SNR, the other runs clean",
        },
    }
    return update_results(results, rows, command_line(__file__, argv), defaults)


if __name__ == "__main__":
    sys.exit(main())
