"""Text emotion models: TF-IDF classifiers (scikit-learn) with tuning grids, and a Keras BiLSTM.

The classical models share one feature extractor: word (1-2)-gram and character (2-5)-gram
TF-IDF with sublinear term frequency, fitted on the training texts only. Each model comes with
a small hyper-parameter grid searched by stratified k-fold cross-validation on the training
part; the smoke grids have one or two points so CI stays fast. The BiLSTM is the course's
"tokenization, padding, sequence conversion" model: a TextVectorization layer turns cleaned
texts into padded integer sequences, then embedding, bidirectional LSTM and softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.base import BaseEstimator, ClassifierMixin

# The classical models by short name (the names `mer train text --model` accepts).
CLASSICAL_MODELS: dict[str, str] = {
    "lr": "TF-IDF + logistic regression (L2, fitted by SGD)",
    "dt": "TF-IDF + chi2 selection + decision tree",
    "rf": "TF-IDF + chi2 selection + random forest",
    "nb": "TF-IDF + complement naive Bayes",
    "svm": "TF-IDF + linear SVM (probabilities: softmax of its scores, temperature fitted out-of-fold)",
    "lr+svm": "soft vote of the tuned logistic regression and linear SVM",
}
# The sequence model's name.
SEQUENCE_MODEL = "bilstm"
# Every model name, in the order of the comparison table.
TEXT_MODELS: tuple[str, ...] = (*CLASSICAL_MODELS, SEQUENCE_MODEL)
# TF-IDF settings (why: word bigrams catch "not happy"; char_wb n-grams catch misspellings,
# elongations and emoticons of tweets; sublinear tf stops one repeated word dominating).
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)
# A term must occur in at least this many training texts (drops typos and names, halves the vocabulary).
MIN_DOCUMENT_FREQUENCY = 2
# Features kept by chi2 before the trees (trees on 100k+ sparse columns are slow and overfit).
TREE_FEATURES = 3000
# BiLSTM: vocabulary size, padded sequence length (99% of the real cleaned texts have under 50 words), sizes.
VOCABULARY_SIZE = 20000
SEQUENCE_LENGTH = 64
EMBEDDING_DIM = 64
LSTM_UNITS = 48
DROPOUT = 0.4


def tfidf_features(min_df: int = MIN_DOCUMENT_FREQUENCY, smoke: bool = False):
    """Word (1-2) + char_wb (2-5) TF-IDF union (texts are expected cleaned and lower-cased)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    # Tiny smoke / test corpora keep every term: min_df=2 would empty them.
    min_df = 1 if smoke else min_df
    return FeatureUnion(
        [
            (
                "word",
                TfidfVectorizer(
                    ngram_range=WORD_NGRAMS,
                    sublinear_tf=True,
                    min_df=min_df,
                    lowercase=False,
                    token_pattern=r"(?u)\b\w+\b|[!?]",
                ),
            ),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=CHAR_NGRAMS,
                    sublinear_tf=True,
                    min_df=min_df,
                    lowercase=False,
                ),
            ),
        ]
    )


def classifier_and_grid(name: str, seed: int, smoke: bool = False, num_features: int | None = None):
    """The untuned classifier for TF-IDF features and its hyper-parameter grid.

    Returns ``(estimator, grid)`` where grid is a dict for ``GridSearchCV``. ``num_features``
    (the TF-IDF width) caps the chi2 selection for the trees on small corpora.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_selection import SelectKBest, chi2
    from sklearn.linear_model import SGDClassifier
    from sklearn.naive_bayes import ComplementNB
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    k = min(TREE_FEATURES, num_features) if num_features else TREE_FEATURES
    if name == "lr":
        # Logistic regression (log-loss, L2) fitted by SGD: lbfgs / saga / liblinear need 1-3 minutes
        # per fit on 120k TF-IDF columns here, SGD a few seconds for the same scores.
        estimator = SGDClassifier(loss="log_loss", max_iter=50, tol=1e-3, random_state=seed)
        grid = {"alpha": [1e-5, 3e-5], "class_weight": ["balanced"]}
        return estimator, ({"alpha": [3e-5], "class_weight": ["balanced"]} if smoke else grid)
    if name == "svm":
        estimator = LinearSVC(random_state=seed)
        # Balanced class weights won the selection score in every trial on the real data (they
        # buy ~3 points of macro-F1 for ~0.5 of accuracy), so only C is searched.
        grid = {"C": [0.1, 0.3], "class_weight": ["balanced"]}
        return estimator, ({"C": [0.3], "class_weight": ["balanced"]} if smoke else grid)
    if name == "nb":
        estimator = ComplementNB()
        return estimator, ({"alpha": [0.3]} if smoke else {"alpha": [0.03, 0.1, 0.3, 1.0]})
    if name == "dt":
        estimator = Pipeline(
            [
                ("select", SelectKBest(chi2, k=k)),
                ("tree", DecisionTreeClassifier(random_state=seed, class_weight="balanced")),
            ]
        )
        grid = {"tree__max_depth": [40, None], "tree__min_samples_leaf": [1, 5]}
        return estimator, ({"tree__max_depth": [None], "tree__min_samples_leaf": [1]} if smoke else grid)
    if name == "rf":
        estimator = Pipeline(
            [
                ("select", SelectKBest(chi2, k=k)),
                (
                    "forest",
                    RandomForestClassifier(
                        n_estimators=40 if smoke else 100,
                        random_state=seed,
                        n_jobs=-1,
                        class_weight="balanced_subsample",
                        max_features="sqrt",
                    ),
                ),
            ]
        )
        grid = {"forest__min_samples_leaf": [1, 3]}
        return estimator, ({"forest__min_samples_leaf": [1]} if smoke else grid)
    raise ValueError(f"unknown classical text model {name!r}; expected one of {list(CLASSICAL_MODELS)}")


class SoftmaxScores(BaseEstimator, ClassifierMixin):
    """Probabilities for a margin classifier (LinearSVC): softmax of its decision scores x a temperature.

    Unlike sigmoid calibration it keeps the SVM's own decisions (argmax unchanged): calibration
    refits one-vs-rest sigmoids that pull predictions towards the big classes and cost the
    balanced SVM about 2 points of macro-F1 on the real data. The temperature is fitted by
    minimising the log-loss of out-of-fold scores, so the probabilities are honest, not overconfident.
    """

    def __init__(self, estimator, temperature: float = 1.0):
        self.estimator = estimator
        self.temperature = temperature

    def fit(self, features, labels, folds=None):
        """Fit the temperature on out-of-fold scores (``folds``: a CV splitter), then the estimator on all."""
        import numpy as np
        from sklearn.base import clone
        from sklearn.model_selection import cross_val_predict

        if folds is not None:
            scores = cross_val_predict(
                clone(self.estimator), features, labels, cv=folds, method="decision_function"
            )
            classes = np.unique(labels)
            target = np.searchsorted(classes, labels)
            candidates = np.geomspace(0.3, 30.0, 41)
            losses = [_log_loss(scores * t, target) for t in candidates]
            self.temperature = float(candidates[int(np.argmin(losses))])
        self.estimator_ = clone(self.estimator).fit(features, labels)
        self.classes_ = self.estimator_.classes_
        return self

    def decision_function(self, features):
        """The wrapped estimator's scores."""
        return self.estimator_.decision_function(features)

    def predict_proba(self, features):
        """Softmax of temperature x decision scores."""
        import numpy as np

        scores = self.temperature * np.asarray(self.decision_function(features), dtype=float)
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, features):
        """The estimator's own decision."""
        return self.estimator_.predict(features)


def _log_loss(scores, target) -> float:
    """Mean negative log-likelihood of integer targets under softmax(scores)."""
    import numpy as np

    scores = scores - scores.max(axis=1, keepdims=True)
    log_probs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(target)), target].mean())


class AveragedProbabilities(BaseEstimator, ClassifierMixin):
    """A soft vote of already fitted probabilistic classifiers: the mean of their probabilities.

    Unlike ``VotingClassifier`` it refits nothing, so the ensemble of the tuned models costs no time.
    """

    def __init__(self, estimators: dict, weights: Sequence[float] | None = None):
        self.estimators = dict(estimators)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.estimators)
        classes = [list(e.classes_) for e in self.estimators.values()]
        if any(c != classes[0] for c in classes):
            raise ValueError("the averaged estimators must share one class order")
        self.classes_ = classes[0]

    def fit(self, features, labels):
        """Nothing to fit: the members are fitted already (kept for the scikit-learn API)."""
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict_proba(self, features):
        """Weighted mean of the members' class probabilities."""
        import numpy as np

        total = sum(
            w * e.predict_proba(features) for w, e in zip(self.weights, self.estimators.values(), strict=True)
        )
        return np.asarray(total) / sum(self.weights)

    def predict(self, features):
        """The class of highest mean probability."""
        import numpy as np

        return np.asarray(self.classes_)[self.predict_proba(features).argmax(axis=1)]


def build_bilstm(
    vectorizer,
    num_classes: int,
    embedding_dim: int = EMBEDDING_DIM,
    units: int = LSTM_UNITS,
    dropout: float = DROPOUT,
):
    """Embedding + BiLSTM + softmax on the integer sequences an adapted ``TextVectorization`` yields.

    ``vectorizer`` is the adapted layer (its vocabulary size sizes the embedding).
    The returned model takes padded integer sequences; :func:`with_vectorizer` wraps it for raw text.
    """
    import keras

    vocabulary = vectorizer.vocabulary_size()
    length = vectorizer.get_config()["output_sequence_length"]
    inputs = keras.Input(shape=(length,), dtype="int64", name="tokens")
    # mask_zero: the LSTM skips the padding instead of reading dozens of zeros.
    x = keras.layers.Embedding(vocabulary, embedding_dim, mask_zero=True, name="embedding")(inputs)
    x = keras.layers.SpatialDropout1D(dropout / 2)(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(units), name="bilstm")(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="text_bilstm")


def make_vectorizer(
    texts: Sequence[str], vocabulary_size: int = VOCABULARY_SIZE, length: int = SEQUENCE_LENGTH
):
    """Tokenise, index and pad: a ``TextVectorization`` layer adapted on the (cleaned) training texts."""
    import keras
    import numpy as np

    # Texts are cleaned before (mer_utils.text.clean_text); keep punctuation as tokens.
    vectorizer = keras.layers.TextVectorization(
        max_tokens=vocabulary_size,
        output_sequence_length=length,
        standardize=None,
        split="whitespace",
        name="tokenizer",
    )
    vectorizer.adapt(np.asarray(list(_spaced_punctuation(texts)), dtype=object))
    return vectorizer


def _spaced_punctuation(texts: Sequence[str]):
    """Put spaces around . , ! ? so they become tokens of their own."""
    import re

    for text in texts:
        yield re.sub(r"([.,!?])", r" \1 ", text)


def sequences(vectorizer, texts: Sequence[str]):
    """Padded integer sequences (n, SEQUENCE_LENGTH) of cleaned texts."""
    import numpy as np

    return np.asarray(vectorizer(np.asarray(list(_spaced_punctuation(texts)), dtype=object)))
