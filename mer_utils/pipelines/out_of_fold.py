"""Out-of-fold predictions: every training and validation clip predicted by a model that never heard its actor.

A run's validation predictions come from three actors (180 RAVDESS clips), too few to choose a
fusion method on. Refitting the run's own recipe K times, each time without a group of actors,
gives every clip of the training and validation actors a prediction by a model that never saw
that clip's speaker: ``predictions_oof.csv`` in the run folder (the columns of
``predictions_val.csv`` plus ``fold``), which `mer fuse` fits on when every run has one.

Only branches whose refits are cheap write it (the scikit-learn audio heads on cached clip
vectors: seconds per fold); the others record why not in run.json / metrics.json
(``out_of_fold``: ``{"written": false, "reason": ...}``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

# Split name of the out-of-fold table (the file is predictions_<split>.csv, as for val and test).
OOF_SPLIT = "oof"
OOF_FILE = f"predictions_{OOF_SPLIT}.csv"
# Column holding the fold whose model (trained without this clip's actor) made the prediction.
FOLD_COLUMN = "fold"
# Folds over the training and validation actors: 15 actors of the default split give 3 per fold,
# so each fold model trains on 12 actors, as many as the run's own model.
OOF_FOLDS = 5
# run.json / metrics.json key describing the out-of-fold predictions (or why there are none).
OOF_KEY = "out_of_fold"
# Why a branch writes no out-of-fold predictions unless it says more.
NOT_IMPLEMENTED_REASON = (
    "this branch does not refit out-of-fold (only the scikit-learn audio heads do, on cached clip "
    "vectors); `mer fuse` fits on validation predictions when a run has no predictions_oof.csv"
)


def actor_folds(actors: Sequence[int], folds: int = OOF_FOLDS, seed: int = 42) -> np.ndarray:
    """The fold (0 .. K-1) of each row: whole actors per fold, shuffled by ``seed``, K = min(folds, actors).

    Raises ValueError with fewer than two actors (a fold model would have nobody to learn from).
    """
    actors = np.asarray(actors)
    distinct = np.unique(actors)
    if len(distinct) < 2:
        raise ValueError(
            f"out-of-fold predictions need at least 2 actors in training and validation, found {len(distinct)}"
        )
    count = int(min(folds, len(distinct)))
    if count < 2:
        raise ValueError(f"out-of-fold predictions need at least 2 folds, got {folds}")
    order = np.random.default_rng(seed).permutation(distinct)
    fold_of_actor = {actor: position % count for position, actor in enumerate(order)}
    return np.asarray([fold_of_actor[actor] for actor in actors], dtype=int)


def out_of_fold_probabilities(
    x: np.ndarray,
    y: np.ndarray,
    actors: Sequence[int],
    fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    folds: int = OOF_FOLDS,
    seed: int = 42,
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, K), fold (n,)): each row predicted by ``fit_predict(x_train, y_train, x_held)``
    fitted on the other folds' actors only."""
    fold = actor_folds(actors, folds, seed)
    probabilities = None
    for k in np.unique(fold):
        held = fold == k
        predicted = np.asarray(fit_predict(x[~held], y[~held], x[held]), dtype=np.float64)
        if probabilities is None:
            probabilities = np.full((len(fold), predicted.shape[1]), np.nan)
        probabilities[held] = predicted
    return probabilities, fold


def summary(table: pd.DataFrame, labels: Sequence[str], actors: Sequence[int]) -> dict:
    """The ``out_of_fold`` entry of a run that wrote predictions_oof.csv: file, folds, clips, actors, scores."""
    from mer_utils.evaluation import table_metrics

    scored = table[table["pred_label"].astype(str) != ""]
    metrics = table_metrics(scored, list(labels))
    return {
        "written": True,
        "file": OOF_FILE,
        "folds": int(table[FOLD_COLUMN].nunique()),
        "n": int(len(scored)),
        "actors": sorted(int(actor) for actor in set(actors)),
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
    }


def skipped(reason: str | None = None) -> dict:
    """The ``out_of_fold`` entry of a run without predictions_oof.csv, with the reason."""
    return {"written": False, "reason": reason or NOT_IMPLEMENTED_REASON}


def network_reason(train_seconds: float, folds: int = OOF_FOLDS) -> str:
    """Why a Keras run has no out-of-fold predictions, with this run's own cost of the refits.

    The frozen-feature shortcut (one head refitted per actor fold on the trained network's features)
    is ruled out because those features have seen the training actors' clips and labels: the
    held-out folds of training actors would be predicted far better than any new voice.
    """
    minutes = folds * float(train_seconds) / 60
    return (
        f"not written for a network: {folds} refits of this recipe on the other actors would add about "
        f"{folds} x {float(train_seconds):.0f} s = {minutes:.0f} min of training to this run (the "
        "scikit-learn audio heads refit in seconds). Refitting only the last layer on this network's "
        "features is no shortcut: the features were learned on the training actors' clips, so those "
        "actors' out-of-fold predictions would look far better than on a new voice and fusion would "
        "over-trust the network. `mer fuse` fits on validation predictions when a run has no "
        "predictions_oof.csv"
    )
