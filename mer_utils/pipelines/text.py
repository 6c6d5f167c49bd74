"""``mer train text`` / ``mer evaluate``: text emotion classifiers on one or more text sources.

Steps: read the sources (the seed CSV, ISEAR, MELD or generic CSV / TSV files:
:mod:`mer_utils.text_sources`; bad rows and unmatched labels counted and kept out), remove
duplicate and conflicting texts across sources, a 70 / 20 / 10 split by seed stratified by source
and label (MELD by dialogue), with several sources per-source sample weights for the classical
models (their strength chosen on validation, run.json ``source_weighting``), clean the texts,
TF-IDF fitted on train, each
classical model's hyper-parameters tuned by stratified k-fold cross-validation on train,
the BiLSTM trained with early stopping on validation, and the sentence-encoder models: frozen
MiniLM embeddings + MLP (default install, numpy encoder), and with the optional torch packages
frozen MPNet embeddings + MLP and MiniLM fine-tuned with its epoch chosen on validation, each also
soft-voted with the SVM; the best model is chosen on the validation part
(mean of accuracy and macro-F1: the issue sets a target on both) and reported once on test.

Training is ``base.train("text", data, out, settings)`` (``mer train text``) calling this module's
hooks with :class:`~mer_utils.pipelines.text_candidates.TextSettings` (``FULL`` / ``SMOKE``):
``choose`` checks the model asked for ('best' by default), ``index`` reads and de-duplicates the
sources, ``split`` makes the 70 / 20 / 10 parts, ``features`` the cleaning and source weights,
``fit`` trains the candidates (:mod:`mer_utils.pipelines.text_candidates`) and keeps the best on
validation, ``tables`` hands over its val and test tables.

Run folder: ``model.skops`` (a scikit-learn Pipeline in skops format, loaded with an allow-list: cleaning -> TF-IDF -> classifier, with
``predict_proba``; fine-tuned MiniLM models add its weights in ``minilm-ft/``, reloaded from
there) or ``model.keras`` + ``vocabulary.json`` for the BiLSTM, ``run.json``,
``metrics.json`` (test metrics, ``val``, ``data_cleaning`` counts with ``sources``, ``models``
comparison, ``per_source`` / ``per_source_val`` metrics) and ``predictions_val.csv`` /
``predictions_test.csv`` (clip_id = the row id, ``<source>:<row id>`` with several sources;
a ``source`` column before the ``text``). A single seed CSV reads and splits exactly as it did
before sources existed, and trains unweighted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils import text as text_data
from mer_utils import text_sources
from mer_utils.branches import get_branch
from mer_utils.config import TEXT_LABELS
from mer_utils.pipelines import base
from mer_utils.pipelines.text_candidates import (
    FULL_TEXT,
    SMOKE_TEXT,
    Candidate,
    KerasTextModel,
    TextSettings,
    _table,
    choose_source_weighting,
    fit_bilstm,
    fit_classical,
    fit_embedding_models,
    fit_finetuned_models,
    probabilities,
)

log = logging.getLogger(__name__)

BRANCH = "text"
# Settings of full and smoke runs (:class:`mer_utils.pipelines.text_candidates.TextSettings`).
FULL, SMOKE = FULL_TEXT, SMOKE_TEXT
# Saved model files: skops for the scikit-learn pipelines (no code runs on load).
SKOPS_MODEL_FILE = "model.skops"
# Runs written before skops held this pickle; it is refused unless MER_TRUST_PICKLE=1.
JOBLIB_MODEL_FILE = "model.joblib"
# Folder of the fine-tuned MiniLM weights in a run folder (beside model.skops, which does not hold them).
FINETUNED_DIR = "minilm-ft"
VOCABULARY_FILE = "vocabulary.json"
# Metrics copied into the model-comparison table for each candidate.
SUMMARY_KEYS = (
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
)


def _summary(metrics: dict) -> dict:
    return {k: metrics[k] for k in SUMMARY_KEYS}


# Metrics of each source in metrics.json's "per_source".
PER_SOURCE_KEYS = ("accuracy", "macro_f1", "weighted_f1", "n")


def per_source_metrics(table: pd.DataFrame, labels: Sequence[str]) -> dict[str, dict]:
    """Accuracy, macro-F1, weighted-F1 and n of a prediction table's rows of each ``source`` (empty without one)."""
    from mer_utils.evaluation import table_metrics

    if "source" not in table.columns:
        return {}
    scored = table[table["pred_label"].astype(str) != ""]
    return {
        str(name): {k: table_metrics(part, labels)[k] for k in PER_SOURCE_KEYS}
        for name, part in scored.groupby("source", sort=True)
    }


# --- training: the hooks of base.train ----------------------------------------------------------


def choose(model: str | None, settings: TextSettings, smoke: bool) -> tuple[str, TextSettings]:
    """The model asked for: 'best' (the default: every model, chosen on validation) or one of
    :data:`mer_utils.models.text.TEXT_MODELS`; an embedding model needs its optional packages."""
    from mer_utils.models.text import EMBEDDING_MODELS, TEXT_MODELS, require_embeddings

    requested = get_branch(BRANCH).default_model if model is None else model
    if requested != "best" and requested not in TEXT_MODELS:
        raise ValueError(f"unknown text model {model!r}; expected 'best' or one of {list(TEXT_MODELS)}")
    if requested in EMBEDDING_MODELS:
        require_embeddings(requested)
    return requested, settings


def index(data: str | Path | Sequence[str | Path], settings: TextSettings) -> pd.DataFrame:
    """The usable rows of one or more text sources, de-duplicated across them (:mod:`mer_utils.text_sources`).

    ``data``: a CSV (the seed format, ISEAR, MELD or any file with text and label columns, named by
    ``settings.text_column`` / ``settings.label_column``), a folder of them, or a list of these.
    Rows left out are in ``attrs["skipped"]`` (``{row_id, reason}``), the counts in ``attrs["report"]``.
    """
    paths = text_sources.as_paths(data)
    frame = text_sources.prepare_text_sources(
        paths, labels=list(TEXT_LABELS), text_column=settings.text_column, label_column=settings.label_column
    )
    frame.attrs["data"] = ", ".join(str(Path(p).resolve()) for p in paths)
    frame.attrs["skipped"] = frame.attrs.get("removed", [])
    return frame


def split(index: pd.DataFrame, settings: TextSettings, seed: int) -> pd.DataFrame:
    """70 / 20 / 10 by seed, stratified by source and label, MELD by dialogue (:func:`text_sources.source_split`)."""
    return text_sources.source_split(index, seed=seed)


def split_record(index: pd.DataFrame, features: dict) -> dict:
    """run.json's ``split``: the rows of each label in each part."""
    balance = text_data.class_balance_table(index, list(TEXT_LABELS))
    return {part: balance[part].drop("total").astype(int).to_dict() for part in text_data.SPLIT_NAMES}


def features(index: pd.DataFrame, settings: TextSettings, model: str, seed: int, progress: bool) -> dict:
    """The three parts' rows, the cleaning, and with several sources the classical models' per-source
    sample weights (their strength chosen on validation: run.json ``source_weighting``)."""
    parts = {name: index[index["split"] == name].reset_index(drop=True) for name in text_data.SPLIT_NAMES}
    for name, part in parts.items():
        if part.empty:
            raise ValueError(
                f"{index.attrs['data']}: the {name} split is empty ({len(index)} usable texts); need more rows"
            )
    log.info("text data: %s", index.attrs["report"])
    cleaning = dict(text_data.DEFAULT_CLEANING)
    weighting = choose_source_weighting(
        parts["train"], parts["val"], seed=seed, smoke=settings.smoke_sizes, cleaning=cleaning
    )
    weighting["applies_to"] = (
        "the classical TF-IDF models and tfidf+minilm; the BiLSTM and the other embedding models train unweighted"
    )
    train_weights = (
        text_sources.source_weights(parts["train"]["source"], weighting["power"])
        if weighting["power"]
        else None
    )
    return {
        "parts": parts,
        "report": index.attrs["report"],
        "cleaning": cleaning,
        "weighting": weighting,
        "train_weights": train_weights,
        "progress": progress,
    }


def fit(features: dict, settings: TextSettings, model: str, seed: int) -> base.Fitted:
    """Train the model asked for, or every available one for 'best', and keep the best on validation.

    Each candidate's val and test tables are scored here (the comparison in metrics.json
    ``models``); the chosen one's tables, curves and per-source figures go to the run folder.
    """
    from mer_utils.evaluation import table_metrics
    from mer_utils.models.text import (
        CLASSICAL_MODELS,
        EMBEDDING_MODELS,
        FINETUNED_MODELS,
        SEQUENCE_MODEL,
        SVM_VOTES,
        TEXT_MODELS,
        embeddings_available,
    )

    if model == "best":
        # The embedding models join the comparison only where their optional packages are installed.
        names = [n for n in TEXT_MODELS if n not in EMBEDDING_MODELS or embeddings_available(n)]
    else:
        names = [model]
    labels = list(TEXT_LABELS)
    parts, cleaning, smoke = features["parts"], features["cleaning"], settings.smoke_sizes
    train_part, val_part = parts["train"], parts["val"]
    candidates: dict[str, Candidate] = {}
    classical = [n for n in names if n in CLASSICAL_MODELS]
    if set(SVM_VOTES) & set(names) and "svm" not in classical:
        classical.append("svm")
    if classical:
        candidates.update(
            fit_classical(
                classical,
                train_part["text"],
                train_part["emotion"],
                seed=seed,
                smoke=smoke,
                cleaning=cleaning,
                settings=settings,
                sample_weight=features["train_weights"],
            )
        )
    embedding = [n for n in names if n in EMBEDDING_MODELS and n not in FINETUNED_MODELS]
    if embedding:
        candidates.update(
            fit_embedding_models(
                embedding,
                train_part["text"],
                train_part["emotion"],
                val_texts=val_part["text"],
                val_labels=val_part["emotion"],
                svm=candidates.get("svm"),
                seed=seed,
                cleaning=cleaning,
                smoke=smoke,
                settings=settings,
                sample_weight=features["train_weights"],
            )
        )
    finetuned = [n for n in names if n in FINETUNED_MODELS]
    if finetuned:
        candidates.update(
            fit_finetuned_models(
                finetuned,
                train_part["text"],
                train_part["emotion"],
                val_part["text"],
                val_part["emotion"],
                svm=candidates.get("svm"),
                seed=seed,
                smoke=smoke,
                cleaning=cleaning,
            )
        )
    candidates = {n: c for n, c in candidates.items() if n in names}
    if SEQUENCE_MODEL in names:
        candidates[SEQUENCE_MODEL] = fit_bilstm(
            train_part["text"],
            train_part["emotion"],
            val_part["text"],
            val_part["emotion"],
            seed=seed,
            smoke=smoke,
            cleaning=cleaning,
            labels=labels,
            verbose=2 if features["progress"] else 0,
            settings=settings,
        )

    tables: dict[str, dict[str, pd.DataFrame]] = {}
    comparison: dict[str, dict] = {}
    for name, candidate in candidates.items():
        tables[name] = {part: _table(candidate.model, parts[part], labels) for part in ("val", "test")}
        val_metrics = table_metrics(tables[name]["val"], labels)
        test_metrics = table_metrics(tables[name]["test"], labels)
        comparison[name] = {
            "val": _summary(val_metrics) | {"macro_auc": val_metrics["macro_auc"]},
            "test": _summary(test_metrics) | {"macro_auc": test_metrics["macro_auc"]},
            "selection_score_val": base.selection_score(val_metrics),
            "train_seconds": round(candidate.train_seconds, 2),
            "best_params": candidate.best_params,
            "cv_score": candidate.cv_score,
        }
    chosen = base.choose_on_validation({name: table_metrics(tables[name]["val"], labels) for name in tables})
    log.info("chosen on validation: %s", chosen)
    best = candidates[chosen]
    saved, model_format, write_files = _saved_parts(best.model)
    report = features["report"]
    metrics = {
        "data_cleaning": report,
        "models": comparison,
        "history": best.history,
        "per_source": per_source_metrics(tables[chosen]["test"], labels),
        "per_source_val": per_source_metrics(tables[chosen]["val"], labels),
    }
    if SEQUENCE_MODEL in candidates and chosen != SEQUENCE_MODEL:
        metrics["bilstm_history"] = candidates[SEQUENCE_MODEL].history
    return base.Fitted(
        model=saved,
        model_format=model_format,
        # The chosen model's curves (empty for models without epochs); metrics.json keeps them too.
        history=best.history,
        extra_model_files=(VOCABULARY_FILE, FINETUNED_DIR),
        write_files=write_files,
        model_name=chosen,
        tables=tables[chosen],
        info={
            "requested_model": model,
            "model_file": SKOPS_MODEL_FILE if chosen != SEQUENCE_MODEL else "model.keras",
            "cleaning": cleaning,
            "split_sizes": list(text_data.SPLIT_SIZES),
            "sources": {name: source["paths"] for name, source in report["sources"].items()},
            "columns": {"text_column": settings.text_column, "label_column": settings.label_column},
            "source_weighting": features["weighting"],
            "selection": "validation mean of accuracy and macro-F1",
        },
        metrics=metrics,
    )


def tables(fitted: base.Fitted, features: dict, settings: TextSettings, labels: list[str]) -> dict:
    """The chosen model's val and test tables (made by :func:`fit` while choosing)."""
    return fitted.tables


def _finetuned_parts(model) -> list:
    """The fine-tuned MiniLM classifiers inside a text model (a Pipeline, a vote of Pipelines, or one)."""
    from sklearn.pipeline import Pipeline

    from mer_utils.models.text import AveragedProbabilities
    from mer_utils.models.text_finetune import FineTunedMiniLM

    if isinstance(model, FineTunedMiniLM):
        return [model]
    if isinstance(model, Pipeline):
        return [part for _, step in model.steps for part in _finetuned_parts(step)]
    if isinstance(model, AveragedProbabilities):
        return [part for member in model.estimators.values() for part in _finetuned_parts(member)]
    return []


def _saved_parts(model) -> tuple[object, str, Callable[[Path], None]]:
    """How a text model is saved: the object :func:`mer_utils.runs.save_model` writes, its format,
    and what writes the files beside it (vocabulary.json for the BiLSTM, the fine-tuned MiniLM's
    weights in minilm-ft/, which model.skops does not hold)."""
    from mer_utils.runs import write_json

    if isinstance(model, KerasTextModel):

        def write_vocabulary(run_dir: Path) -> None:
            write_json(
                run_dir / VOCABULARY_FILE,
                {
                    "vocabulary": list(model.vectorizer.get_vocabulary()),
                    "sequence_length": int(model.vectorizer.get_config()["output_sequence_length"]),
                    "labels": model.classes_,
                    "cleaning": model.cleaning,
                },
            )

        return model.network, "keras", write_vocabulary
    finetuned = _finetuned_parts(model)
    if len(finetuned) > 1:
        raise ValueError("a text model may hold one fine-tuned MiniLM (its weights go to one folder)")

    def write_finetuned(run_dir: Path) -> None:
        for part in finetuned:
            part.save(run_dir / FINETUNED_DIR)

    return model, "sklearn", write_finetuned


def load(run_dir: Path, info: dict):
    """This branch's model loader: model.skops (+ fine-tuned weights) or model.keras + vocabulary.json."""
    from mer_utils.runs import KERAS_MODEL_FILE, load_model_file, read_json

    loaded = load_model_file(run_dir, info)
    if not (run_dir / KERAS_MODEL_FILE).is_file():
        for part in _finetuned_parts(loaded):
            part.load(run_dir / FINETUNED_DIR)
        return loaded
    import keras

    saved = read_json(run_dir / VOCABULARY_FILE)
    if not isinstance(saved, dict):
        raise ValueError(f"{run_dir / VOCABULARY_FILE}: expected a JSON object; retrain the run")
    missing = {"vocabulary", "sequence_length", "labels", "cleaning"} - set(saved)
    if missing:
        raise ValueError(f"{run_dir / VOCABULARY_FILE}: keys {sorted(missing)} missing; retrain the run")
    vectorizer = keras.layers.TextVectorization(
        standardize=None,
        split="whitespace",
        output_sequence_length=saved["sequence_length"],
        vocabulary=saved["vocabulary"][2:],  # without the padding '' and OOV '[UNK]' entries
        name="tokenizer",
    )
    return KerasTextModel(loaded, vectorizer, saved["labels"], saved["cleaning"])


def predict_text(
    texts: str | Sequence[str],
    run_dir: str | Path | None = None,
    model=None,
    labels: Sequence[str] = TEXT_LABELS,
) -> pd.DataFrame:
    """Predict the emotion of raw texts with a saved run (``run_dir``) or a loaded ``model``.

    Returns a DataFrame: text, label (the most probable), confidence, and prob_<label> per class.
    """
    from mer_utils.evaluation import prob_columns

    if model is None:
        if run_dir is None:
            raise ValueError("predict_text needs run_dir (a text run folder) or model")
        model = base.load_model(run_dir, BRANCH)
    texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
    probs = probabilities(model, texts, labels)
    frame = pd.DataFrame({"text": texts})
    frame["label"] = [labels[i] for i in probs.argmax(axis=1)] if len(texts) else []
    frame["confidence"] = probs.max(axis=1) if len(texts) else []
    for column, values in zip(prob_columns(labels), probs.T, strict=True):
        frame[column] = values
    return frame


# --- saved runs: this branch's parts of the shared driver (mer_utils.pipelines.base) ---------

# Longest text file predict_file reads (characters); longer files are cut there.
MAX_FILE_CHARACTERS = 100_000


def table_of(
    run_dir: Path,
    info: dict,
    data,
    model,
    degradation,
    progress: bool,
    text_column: str | None = None,
    label_column: str | None = None,
) -> pd.DataFrame:
    """Prediction table of a loaded model on every usable row of one or more text sources (no de-duplication, no split)."""
    labels = list(info.get("labels", TEXT_LABELS))
    frame = text_sources.read_text_sources(
        data, text_column=text_column, label_column=label_column, labels=labels
    )
    table = _table(model, frame, labels)
    table.attrs["skipped"] = list(frame.attrs["removed"])
    table.attrs["data_cleaning"] = frame.attrs["report"]
    return table


def evaluation_extras(info: dict, table: pd.DataFrame) -> dict:
    """The sources' cleaning counts and the metrics of each source."""
    return {
        "data_cleaning": table.attrs.get("data_cleaning"),
        "per_source": per_source_metrics(table, list(info.get("labels", TEXT_LABELS))),
    }


def file_prediction(run_dir: Path, info: dict, path: Path, model) -> dict:
    """This branch's part of :func:`predict_file`: read the file's text, predict it; empty files are unavailable."""
    from mer_utils.pipelines.base import unavailable

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        content = path.read_text(encoding="utf-8")[:MAX_FILE_CHARACTERS]
    except UnicodeDecodeError as error:
        return unavailable(f"{path}: not a UTF-8 text file ({error})")
    if not content.strip():
        return unavailable(f"{path}: the file holds no text")
    labels = list(info["labels"])
    model = model if model is not None else base.load_model(run_dir, BRANCH)
    probs = probabilities(model, [content], labels)[0]
    return {
        "available": True,
        "reason": None,
        "probabilities": [float(p) for p in probs],
        "details": {"predicted": labels[int(np.argmax(probs))], "characters": len(content)},
    }
