"""Benchmark the text branch on several seeds: every model's test metrics, the chosen one, timings.

Usage (real data stays outside the repository):
    .venv/bin/python scripts/benchmark_text.py ../shared/data/text/emotion_dataset_raw.csv \
        --out /tmp/text_benchmark --seeds 42 1 7

Each seed runs exactly `mer train text --data CSV --out OUT/seed<S> --seed S` (all models, the
best chosen on validation) and the script prints one table per seed plus the chosen model's
test scores across seeds (mean and spread), and writes them as CSV beside the runs. With
``--results text`` it also writes every model's test scores into results/text.json (the first seed
in the main columns, the others beside them); ``python scripts/render_results.py`` then updates
the README.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

# Seeds of the published comparison.
DEFAULT_SEEDS = (42, 1, 7)
# Columns of the per-model table.
COLUMNS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1", "macro_auc")


def main() -> None:
    """Run the benchmark and print / write its tables."""
    from mer_utils.pipelines.base import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="text CSV (Emotion, Text)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the run folders and tables")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--model", default=None, help="one model instead of all (default: best)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--results", help="also write the scores into results/RESULTS.json (e.g. text)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if args.results and args.smoke:
        parser.error("--results records real measurements; drop --smoke")
    rows = []
    chosen = []
    by_seed = {}
    for seed in args.seeds:
        start = time.perf_counter()
        metrics = train(
            "text", args.data, args.out / f"seed{seed}", seed=seed, smoke=args.smoke, model=args.model
        )
        seconds = time.perf_counter() - start
        by_seed[seed] = metrics
        for name, result in metrics["models"].items():
            row = {"seed": seed, "model": name, **{k: result["test"][k] for k in COLUMNS}}
            row |= {"val_accuracy": result["val"]["accuracy"], "val_macro_f1": result["val"]["macro_f1"]}
            row |= {"train_seconds": result["train_seconds"], "chosen": name == metrics["model"]}
            rows.append(row)
        chosen.append(
            {"seed": seed, "model": metrics["model"], **{k: metrics[k] for k in COLUMNS}, "seconds": seconds}
        )
        print(
            f"seed {seed}: chosen {metrics['model']}, test accuracy {metrics['accuracy']:.3f}, "
            f"macro-F1 {metrics['macro_f1']:.3f} ({seconds:.0f} s)",
            flush=True,
        )
    table = pd.DataFrame(rows)
    summary = pd.DataFrame(chosen)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "models_by_seed.csv", index=False)
    summary.to_csv(args.out / "chosen_by_seed.csv", index=False)
    with pd.option_context("display.width", 160, "display.precision", 3):
        print(table.to_string(index=False))
        print(summary.to_string(index=False))
        print(summary[list(COLUMNS)].agg(["mean", "min", "max"]).to_string())
    if args.results:
        print(record_results(args.results, args.data, args.seeds, by_seed))


def record_results(name: str, data: Path, seeds: list[int], by_seed: dict[int, dict]) -> Path:
    """Write every model's test scores into results/NAME.json: first seed in front, others beside."""
    from mer_utils.results import command_line, update_results

    first, others = seeds[0], seeds[1:]
    main = by_seed[first]
    rows = []
    for model, result in main["models"].items():
        row = {"name": model, "key": model, "accuracy": result["test"]["accuracy"]}
        row["macro_f1"] = result["test"]["macro_f1"]
        row["other_seeds"] = {
            str(seed): {k: by_seed[seed]["models"][model]["test"][k] for k in ("accuracy", "macro_f1")}
            for seed in others
            if model in by_seed[seed]["models"]
        }
        if model == main["model"]:
            row["values"] = {"macro AUC": result["test"]["macro_auc"]}
        row["details"] = {"chosen_by_seed": {str(s): by_seed[s]["model"] for s in seeds}}
        rows.append(row)
    also = f", seeds {', '.join(map(str, others))} beside them" if others else ""
    defaults = {
        "data": {"path": str(data), "description": "text emotion CSV (Emotion, Text)"},
        "protocol": {
            "split": "de-duplicated, stratified 70/20/10 split",
            "selection": "chosen on validation",
        },
        "protocol_update": {"test": f"the test part scored once; seed {first} in the main columns{also}"}
        | {"n": main["n"]},
    }
    return update_results(name, rows, command_line(__file__), defaults)


if __name__ == "__main__":
    main()
