"""Actor-grouped k-fold benchmark of the MFCC audio models on a RAVDESS folder.

Every fold tests on its own group of actors, validates (early stopping) on the next group and trains
on the rest, so each actor is a test speaker exactly once. A speaker-normalised MFCC-statistics SVC
trained on the same training actors (validation actors left out), runs on the same folds as a reference. Usage (about 3 minutes per fold and model on 2 CPU cores):

    python scripts/benchmark_audio.py --data ../shared/data/ravdess_speech_16k --models cnn --out /tmp/audio_kfold

The scikit-learn models (``--models whisper logreg svm``) take under a minute per fold once their clip
vectors are cached (the first pass over 1,080 clips: about 1.5 min for Whisper, 3 min for the statistics).

Prints one row per fold and model and the mean and standard deviation; writes ``kfold.csv`` in --out,
and with ``--results audio_kfold`` each model's mean ± standard deviation and fold accuracies into
results/audio_kfold.json (then ``python scripts/render_results.py`` updates the README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils import audio
from mer_utils.branches import get_branch
from mer_utils.config import DEFAULT_SEED
from mer_utils.pipelines import base
from mer_utils.ravdess import audio_takes


def actor_folds(actors: list[int], folds: int) -> list[list[int]]:
    """Split sorted actors into ``folds`` groups, alternating genders (odd / even ids) where possible."""
    males = [a for a in sorted(actors) if a % 2 == 1]
    females = [a for a in sorted(actors) if a % 2 == 0]
    groups: list[list[int]] = [[] for _ in range(folds)]
    for position, actor in enumerate(males + females):
        groups[position % folds].append(actor)
    return [sorted(g) for g in groups]


def svc_reference(
    index: pd.DataFrame, test_actors: list[int], seed: int, val_actors: list[int] = ()
) -> float:
    """Accuracy of an RBF SVC on per-speaker-normalised MFCC statistics (mean, std, 5th / 95th percentile)."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    batch = audio.mfcc_batch(index, audio.MfccParams(), progress=False)
    speakers = batch.rows["actor"].to_numpy()
    x = audio.normalise_per_speaker(batch.features, speakers)
    stats = np.concatenate(
        [x.mean(axis=1), x.std(axis=1), np.percentile(x, 5, axis=1), np.percentile(x, 95, axis=1)], axis=1
    )
    stats = audio.normalise_per_speaker(stats[:, None, :], speakers)[:, 0, :]
    labels = batch.rows["emotion"].to_numpy()
    test = np.isin(speakers, test_actors)
    # Train on exactly the networks' training actors: neither test nor validation voices.
    train = ~test & ~np.isin(speakers, list(val_actors))
    scaler = StandardScaler().fit(stats[train])
    model = SVC(C=3.0, random_state=seed).fit(scaler.transform(stats[train]), labels[train])
    return float((model.predict(scaler.transform(stats[test])) == labels[test]).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="RAVDESS folder (e.g. ravdess_speech_16k)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the fold runs and kfold.csv")
    parser.add_argument(
        "--models",
        nargs="+",
        default=[get_branch("audio").default_model],
        help="cnn lstm bilstm attention stats ensemble logreg svm whisper",
    )
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--only-folds", type=int, nargs="*", help="run only these fold numbers (0-based)")
    parser.add_argument("--ensemble", type=int, default=1, help="seeds averaged per model (default 1)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--results", help="also write the k-fold figures into results/RESULTS.json")
    args = parser.parse_args(argv)
    if args.results and args.only_folds:
        parser.error("--results records every fold; drop --only-folds")

    index = audio_takes(args.data)
    groups = actor_folds(sorted(int(a) for a in index["actor"].unique()), args.folds)
    rows = []
    for fold, test_actors in enumerate(groups):
        if args.only_folds and fold not in args.only_folds:
            continue
        val_actors = groups[(fold + 1) % len(groups)]
        rows.append(
            {
                "fold": fold,
                "model": "svc_stats",
                "test_actors": test_actors,
                "val_actors": val_actors,
                "accuracy": svc_reference(index, test_actors, args.seed, val_actors),
                "val_accuracy": np.nan,
            }
        )
        print(rows[-1], flush=True)
        for name in args.models:
            metrics = base.train(
                "audio",
                args.data,
                args.out / f"fold{fold}_{name}",
                seed=args.seed,
                model=name,
                test_actors=test_actors,
                val_actors=val_actors,
                ensemble_size=args.ensemble,
                progress=False,
            )
            rows.append(
                {
                    "fold": fold,
                    "model": name,
                    "test_actors": test_actors,
                    "val_actors": val_actors,
                    "accuracy": metrics["accuracy"],
                    "val_accuracy": metrics["val"]["accuracy"],
                    "macro_f1": metrics["macro_f1"],
                }
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "kfold.csv", index=False)
    print(table.to_string(index=False))
    print(table.groupby("model")["accuracy"].agg(["mean", "std", "count"]).round(3).to_string())
    if args.results:
        print(record_results(args.results, table, args.data, argv))
    return 0


def record_results(name: str, table: pd.DataFrame, data: Path, argv: list[str] | None) -> Path:
    """Write each model's mean ± standard deviation over the folds (and the folds) into results/NAME.json."""
    from mer_utils.results import command_line, update_results

    rows = []
    for model, group in table.groupby("model", sort=False):
        accuracy = group.sort_values("fold")["accuracy"]
        value = {"mean": float(accuracy.mean()), "sd": float(accuracy.std())}
        rows.append(
            {
                "name": model,
                "key": model,
                "values": {f"{len(accuracy)}-fold accuracy": value},
                "details": {"folds": [round(float(a), 4) for a in accuracy]},
            }
        )
    folds = int(table["fold"].nunique())
    defaults = {
        "data": {"path": str(data), "description": "RAVDESS speech"},
        "protocol": {
            "split": f"actor-grouped {folds} folds, genders alternating: each fold tests one group, "
            "validates on the next and trains on the rest",
            "test": f"every actor tested once; mean ± standard deviation over the {folds} folds",
        },
    }
    return update_results(name, rows, command_line(__file__, argv), defaults)


if __name__ == "__main__":
    sys.exit(main())
