"""Cross-domain text benchmark: train on some text sources, test on each source's own test part.

Usage (real data stays outside the repository):
    .venv/bin/python scripts/benchmark_text_domains.py ../shared/data/text/emotion_dataset_raw.csv \
        ../shared/data/text/isear.csv ../shared/data/text/meld --results text_domains

The sources are read and de-duplicated together (mer_utils.text_sources: a text in two sources
is kept once, in the first named; a text with two labels is dropped) and split once, per source
(70 / 20 / 10, stratified by label; MELD by dialogue), so every configuration is tested on the
same rows. Configurations: the first source alone (the single-CSV model), every source left out
(train on the others' train parts, test on the left-out source's test part) and all sources.
The model is the fast fixed linear SVM on TF-IDF that chooses the per-source sample weights on
validation (mer_utils.pipelines.text_candidates.fit_weighted_probe; no grid search, so the whole
benchmark stays within minutes). Test metrics: accuracy, macro-F1 and weighted-F1 (MELD's usual
measure) with 95% bootstrap intervals. With ``--results NAME`` the rows go into results/NAME.json
(``python scripts/render_results.py`` renders them).

``--model tfidf+minilm`` fits the same fixed SVM on TF-IDF joined with MiniLM sentence embeddings
(the default install's numpy encoder; every text embedded once, cached under .cache/text_embeddings:
about an hour for the ~43k texts on two shared cores); its rows are named after it.
``--only KEY`` runs only the configurations named (e.g. ``--only "all sources"``).
``--vote`` soft-votes that SVM with an MLP on MiniLM embeddings, the per-source weight exponent
(0 or 0.5) and the MLP's vote weight chosen together on validation by the mean of accuracy and
macro-F1 over all validation rows, as ``mer train text`` chooses its model
(mer_utils.pipelines.text_candidates.fit_probe_vote); its rows are named '<model> + MiniLM MLP vote'.
``--calibrated-vote`` soft-votes three members, the TF-IDF SVM, the tfidf+minilm SVM and the MiniLM
MLP, each SVM's softmax temperature fitted on validation, the vote weights (and the source-weight
exponent among ``--powers``) chosen on validation by the mean of the first source's accuracy and
MELD's weighted-F1 (those of them trained on; mer_utils.pipelines.text_candidates.fit_calibrated_vote);
its rows are named 'calibrated vote (...)'.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

# Bootstrap resamples of each interval.
BOOTSTRAP_SAMPLES = 1000
# Columns of the printed table and of each results row.
COLUMNS = ("accuracy", "macro_f1", "weighted_f1")
# The models --model offers: the TF-IDF probe, and the same SVM on TF-IDF joined with MiniLM embeddings.
MODELS = ("svm", "tfidf+minilm")


def configurations(sources: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """(key, training sources, tested sources): the first source alone, each left out, all."""
    configs = [(f"only {sources[0]}", [sources[0]], sources)]
    for held in sources:
        configs.append((f"without {held}", [s for s in sources if s != held], [held]))
    configs.append(("all sources", list(sources), sources))
    return configs


def _f1_scores(true: np.ndarray, predicted: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 and support from a confusion matrix (fast enough for a thousand resamples)."""
    matrix = np.bincount(true * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    hits = np.diag(matrix).astype(float)
    support, guessed = matrix.sum(axis=1).astype(float), matrix.sum(axis=0).astype(float)
    denominator = support + guessed
    f1 = np.divide(2 * hits, denominator, out=np.zeros(classes), where=denominator > 0)
    return f1, support


def scores_with_intervals(
    true: np.ndarray, predicted: np.ndarray, labels: list[str], seed: int, samples: int = BOOTSTRAP_SAMPLES
) -> dict:
    """Accuracy, macro-F1 (over the classes present) and weighted-F1 with percentile bootstrap intervals."""
    from mer_utils.fusion.statistics import bootstrap_ci

    index = {label: i for i, label in enumerate(labels)}
    y, p = np.array([index[v] for v in true]), np.array([index[v] for v in predicted])
    classes = len(labels)

    def macro(a, b):
        f1, support = _f1_scores(a, b, classes)
        return float(f1[support > 0].mean())

    def weighted(a, b):
        f1, support = _f1_scores(a, b, classes)
        return float((f1 * support).sum() / support.sum())

    metrics = {"accuracy": lambda a, b: float((a == b).mean()), "macro_f1": macro, "weighted_f1": weighted}
    result = {name: metric(y, p) for name, metric in metrics.items()}
    result["ci95"] = {
        name: [round(v, 4) for v in bootstrap_ci(y, p, metric, n_boot=samples, seed=seed)]
        for name, metric in metrics.items()
    }
    return result


def main(argv: list[str] | None = None) -> int:
    """Run every configuration, print the table, optionally write the results file."""
    from mer_utils import text_sources
    from mer_utils.config import TEXT_LABELS
    from mer_utils.models.text import JOINT_EMBEDDING_WEIGHT
    from mer_utils.pipelines.text_candidates import (
        PROBE_VOTE_POWERS,
        SOURCE_WEIGHT_PROBE_C,
        fit_calibrated_vote,
        fit_probe_vote,
        fit_weighted_probe,
        probabilities,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sources", type=Path, nargs="+", help="text sources (files or folders), the first the seed CSV"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--bootstrap", type=int, default=BOOTSTRAP_SAMPLES, help="bootstrap resamples per interval"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny corpora (tests): keep every TF-IDF term")
    parser.add_argument("--results", help="also write the rows into results/RESULTS.json (e.g. text_domains)")
    parser.add_argument("--model", choices=MODELS, default="svm", help="the fixed model (default: svm)")
    parser.add_argument(
        "--embedding-weight",
        type=float,
        help="tfidf+minilm: scale of the embedding block (default: the model's)",
    )
    parser.add_argument("--c", type=float, help="the SVM's C (default: SOURCE_WEIGHT_PROBE_C)")
    parser.add_argument(
        "--vote",
        action="store_true",
        help="soft-vote the SVM with an MLP on MiniLM embeddings (chosen on val)",
    )
    parser.add_argument(
        "--calibrated-vote",
        action="store_true",
        help="vote of the TF-IDF SVM, the tfidf+minilm SVM and the MiniLM MLP (temperatures, weights chosen on val)",
    )
    parser.add_argument(
        "--powers",
        type=float,
        nargs="+",
        default=list(PROBE_VOTE_POWERS),
        help="--calibrated-vote: the source-weight exponents to choose from on validation",
    )
    parser.add_argument("--only", nargs="+", help="run only these configurations (e.g. 'all sources')")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.results and args.smoke:
        parser.error("--results records real measurements; drop --smoke")
    if len(args.sources) < 2:
        parser.error("give at least two sources")
    if args.calibrated_vote and (args.vote or args.model != "svm" or args.c is not None):
        parser.error("--calibrated-vote fixes its members: drop --vote, --model and --c")

    labels = list(TEXT_LABELS)
    frame = text_sources.source_split(text_sources.prepare_text_sources(args.sources), seed=args.seed)
    names = list(dict.fromkeys(frame["source"]))
    report = frame.attrs["report"]
    joint = args.model == "tfidf+minilm"
    embedding_weight = (args.embedding_weight or JOINT_EMBEDDING_WEIGHT) if joint else None
    c = args.c or SOURCE_WEIGHT_PROBE_C
    chosen = configurations(names)
    if args.only:
        unknown = sorted(set(args.only) - {key for key, _, _ in chosen})
        if unknown:
            parser.error(
                f"--only: unknown configuration(s) {unknown}; expected some of {[k for k, _, _ in chosen]}"
            )
        chosen = [config for config in chosen if config[0] in args.only]
    # Rows of other models than the default probe carry its name, so both sit in one results file.
    prefix = "" if args.model == "svm" and args.c is None and not args.vote else f"{args.model} (C {c:g}"
    if prefix:
        prefix += f", embeddings x{embedding_weight:g})" if joint else ")"
        prefix += " + MiniLM MLP vote: " if args.vote else ": "
    if args.calibrated_vote:
        prefix = "calibrated vote (svm, tfidf+minilm, MiniLM MLP): "
    rows = []
    for key, training, tested in chosen:
        start = time.perf_counter()
        used = frame[frame["source"].isin(training)]
        if args.calibrated_vote:
            model, weighting = fit_calibrated_vote(
                used[used["split"] == "train"],
                used[used["split"] == "val"],
                seed=args.seed,
                smoke=args.smoke,
                powers=args.powers,
                scored_sources=[names[0], "meld"],
            )
        else:
            fit = fit_probe_vote if args.vote else fit_weighted_probe
            model, weighting = fit(
                used[used["split"] == "train"],
                used[used["split"] == "val"],
                seed=args.seed,
                smoke=args.smoke,
                embedding_weight=embedding_weight,
                c=c,
            )
        seconds = time.perf_counter() - start
        for source in tested:
            test = frame[(frame["source"] == source) & (frame["split"] == "test")]
            probs = probabilities(model, test["text"].tolist(), labels)
            predicted = [labels[i] for i in probs.argmax(axis=1)]
            scores = scores_with_intervals(
                test["emotion"].to_numpy(), np.array(predicted), labels, args.seed, args.bootstrap
            )
            row = {
                "name": f"{prefix}{key} -> {source}",
                "key": f"{prefix}{key}: {source}",
                **{k: round(scores[k], 4) for k in ("accuracy", "macro_f1")},
                "n": int(len(test)),
                "ci95": scores["ci95"],
                "values": {
                    "weighted-F1": round(scores["weighted_f1"], 4),
                    "seen in training": source in training,
                },
                "details": {
                    "trained_on": training,
                    "train_texts": int((used["split"] == "train").sum()),
                    "source_weighting": {
                        k: weighting[k]
                        for k in (
                            "power",
                            "weights",
                            "minilm_weight",
                            "joint_weight",
                            "temperatures",
                            "scored_sources",
                            "val_score",
                        )
                        if k in weighting
                    },
                    "train_seconds": round(seconds, 1),
                },
            }
            rows.append(row)
            print(
                f"{row['name']:45s} n={row['n']:5d}  "
                + "  ".join(
                    f"{c} {scores[c]:.3f} [{scores['ci95'][c][0]:.3f}, {scores['ci95'][c][1]:.3f}]"
                    for c in COLUMNS
                ),
                flush=True,
            )
    if args.results:
        from mer_utils.results import command_line, update_results

        kept = ", ".join(
            f"{name} {source['kept_after_deduplication']:,} of {source['kept']:,}"
            for name, source in report["sources"].items()
        )
        # Which labels of each later source survive de-duplication against the earlier ones.
        notes = [
            f"Texts of {name} left after de-duplication, by label: "
            + ", ".join(f"{label} {count:,}" for label, count in counts.items())
            + "."
            for name, counts in (
                (name, frame.loc[frame["source"] == name, "emotion"].value_counts().to_dict())
                for name in names[1:]
            )
        ]
        defaults = {
            "title": "Text across domains",
            "data": {
                "path": "DATA_DIR/text",
                "description": "the seed text CSV, ISEAR (guilt skipped) and MELD train + dev (its test part is held back)",
            },
            "protocol": {
                "split": (
                    "all sources read and de-duplicated together (a text kept once, in the first source named; "
                    "texts with two labels dropped), then split once per source 70/20/10 stratified by label, "
                    f"MELD by dialogue, seed {args.seed}; texts kept per source (of those with a usable label): {kept}"
                ),
                "test": (
                    "each row: the model trained on the named sources' train parts (sample weights per source "
                    "chosen on their validation parts) and scored on one source's test part; 95% bootstrap "
                    f"intervals ({args.bootstrap} resamples)"
                ),
                "model": (
                    "linear SVM (C 0.2, square-root class weights, softmax scores) on word + character TF-IDF: "
                    "mer_utils.pipelines.text_candidates.fit_weighted_probe, no grid search; rows named "
                    "'tfidf+minilm (C c, embeddings xw)': the same SVM with C c on TF-IDF joined with MiniLM "
                    "sentence embeddings scaled by w (mer_utils.models.text.joint_features); rows ending '+ MiniLM MLP vote': "
                    "that SVM soft-voted with an MLP on MiniLM embeddings, the source-weight exponent and the MLP's "
                    "vote weight chosen on validation (fit_probe_vote); rows named 'calibrated vote (...)': the "
                    "TF-IDF SVM, the tfidf+minilm SVM (C 0.1) and the MiniLM MLP soft-voted, each SVM's softmax "
                    "temperature fitted on validation log-loss, the two vote weights and the source-weight "
                    "exponent chosen on validation by the mean of the seed CSV's accuracy and MELD's weighted-F1 "
                    "(fit_calibrated_vote)"
                ),
            },
            "row_label": "trained on -> tested on",
            "value_decimals": {"weighted-F1": 3},
        }
        defaults["protocol_update"] = defaults["protocol"]
        path = update_results(args.results, rows, command_line(__file__, argv), defaults)
        from mer_utils.results import load_results, write_results

        record = load_results(args.results)
        record["notes"] = notes
        path = write_results(args.results, record)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
