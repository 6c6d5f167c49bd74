"""The audio branch's scikit-learn path: one vector per clip (utterance statistics, eGeMAPS or a Whisper embedding).

``logreg`` / ``svm`` on :func:`mer_utils.utterance.utterance_features`, ``egemaps`` (logistic
regression on the opensmile eGeMAPSv02 functionals, :mod:`mer_utils.egemaps`), ``whisper``
(logistic regression on :func:`mer_utils.whisper_encoder.clip_embedding`) and ``whisper+egemaps``
(the two vectors of a clip concatenated, each column standardised by the pipeline's scaler), each a
StandardScaler + classifier pipeline saved as ``model.skops``. :func:`vector_features`, :func:`fit_vectors` and
:func:`vector_tables` are the ``features``, ``fit`` and ``tables`` hooks of
:mod:`mer_utils.pipelines.audio` for these models; the index, split and run folder are the branch's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils import audio, egemaps, utterance
from mer_utils import speakers as speakers_module
from mer_utils.config import DEFAULT_SEED
from mer_utils.pipelines import out_of_fold
from mer_utils.pipelines.audio_common import (
    BRANCH,
    _normalise,
    _normalise_for_prediction,
    _population_files,
    clip_for_prediction,
    rows_table,
    split_parts,
    split_tables,
    timed_answer,
)
from mer_utils.pipelines.base import Fitted, load_model

# scikit-learn models on one vector per clip (saved as model.skops): "logreg" (L2 logistic regression)
# and "svm" (RBF support vector machine with Platt probabilities) on utterance statistics,
# "egemaps" (L2 logistic regression) on eGeMAPS, "whisper" (L2 logistic regression) on
# Whisper-encoder embeddings and "whisper+egemaps" (the same on both, concatenated).
SKLEARN_MODELS = ("logreg", "svm", "egemaps", "whisper", "whisper+egemaps")
# What each scikit-learn model's vector is (run.json key ``feature_kind``).
FEATURE_KINDS = {
    "logreg": "utterance",
    "svm": "utterance",
    "egemaps": "egemaps",
    "whisper": "whisper",
    "whisper+egemaps": "whisper+egemaps",
}
# The Whisper part of a concatenated vector comes first, then eGeMAPS (run.json ``features`` keys).
JOINED_PARTS = ("whisper", "egemaps")
# Their saved pipeline (StandardScaler + classifier) inside the run folder (skops: no code runs on load).
SKLEARN_MODEL_FILE = "model.skops"
# Inverse regularisation strengths, chosen on the validation actors 07, 10, 11 of the default split
# (logistic regression C in {0.01, 0.1}, SVM C in {1, 3, 10}; see notebook 03's summary).
LOGREG_C = 0.1
SVM_C = 3.0
# On the Whisper embeddings: C in {0.01, 0.03, 0.1, 1} by actor-grouped 5-fold CV over the 15 training and
# validation actors of the default split (0.817 for 0.01-0.1, 0.804 for 1); the middle value.
WHISPER_C = 0.03
# On eGeMAPS: C in {0.01, 0.03, 0.1, 0.3, 1} by actor-grouped 5-fold CV over the 15 training and validation
# actors of the default split (speaker normalisation): 0.614, 0.631, 0.622, 0.622, 0.620, flat within a
# point, so the utterance statistics' value is kept. whisper+egemaps uses WHISPER_C.
EGEMAPS_C = LOGREG_C


def class_weights(y: np.ndarray, power: float) -> dict[str, float]:
    """Balanced weights ``(n / (K * count)) ** power`` of the labels present in ``y`` (K of them).

    Over several corpora the union of labels is uneven (TurEV-DB's calm, RAVDESS's fearful or
    surprised only in one corpus each): ``power`` 0 weighs every clip alike, 1 every label alike.
    """
    names, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
    weights = (len(y) / (len(names) * counts.astype(float))) ** float(power)
    return {str(name): float(w) for name, w in zip(names, weights, strict=True)}


def build_sklearn_model(name: str, seed: int = DEFAULT_SEED):
    """StandardScaler + classifier pipeline of a scikit-learn audio model (:data:`SKLEARN_MODELS`)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if name in ("logreg", "whisper", "egemaps", "whisper+egemaps"):
        c = EGEMAPS_C if name == "egemaps" else WHISPER_C if name.startswith("whisper") else LOGREG_C
        classifier = LogisticRegression(C=c, max_iter=3000, random_state=seed)
    elif name == "svm":
        # Platt-scaled probabilities fitted by internal cross-validation (SVC(probability=True) is deprecated).
        classifier = CalibratedClassifierCV(
            SVC(C=SVM_C, gamma="scale", random_state=seed), ensemble=False, cv=5
        )
    else:
        raise ValueError(f"unknown scikit-learn audio model {name!r}; expected one of {SKLEARN_MODELS}")
    return make_pipeline(StandardScaler(), classifier)


def sklearn_probabilities(pipeline, x: np.ndarray, labels: list[str]) -> np.ndarray:
    """(n, len(labels)) probabilities of a fitted pipeline in ``labels`` order (0 for unseen classes)."""
    raw = pipeline.predict_proba(x)
    probabilities = np.zeros((len(x), len(labels)), dtype=np.float64)
    for column, label in enumerate(pipeline.classes_):
        probabilities[:, labels.index(str(label))] = raw[:, column]
    return probabilities


def _utterance_vectors(batch: audio.FeatureBatch, mode: str, speakers: np.ndarray) -> np.ndarray:
    """Utterance statistics of a batch, standardised per speaker when ``mode`` is "speaker"."""
    return _normalise(batch.features[:, None, :], speakers, mode)[:, 0, :]


def vector_features(index: pd.DataFrame, settings, model: str, seed: int, progress: bool) -> dict:
    """The audio branch's ``features`` hook for a scikit-learn model: one normalised vector per clip.

    Utterance statistics for logreg / svm (:func:`mer_utils.utterance.utterance_features`: MFCC +
    delta statistics, log-mel band levels, spectral shape, pitch and energy), eGeMAPS for egemaps
    (:func:`mer_utils.egemaps.clip_egemaps`), the Whisper embedding for whisper
    (:func:`mer_utils.whisper_encoder.clip_embedding`) or both for whisper+egemaps, cached; each speaker
    is standardised with their own clips (no labels) when ``settings.normalisation`` is "speaker".
    """
    kind = FEATURE_KINDS[model]
    features = _vector_features(kind, settings.preprocess)
    batch = _vector_batch(kind, features, index, seed=seed, progress=progress)
    rows = batch.rows
    return {
        "rows": rows,
        "parts": split_parts(rows, index.attrs.get("data", "data")),
        "raw": batch.features,
        "x": _utterance_vectors(batch, settings.normalisation, rows["actor"].to_numpy()),
        "y": rows["emotion"].astype(str).to_numpy(),
        "kind": kind,
        "features": features,
        "model": model,
        "seed": seed,
        "class_weight_power": float(settings.class_weight_power),
        "out_of_fold": bool(settings.out_of_fold),
        "data": index.attrs.get("data", "data"),
        "skipped": batch.skipped,
    }


def fit_vectors(features: dict, settings, model: str, seed: int) -> Fitted:
    """The audio branch's ``fit`` hook for a scikit-learn model: scaler + classifier on the training actors.

    With speaker normalisation the run also keeps the average training speaker
    (``speaker_population.npz``): what a lone clip of an unknown speaker is normalised towards.
    """
    import time

    x_all, y_all, parts, rows = features["x"], features["y"], features["parts"], features["rows"]
    normalisation = settings.normalisation
    power = features["class_weight_power"]
    start = time.perf_counter()
    pipeline = _fitted_sklearn_model(
        model, seed, x_all[parts["train"]], y_all[parts["train"]], features["data"], power
    )
    seconds = time.perf_counter() - start
    population = None
    if normalisation == "speaker":
        population = speakers_module.population_statistics(
            features["raw"][parts["train"]], rows.loc[parts["train"], "actor"].to_numpy()
        )

    def write_files(out: Path) -> None:
        if population is not None:
            speakers_module.save_population(out, *population)

    return Fitted(
        model=pipeline,
        model_format="sklearn",
        extra_model_files=_population_files(population),
        write_files=write_files,
        info={
            "model_file": SKLEARN_MODEL_FILE,
            "speaker_population_file": speakers_module.POPULATION_FILE if population is not None else None,
            "feature_kind": features["kind"],
            "features": features["features"],
            "num_features": int(x_all.shape[1]),
            "normalisation": normalisation,
            # The training clips' weight per label (class_weight_power 0: all 1).
            "class_weights": class_weights(y_all[parts["train"]], power),
        },
        metrics={
            "params": int(x_all.shape[1]),
            "train_seconds": float(seconds),
            "epochs": 0,
            "train_samples": int(parts["train"].sum()),
            "normalisation": normalisation,
        },
    )


def vector_tables(fitted: Fitted, features: dict, labels: list[str]) -> dict:
    """The audio branch's ``tables`` for a scikit-learn model: val and test, plus the out-of-fold table.

    The out-of-fold refits take seconds on cached vectors; their time joins the metrics.
    """
    import time

    x_all, parts = features["x"], features["parts"]
    tables = split_tables(
        features["rows"],
        parts,
        labels,
        lambda split: sklearn_probabilities(fitted.model, x_all[parts[split]], labels),
    )
    if not features["out_of_fold"]:
        fitted.out_of_fold_reason = "not asked for (settings.out_of_fold = False)"
        return tables
    start = time.perf_counter()
    tables[out_of_fold.OOF_SPLIT] = _out_of_fold_table(
        features["model"],
        features["seed"],
        x_all,
        features["y"],
        features["rows"],
        parts,
        labels,
        features["data"],
        features["class_weight_power"],
    )
    fitted.metrics["out_of_fold_seconds"] = float(time.perf_counter() - start)
    return tables


def _fitted_sklearn_model(
    name: str, seed: int, x: np.ndarray, y: np.ndarray, data, class_weight_power: float = 0.0
):
    """:func:`build_sklearn_model` fitted on (x, y), each clip weighted by its label's :func:`class_weights`;
    the svm's calibration folds fit its rarest emotion."""
    pipeline = build_sklearn_model(name, seed)
    if name == "svm":
        # Platt calibration cross-validates: no more folds than the rarest emotion has training clips.
        rarest = int(pd.Series(y).value_counts().min())
        if rarest < 2:
            raise ValueError(f"{data}: the svm needs at least 2 training clips of every emotion present")
        pipeline.set_params(calibratedclassifiercv__cv=min(5, rarest))
    if not class_weight_power:
        return pipeline.fit(x, y)
    weights = class_weights(y, class_weight_power)
    sample_weight = np.asarray([weights[str(label)] for label in y])
    return pipeline.fit(x, y, **{f"{pipeline.steps[-1][0]}__sample_weight": sample_weight})


def _out_of_fold_table(
    name: str,
    seed: int,
    x_all: np.ndarray,
    y_all: np.ndarray,
    rows: pd.DataFrame,
    parts: dict,
    labels: list[str],
    data,
    class_weight_power: float = 0.0,
) -> pd.DataFrame:
    """predictions_oof.csv: every training and validation clip predicted by the same recipe refitted
    without its actor (:mod:`mer_utils.pipelines.out_of_fold`; seconds per fold on cached vectors)."""
    mask = parts["train"] | parts["val"]

    def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_held: np.ndarray) -> np.ndarray:
        return sklearn_probabilities(
            _fitted_sklearn_model(name, seed, x_train, y_train, data, class_weight_power), x_held, labels
        )

    probabilities, fold = out_of_fold.out_of_fold_probabilities(
        x_all[mask], y_all[mask], rows.loc[mask, "actor"].to_numpy(), fit_predict, seed=seed
    )
    table = rows_table(probabilities, labels, rows[mask])
    table[out_of_fold.FOLD_COLUMN] = fold
    return table


def _is_sklearn_run(info: dict) -> bool:
    return info.get("feature_kind") in set(FEATURE_KINDS.values())


def _vector_features(kind: str, preprocess: str = "none") -> dict:
    """The run.json ``features`` of a clip-vector kind: what determines every vector.

    ``preprocess`` (Whisper only) is what is done to the audio before the encoder.
    """
    if kind == "whisper":
        from mer_utils import whisper_encoder

        return whisper_encoder.feature_params(preprocess)
    if kind == "whisper+egemaps":
        return {"whisper": _vector_features("whisper", preprocess), "egemaps": _vector_features("egemaps")}
    if preprocess != "none":
        raise ValueError(f"preprocess {preprocess!r} is for the whisper models only, not {kind} features")
    if kind == "egemaps":
        return egemaps.EgemapsParams().to_dict()
    return utterance.UtteranceParams().to_dict()


def _preprocess_of(features: dict) -> str:
    """The audio preprocessing a whisper run's ``features`` record ("none" for runs made before the option)."""
    return str(features.get("preprocess", "none"))


def _check_encoder(kind: str, features: dict, run_dir: Path | None = None) -> None:
    """Refuse a whisper run whose encoder differs from the one this machine would use."""
    if kind == "whisper+egemaps":
        kind, features = "whisper", features["whisper"]
    if kind != "whisper":
        return
    from mer_utils import whisper_encoder

    current = whisper_encoder.model_identity()
    if features.get("encoder") != current:
        raise ValueError(
            f"{run_dir or 'run'}: trained on Whisper encoder {features.get('encoder')!r} but this machine "
            f"uses {current!r}; set {whisper_encoder.MODEL_DIR_ENV} to the same model folder"
        )


def _vector_batch(
    kind: str,
    features: dict,
    index: pd.DataFrame,
    noise_snr_db: float | None = None,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
) -> audio.FeatureBatch:
    """One vector per clip of ``index`` (utterance statistics, eGeMAPS, Whisper embedding or both), cached."""
    if kind == "whisper+egemaps":
        parts = [
            _vector_batch(part, features[part], index, noise_snr_db, seed, progress) for part in JOINED_PARTS
        ]
        return _joined_batch(*parts)
    if kind == "egemaps":
        params = egemaps.EgemapsParams(**features)
        return egemaps.egemaps_batch(index, params, noise_snr_db=noise_snr_db, seed=seed, progress=progress)
    if kind == "whisper":
        from mer_utils import whisper_encoder

        return whisper_encoder.embedding_batch(
            index,
            noise_snr_db=noise_snr_db,
            seed=seed,
            progress=progress,
            preprocess=_preprocess_of(features),
        )
    params = utterance.UtteranceParams(**features)
    return utterance.utterance_batch(index, params, noise_snr_db=noise_snr_db, seed=seed, progress=progress)


def _joined_batch(first: audio.FeatureBatch, second: audio.FeatureBatch) -> audio.FeatureBatch:
    """Two batches of the same index side by side: the clips both could read, their vectors concatenated."""
    second_row = {path: row for row, path in enumerate(second.rows["path"].astype(str))}
    keep = [row for row, path in enumerate(first.rows["path"].astype(str)) if path in second_row]
    other = [second_row[path] for path in first.rows["path"].astype(str).iloc[keep]]
    reasons = {item["path"]: item["reason"] for item in first.skipped + second.skipped}
    return audio.FeatureBatch(
        features=np.concatenate([first.features[keep], second.features[other]], axis=1),
        rows=first.rows.iloc[keep].reset_index(drop=True),
        skipped=[{"path": path, "reason": reason} for path, reason in reasons.items()],
    )


def _clip_vector(kind: str, features: dict, path: Path, cached: bool = False) -> np.ndarray:
    """One clip's vector; ``cached`` reads / writes the feature cache (the speaker reference clips)."""
    if kind == "whisper+egemaps":
        return np.concatenate([_clip_vector(part, features[part], path, cached) for part in JOINED_PARTS])
    if kind == "egemaps":
        params = egemaps.EgemapsParams(**features)

        def compute():
            return egemaps.clip_egemaps(path, params)

        key = egemaps.egemaps_cache_params(params)
    elif kind == "whisper":
        from mer_utils import whisper_encoder

        preprocess = _preprocess_of(features)

        def compute():
            return whisper_encoder.clip_embedding(path, preprocess=preprocess)

        key = whisper_encoder.cache_params(preprocess=preprocess)
    else:
        params = utterance.UtteranceParams(**features)

        def compute():
            return utterance.clip_utterance_features(path, params)

        key = utterance.utterance_cache_params(params)
    return audio.cached_feature(path, compute, key) if cached else compute()


def vector_table(
    run_dir: Path, info: dict, index: pd.DataFrame, skipped: list, pipeline, noise_snr_db, progress: bool
) -> pd.DataFrame:
    """The audio branch's ``table_of`` for a scikit-learn run: clip vectors -> speaker normalisation -> model."""
    kind = info["feature_kind"]
    _check_encoder(kind, info["features"], run_dir)
    batch = _vector_batch(
        kind, info["features"], index, noise_snr_db=noise_snr_db, seed=info["seed"], progress=progress
    )
    rows = batch.rows
    x = _normalise_for_prediction(batch.features, rows["actor"].to_numpy(), info["normalisation"], run_dir)
    labels = list(info["labels"])
    table = rows_table(sklearn_probabilities(pipeline, x, labels), labels, rows)
    table.attrs["skipped"] = skipped + batch.skipped
    return table


def file_prediction_sklearn(run_dir: Path, info: dict, path: Path, model=None) -> dict:
    """The audio branch's ``file_prediction`` for a scikit-learn run on clip vectors."""
    kind, features = info["feature_kind"], info["features"]
    _check_encoder(kind, features, run_dir)
    vector, details = clip_for_prediction(
        run_dir,
        info,
        path,
        lambda clip: _clip_vector(kind, features, clip),
        lambda other: _clip_vector(kind, features, other, cached=True),
    )
    if vector is None:
        return details
    pipeline = model if model is not None else load_model(run_dir, BRANCH)
    return timed_answer(lambda: sklearn_probabilities(pipeline, vector[None], info["labels"])[0], details)
