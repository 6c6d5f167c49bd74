"""Metrics and per-clip prediction tables shared by every branch.

A *prediction table* is a DataFrame with one row per sample: ``clip_id``, ``path``,
``true_label`` and one ``prob_<label>`` column per class in the fixed label order.
It is what ``predictions_val.csv`` / ``predictions_test.csv`` hold and what fusion reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PROB_PREFIX = "prob_"


def prob_columns(labels: Sequence[str]) -> list[str]:
    """Return the probability column names for ``labels`` (``prob_<label>``)."""
    return [f"{PROB_PREFIX}{label}" for label in labels]


def labels_from_columns(table: pd.DataFrame) -> list[str]:
    """Return the label order encoded in a prediction table's ``prob_`` columns."""
    labels = [c[len(PROB_PREFIX) :] for c in table.columns if c.startswith(PROB_PREFIX)]
    if not labels:
        raise ValueError("prediction table has no 'prob_<label>' columns")
    return labels


def prediction_table(
    probabilities: np.ndarray,
    labels: Sequence[str],
    clip_ids: Sequence[str],
    true_labels: Sequence[str] | None = None,
    paths: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Build a prediction table from an (n, K) probability array.

    ``true_labels`` may be None for unlabelled data (the column is then empty).
    """
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(labels):
        raise ValueError(f"probabilities must have shape (n, {len(labels)}), got {probabilities.shape}")
    n = probabilities.shape[0]
    if len(clip_ids) != n:
        raise ValueError(f"{len(clip_ids)} clip ids for {n} rows of probabilities")
    table = pd.DataFrame(
        {
            "clip_id": list(clip_ids),
            "path": list(paths) if paths is not None else [""] * n,
            "true_label": list(true_labels) if true_labels is not None else [""] * n,
            "pred_label": [labels[i] for i in probabilities.argmax(axis=1)],
        }
    )
    for column, values in zip(prob_columns(labels), probabilities.T, strict=True):
        table[column] = values
    return table


def probabilities_of(table: pd.DataFrame, labels: Sequence[str] | None = None) -> np.ndarray:
    """Return the (n, K) probability array of a prediction table."""
    labels = list(labels) if labels is not None else labels_from_columns(table)
    missing = [c for c in prob_columns(labels) if c not in table.columns]
    if missing:
        raise ValueError(f"prediction table lacks columns {missing}")
    return table[prob_columns(labels)].to_numpy(dtype=float)


def classification_metrics(
    true_labels: Sequence[str],
    predicted_labels: Sequence[str],
    labels: Sequence[str],
) -> dict:
    """Accuracy, macro / weighted precision, recall, F1 and a per-class report.

    Returns a JSON-ready dict with the keys every ``metrics.json`` uses:
    accuracy, macro_precision, macro_recall, macro_f1, weighted_precision,
    weighted_recall, weighted_f1, per_class, n, labels, confusion_matrix.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    true_labels = [str(x) for x in true_labels]
    predicted_labels = [str(x) for x in predicted_labels]
    if len(true_labels) != len(predicted_labels):
        raise ValueError(f"{len(true_labels)} true labels but {len(predicted_labels)} predictions")
    if not true_labels:
        raise ValueError("cannot compute metrics on zero samples")
    unknown = sorted(set(true_labels) - set(labels))
    if unknown:
        raise ValueError(f"true labels {unknown} are not in the label order {list(labels)}")
    labels = list(labels)
    result: dict = {
        "accuracy": float(accuracy_score(true_labels, predicted_labels)),
        "n": len(true_labels),
        "labels": labels,
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            true_labels, predicted_labels, labels=labels, average=average, zero_division=0
        )
        result[f"{average}_precision"] = float(p)
        result[f"{average}_recall"] = float(r)
        result[f"{average}_f1"] = float(f)
    p, r, f, s = precision_recall_fscore_support(
        true_labels, predicted_labels, labels=labels, average=None, zero_division=0
    )
    result["per_class"] = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, label in enumerate(labels)
    }
    result["confusion_matrix"] = confusion_matrix(true_labels, predicted_labels, labels=labels).tolist()
    return result


def table_metrics(table: pd.DataFrame, labels: Sequence[str] | None = None) -> dict:
    """Metrics of a prediction table (argmax of its probabilities against true_label)."""
    labels = list(labels) if labels is not None else labels_from_columns(table)
    probabilities = probabilities_of(table, labels)
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    metrics = classification_metrics(table["true_label"].astype(str), predicted, labels)
    metrics.update(roc_auc(table["true_label"].astype(str), probabilities, labels))
    return metrics


# Columns of the prediction table `mer evaluate --out DIR` writes as DIR/predictions.csv (then prob_<label>).
EVALUATION_COLUMNS = ("path", "corpus", "speaker", "true_label", "pred_label")


def merge_labels(table: pd.DataFrame, merged: dict[str, str]) -> pd.DataFrame:
    """``table`` with each label ``a`` of ``merged`` folded into ``merged[a]``: probabilities added, true
    and predicted labels renamed (e.g. ``{"calm": "neutral"}``: one neutral-or-calm class).

    The argmax over the remaining labels is taken again. Raises ``ValueError`` for a label the
    table has no probability of.
    """
    known = labels_from_columns(table)
    unknown = sorted({*merged, *merged.values()} - set(known))
    if unknown:
        raise ValueError(f"cannot merge labels {unknown}: not among the table's labels {known}")
    table = table.copy()
    for source, target in merged.items():
        table[PROB_PREFIX + target] = table[PROB_PREFIX + target] + table[PROB_PREFIX + source]
        table = table.drop(columns=PROB_PREFIX + source)
        table["true_label"] = table["true_label"].replace(source, target)
    labels = [label for label in known if label not in merged]
    probabilities = probabilities_of(table, labels)
    answered = (table["pred_label"].fillna("").astype(str) != "").to_numpy()
    table["pred_label"] = [
        labels[int(row.argmax())] if ok else "" for row, ok in zip(probabilities, answered, strict=True)
    ]
    return table


def restrict_to_labels(table: pd.DataFrame, labels: Sequence[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Score only ``labels``: rows of other true labels left out, the argmax restricted to ``labels``.

    Returns the table of the kept rows with only the ``prob_<label>`` columns of ``labels``,
    renormalised to sum to 1, and ``pred_label`` their argmax (rows the model could not score
    keep an empty ``pred_label``), and the number of rows left out per true label ("" for rows
    without one). Raises ``ValueError`` for a label the table has no probability of.
    """
    labels = [str(label) for label in labels]
    known = labels_from_columns(table)
    unknown = [label for label in labels if label not in known]
    if not labels or unknown or len(set(labels)) != len(labels):
        raise ValueError(
            f"--labels {' '.join(labels) or '(none)'}: each label once, all among the run's labels {known}"
            + (f" ({unknown} are not)" if unknown else "")
        )
    true = table["true_label"].fillna("").astype(str)
    kept = table[true.isin(labels)].copy()
    left_out = true[~true.isin(labels)].value_counts().sort_index()
    probabilities = probabilities_of(kept, labels)
    totals = probabilities.sum(axis=1, keepdims=True)
    usable = (
        np.isfinite(totals[:, 0]) & (totals[:, 0] > 0) & (kept["pred_label"].astype(str) != "").to_numpy()
    )
    probabilities = np.where(usable[:, None], probabilities / np.where(usable[:, None], totals, 1.0), np.nan)
    kept = kept.drop(columns=[c for c in kept.columns if c.startswith(PROB_PREFIX)])
    kept["pred_label"] = [
        labels[int(row.argmax())] if ok else "" for row, ok in zip(probabilities, usable, strict=True)
    ]
    for column, values in zip(prob_columns(labels), probabilities.T, strict=True):
        kept[column] = values
    return kept.reset_index(drop=True), {str(k): int(v) for k, v in left_out.items()}


def per_corpus_metrics(scored: pd.DataFrame, labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, clips, speakers and the predicted-label spread of each corpus of a scored table.

    A corpus whose speakers each have one clip here is said to be scored as lone clips.
    """
    if "corpus" not in scored.columns:
        return {}
    result = {}
    for corpus, part in scored.groupby(scored["corpus"].astype(str), sort=False):
        metrics = table_metrics(part, labels)
        entry = {
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "n": metrics["n"],
            "predicted": {label: int((part["pred_label"] == label).sum()) for label in labels},
        }
        if "speaker" in part.columns:
            clips = part.groupby("speaker").size()
            entry["speakers"] = int(len(clips))
            if (clips == 1).all():
                entry["note"] = "no speaker with more than one clip: every clip scored as a lone clip"
        result[corpus] = entry
    return result


def evaluation_table(table: pd.DataFrame) -> pd.DataFrame:
    """``mer evaluate --out``'s predictions.csv: :data:`EVALUATION_COLUMNS`, ``prob_*``, then ``clip_id``."""
    out = pd.DataFrame({column: table[column] if column in table else "" for column in EVALUATION_COLUMNS})
    for column in [c for c in table.columns if c.startswith(PROB_PREFIX)]:
        out[column] = table[column].to_numpy()
    if "clip_id" in table.columns:
        out["clip_id"] = table["clip_id"].to_numpy()
    return out


def roc_auc(true_labels: Sequence[str], probabilities: np.ndarray, labels: Sequence[str]) -> dict:
    """One-vs-rest ROC AUC per class and their macro mean (classes absent from y are skipped)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray([str(x) for x in true_labels])
    per_class = {}
    for k, label in enumerate(labels):
        positives = y == label
        if positives.all() or not positives.any():
            continue
        per_class[label] = float(roc_auc_score(positives, probabilities[:, k]))
    macro = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return {"macro_auc": macro, "per_class_auc": per_class}


def format_metrics(metrics: dict, keys: Sequence[str] = ("accuracy", "macro_f1")) -> str:
    """One line such as 'accuracy 0.612  macro_f1 0.580  (n=240)'."""
    parts = [f"{k} {metrics[k]:.3f}" for k in keys if k in metrics]
    return "  ".join(parts) + f"  (n={metrics.get('n', '?')})"


def comparison_table(rows: dict[str, dict], extra: Sequence[str] = ()) -> pd.DataFrame:
    """A model-comparison DataFrame from ``{model name: metrics dict}``."""
    keys = [
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "weighted_f1",
        *extra,
    ]
    data = {name: {k: m.get(k, np.nan) for k in keys} for name, m in rows.items()}
    return pd.DataFrame(data).T.rename_axis("model")
