"""``mer train audio`` / ``mer evaluate``: speech emotion models on RAVDESS, from MFCCs and utterance statistics.

Two families share the split, the run folder and the prediction functions: Keras models on MFCC
sequences (cnn, lstm, bilstm, attention, their average ``ensemble``, ``stats``), and scikit-learn
models on one vector per clip, saved as ``model.skops``: ``whisper`` (the default: logistic
regression on frozen Whisper-encoder embeddings, :mod:`mer_utils.whisper_encoder`), ``logreg``
and ``svm`` on hand-made utterance statistics (:func:`mer_utils.utterance.utterance_features`),
``egemaps`` on the standard eGeMAPS voice parameters (:mod:`mer_utils.egemaps`) and
``whisper+egemaps`` on both vectors side by side.

Training is ``base.train("audio", data, out, settings)`` (``mer train audio``) calling this module's
hooks with :class:`AudioSettings` (``FULL`` / ``SMOKE``): ``index`` reads one or more corpus
sources (:mod:`mer_utils.corpora`: RAVDESS and other speech corpora, manifest CSVs) and keeps one
file per take (full AV .mp4 first, then audio-only .wav), ``split`` splits by speaker inside each
corpus (``corpora.speaker_disjoint_split``: ``actor_disjoint_split`` per corpus,
gender-balanced; 12/3/3 actors for 18; or the settings' ``test_actors`` / ``val_actors``),
``features`` computes MFCC + deltas + pitch / energy per 10 ms frame on 2.5 s of trimmed speech
(cached), augmented copies of the training clips only and the normalisation (Keras models) or one
vector per clip (scikit-learn models), ``fit`` trains with :func:`mer_utils.training.fit_classifier`
(or fits the scikit-learn pipeline, each clip weighted by its label's balanced weight to the power
``class_weight_power``, over the union of the corpora's labels) and ``tables`` predicts the val
and test clips; metrics.json adds each corpus's own figures (``per_corpus`` on test,
``val_per_corpus``) and the prediction tables carry ``corpus`` and ``speaker`` columns.

Normalisation (``run.json`` key ``normalisation``):

* ``"speaker"`` (default): each speaker's features are first standardised with that
  speaker's own mean / std over all their clips, then by the training split's global
  statistics. It uses no labels, only unlabelled audio of the same speaker, so it is
  legitimate on unseen actors too: at evaluation time the statistics come from the clips
  being scored (all clips of each actor in the folder); a single file is normalised with
  the other clips of its actor found in its folder. A speaker with fewer than
  :data:`mer_utils.speakers.MIN_SPEAKER_CLIPS` clips (a user's own recording, any
  non-RAVDESS name) is normalised with statistics shrunk towards the training speakers'
  average, stored in the run folder (``speaker_population.npz``); see :mod:`mer_utils.speakers`.
* ``"global"``: only the training split's global mean / std.

The scikit-learn path lives in :mod:`mer_utils.pipelines.audio_vectors`, the parts both paths share
in :mod:`mer_utils.pipelines.audio_common`; the run folder follows :mod:`mer_utils.pipelines.base`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils import audio
from mer_utils import speakers as speakers_module
from mer_utils.audio_augment import AudioAugmentation, spec_augment
from mer_utils.branches import get_branch
from mer_utils.config import RAVDESS_EMOTIONS
from mer_utils.pipelines import base
from mer_utils.pipelines.audio_common import (
    BRANCH,
    NORMALISATION_FILE,
    NORMALISATIONS,
    _index,
    _load_normalisation,
    _normalise,
    _normalise_for_prediction,
    _population_files,
    _save_normalisation,
    clip_for_prediction,
    clip_index,
    rows_table,
    split_actors,
    split_parts,
    split_tables,
    timed_answer,
)
from mer_utils.pipelines.audio_vectors import (
    SKLEARN_MODELS,
    _is_sklearn_run,
    file_prediction_sklearn,
    fit_vectors,
    vector_features,
    vector_table,
    vector_tables,
)
from mer_utils.pipelines.base import Fitted, Settings

log = logging.getLogger(__name__)

# The model averaging the four architectures' probabilities (`--model ensemble`).
ENSEMBLE_MODEL = "ensemble"
# Default model of `mer train audio` (the registry's; see mer_utils.branches).
DEFAULT_MODEL = get_branch(BRANCH).default_model
# SpecAugment-style masks on the training MFCC sequences (frequency bands, time spans).
FEATURE_MASKS = {"freq_masks": 2, "max_freq_width": 6, "time_masks": 2, "max_time_width": 20}


@dataclass(frozen=True)
class AudioSettings(Settings):
    """Training settings of an audio run (written to run.json ``"settings"``; the Keras models use all,
    the scikit-learn models ``normalisation`` and the split only)."""

    # Epoch limit (early stopping on validation loss usually stops much earlier).
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 10
    # Augmented copies of every training clip (noise, shift, pitch, stretch, then SpecAugment masks).
    augmented_copies: int = 2
    # Seeds of a single architecture averaged into the saved model (1: one network).
    ensemble_size: int = 1
    # Base width (filters / LSTM units) of the models.
    width: int = 64
    # "speaker" (each speaker standardised with their own clips first) or "global".
    normalisation: str = "speaker"
    # whisper only: what is done to each clip's audio before the encoder, "none" (the whole clip as
    # recorded) or "loudness+vad" (mer_utils.whisper_encoder.PREPROCESSING; run.json features too).
    preprocess: str = "none"
    # scikit-learn models: each training clip weighs its label's balanced weight ** this power
    # (audio_vectors.class_weights; 0: every clip alike). The Keras models always use balanced weights.
    class_weight_power: float = 0.0
    # scikit-learn models: also refit per fold of actors for predictions_oof.csv (benchmarks that never
    # fuse skip it: the refits take most of the training time).
    out_of_fold: bool = True
    # Actors of the test and val parts (None: drawn by actor_disjoint_split from the seed).
    test_actors: tuple[int, ...] | None = None
    val_actors: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"{type(self).__name__}: unknown normalisation {self.normalisation!r}; expected one of {NORMALISATIONS}"
            )
        from mer_utils.whisper_encoder import PREPROCESSING

        if self.preprocess not in PREPROCESSING:
            raise ValueError(
                f"{type(self).__name__}: unknown preprocess {self.preprocess!r}; expected one of {PREPROCESSING}"
            )


# A full run; smoke runs (CI) train fewer epochs at half the width on one augmented copy.
FULL = AudioSettings()
SMOKE = replace(FULL, epochs=12, augmented_copies=1, width=32)
# Training curves (format: mer_utils.pipelines.base; read them with base.read_history).
HISTORY_FILE = "history.json"


def _params_from(info: dict) -> audio.MfccParams:
    return audio.MfccParams(**info["features"])


def _masked_copies(features: np.ndarray, seed: int) -> np.ndarray:
    """SpecAugment-masked copies of standardised (frames, features) sequences (masks take the mean, 0)."""
    rng = np.random.default_rng(seed)
    return np.stack([spec_augment(x, rng, freq_axis=1, fill=0.0, **FEATURE_MASKS) for x in features])


def _ensemble(models: list):
    """Average the softmax outputs of models with the same input into one Keras model."""
    import keras

    if len(models) == 1:
        return models[0]
    inputs = keras.Input(shape=models[0].input_shape[1:], name="mfcc")
    # Members need distinct names inside the ensemble: re-wrap each under a seed-numbered name.
    members = [keras.Model(m.inputs, m.outputs[0], name=f"{m.name}_member{i}") for i, m in enumerate(models)]
    outputs = keras.layers.Average(name="ensemble_mean")([m(inputs) for m in members])
    return keras.Model(inputs, outputs, name=f"{models[0].name}_ensemble{len(models)}")


# --- training: the hooks of base.train ----------------------------------------------------------


def index(data: str | Path | pd.DataFrame, settings: AudioSettings) -> pd.DataFrame:
    """One clip with sound per take of ``data`` (corpus sources or an index); skipped files in ``attrs["skipped"]``."""
    found = clip_index(data)
    if isinstance(data, pd.DataFrame):
        found.attrs["data"] = "the given index"
    else:
        found.attrs["data"] = ", ".join(map(str, data)) if isinstance(data, list | tuple) else str(data)
    return found


def split(index: pd.DataFrame, settings: AudioSettings, seed: int) -> pd.DataFrame:
    """Speaker-disjoint (inside each corpus), gender-balanced train / val / test parts, or the settings'
    fixed test and val actors (:func:`mer_utils.corpora.speaker_disjoint_split`)."""
    from mer_utils.corpora import speaker_disjoint_split

    parts = speaker_disjoint_split(
        index, seed=seed, test_actors=settings.test_actors, val_actors=settings.val_actors
    )
    parts.attrs["data"] = index.attrs["data"]
    return parts


def features(index: pd.DataFrame, settings: AudioSettings, model: str, seed: int, progress: bool) -> dict:
    """The model's inputs: clip vectors (scikit-learn models, :func:`audio_vectors.vector_features`)
    or normalised MFCC sequences with augmented training copies (Keras models)."""
    if model in SKLEARN_MODELS:
        return vector_features(index, settings, model, seed, progress)
    return _sequence_features(index, settings, seed, progress)


def fit(features: dict, settings: AudioSettings, model: str, seed: int) -> Fitted:
    """The fitted model: a scikit-learn pipeline (:func:`audio_vectors.fit_vectors`) or Keras networks
    (one per member, averaged into one saved model)."""
    if model in SKLEARN_MODELS:
        return fit_vectors(features, settings, model, seed)
    return _fit_networks(features, settings, model, seed)


def tables(fitted: Fitted, features: dict, settings: AudioSettings, labels: list[str]) -> dict:
    """Val and test prediction tables (clip_id = take), plus the out-of-fold table of scikit-learn models.

    Each corpus's own test and validation figures join the metrics (``per_corpus``, ``val_per_corpus``).
    """
    made = _prediction_tables(fitted, features, labels)
    fitted.metrics.update(corpus_metrics(made, labels))
    return made


def corpus_metrics(tables: dict, labels: list[str]) -> dict:
    """metrics.json's ``per_corpus`` (test) and ``val_per_corpus``: each corpus's figures and answer spread
    (:func:`mer_utils.evaluation.per_corpus_metrics`, as ``mer evaluate`` reports them)."""
    from mer_utils.evaluation import per_corpus_metrics

    def scored(table: pd.DataFrame) -> pd.DataFrame:
        return table[table["pred_label"].astype(str) != ""]

    return {
        "per_corpus": per_corpus_metrics(scored(tables["test"]), labels),
        "val_per_corpus": per_corpus_metrics(scored(tables["val"]), labels),
    }


def _prediction_tables(fitted: Fitted, features: dict, labels: list[str]) -> dict:
    if fitted.model_format == "sklearn":
        return vector_tables(fitted, features, labels)
    from mer_utils.training import predict_probabilities

    inputs = {"val": features["x_val"], "test": features["x_test"]}
    made = split_tables(
        features["rows"],
        features["parts"],
        labels,
        lambda part: predict_probabilities(fitted.model, inputs[part]),
    )
    import keras

    # Notebooks train several networks in one process: free this one's graph (the model is saved).
    keras.backend.clear_session()
    return made


def split_record(index: pd.DataFrame, features: dict) -> dict:
    """run.json's ``split``: the actors of each part with clips that have audio."""
    return split_actors(features["rows"], features["parts"])


def _sequence_features(index: pd.DataFrame, settings: AudioSettings, seed: int, progress: bool) -> dict:
    """MFCC sequences of every clip, speaker- then globally standardised; augmented, masked training copies.

    The training split's statistics standardise all parts; with speaker normalisation the average
    training speaker is kept too (``speaker_population.npz``, for lone clips at prediction time).
    """
    from mer_utils.training import encode_labels

    params = audio.MfccParams()
    if settings.preprocess != "none":
        raise ValueError(
            f"preprocess {settings.preprocess!r} is for the whisper model only, not the MFCC models"
        )
    normalisation = settings.normalisation
    copies = settings.augmented_copies
    batch = audio.mfcc_batch(index, params, seed=seed, progress=progress)
    rows = batch.rows
    labels = list(RAVDESS_EMOTIONS)
    speakers = rows["actor"].to_numpy()
    statistics = audio.speaker_statistics(batch.features, speakers) if normalisation == "speaker" else None
    train_mask = (rows["split"] == "train").to_numpy()
    population = (
        speakers_module.population_statistics(batch.features[train_mask], speakers[train_mask])
        if normalisation == "speaker" and train_mask.any()
        else None
    )
    x_all = _normalise(batch.features, speakers, normalisation, statistics)
    y_all = encode_labels(rows["emotion"], labels)
    parts = split_parts(rows, index.attrs["data"])

    x_train, y_train = [x_all[parts["train"]]], [y_all[parts["train"]]]
    train_rows = rows[parts["train"]].reset_index(drop=True)
    for copy in range(copies):
        augmented = audio.mfcc_batch(
            train_rows,
            params,
            augmentation=AudioAugmentation(),
            copy=copy,
            seed=seed,
            progress=progress,
        )
        kept = augmented.rows
        x_copy = _normalise(augmented.features, kept["actor"].to_numpy(), normalisation, statistics)
        x_train.append(x_copy)
        y_train.append(encode_labels(kept["emotion"], labels))
    x_train, y_train = np.concatenate(x_train), np.concatenate(y_train)
    mean, std = audio.fit_standardiser(x_train)
    x_train = audio.apply_standardiser(x_train, mean, std)
    # The waveform-augmented copies also get SpecAugment masks; the original clips stay clean.
    originals = int(parts["train"].sum())
    if copies > 0:
        x_train[originals:] = _masked_copies(x_train[originals:], seed)
    return {
        "rows": rows,
        "parts": parts,
        "params": params,
        "x_train": x_train,
        "y_train": y_train,
        "x_val": audio.apply_standardiser(x_all[parts["val"]], mean, std),
        "y_val": y_all[parts["val"]],
        "x_test": audio.apply_standardiser(x_all[parts["test"]], mean, std),
        "mean": mean,
        "std": std,
        "population": population,
        "skipped": batch.skipped,
        "progress": progress,
    }


def _fit_networks(features: dict, settings: AudioSettings, model: str, seed: int) -> Fitted:
    """Train ``model`` (``ensemble``: the four architectures; else ``ensemble_size`` seeds of one) with
    :func:`mer_utils.training.fit_classifier`, each member seeded ``seed + member``; one averaged model."""
    from mer_utils.config import set_seed
    from mer_utils.models.audio import SEQUENCE_MODELS, build_model
    from mer_utils.pipelines.out_of_fold import network_reason
    from mer_utils.training import count_parameters, fit_classifier

    x_train, y_train = features["x_train"], features["y_train"]
    labels = list(RAVDESS_EMOTIONS)
    copies = settings.augmented_copies
    member_names = list(SEQUENCE_MODELS) if model == ENSEMBLE_MODEL else [model] * settings.ensemble_size
    members, fits = [], []
    for member, member_name in enumerate(member_names):
        set_seed(seed + member, keras=True)
        network = build_model(member_name, x_train.shape[1:], len(labels), width=settings.width)
        fits.append(
            fit_classifier(
                network,
                x_train,
                y_train,
                features["x_val"],
                features["y_val"],
                epochs=settings.epochs,
                batch_size=settings.batch_size,
                learning_rate=settings.learning_rate,
                patience=settings.patience,
                verbose=2 if features["progress"] else 0,
            )
        )
        members.append(network)
    network = _ensemble(members)
    mean, std, population = features["mean"], features["std"], features["population"]

    def write_files(out: Path) -> None:
        _save_normalisation(out, mean, std)
        if population is not None:
            speakers_module.save_population(out, *population)

    return Fitted(
        model=network,
        model_format="keras",
        # The first member's curves are the model's (notebook 03 plots them); every member's follow.
        history=fits[0].history,
        members=[f.history for f in fits],
        out_of_fold_reason=network_reason(sum(f.seconds for f in fits)),
        extra_model_files=(NORMALISATION_FILE,) + _population_files(population),
        write_files=write_files,
        info={
            "features": features["params"].to_dict(),
            "speaker_population_file": speakers_module.POPULATION_FILE if population is not None else None,
            "num_frames": int(x_train.shape[1]),
            "num_features": int(x_train.shape[2]),
            "normalisation": settings.normalisation,
            "normalisation_file": NORMALISATION_FILE,
            "augmented_copies": copies,
            "spec_augment": FEATURE_MASKS if copies > 0 else None,
            "ensemble_size": settings.ensemble_size,
            "members": member_names,
            "width": settings.width,
        },
        metrics={
            "params": count_parameters(network),
            "train_seconds": float(sum(f.seconds for f in fits)),
            "epochs": int(sum(f.epochs for f in fits)),
            "train_samples": int(len(x_train)),
            "normalisation": settings.normalisation,
        },
    )


def combine_runs(run_dirs: list[str | Path], out: str | Path) -> dict:
    """Average the models of several audio runs (same data, split, features) into one run folder.

    The notebook uses it to build the ``ensemble`` branch run from the four compared runs without
    training again. Predictions are the mean of the members' probabilities, exactly what the saved
    averaged model outputs. Returns the test metrics.
    """
    from mer_utils.evaluation import prediction_table, probabilities_of
    from mer_utils.pipelines.base import RUN_KEYS, read_history, write_run
    from mer_utils.runs import read_json, read_predictions, read_run_info, save_model

    run_dirs = [Path(r) for r in run_dirs]
    if len(run_dirs) < 2:
        raise ValueError("combine_runs needs at least two run folders")
    infos = [read_run_info(r, complete=True) for r in run_dirs]
    for run_dir, info in zip(run_dirs, infos, strict=True):
        for key in ("branch", "labels", "features", "normalisation", "split", "data"):
            if info.get(key) != infos[0].get(key):
                raise ValueError(
                    f"{run_dir}: {key} differs from {run_dirs[0]}; only runs of one setup can be averaged"
                )
    statistics = [_load_normalisation(r, i) for r, i in zip(run_dirs, infos, strict=True)]
    for run_dir, (mean, std) in zip(run_dirs, statistics, strict=True):
        if not (np.allclose(mean, statistics[0][0]) and np.allclose(std, statistics[0][1])):
            raise ValueError(f"{run_dir}: trained with other normalisation statistics than {run_dirs[0]}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    network = _ensemble([base.load_model(r, BRANCH) for r in run_dirs])
    save_model(out, network, "keras")
    _save_normalisation(out, statistics[0][0], statistics[0][1])
    population_files: tuple[str, ...] = ()
    if infos[0].get("speaker_population_file"):
        # Members share the training split, so the first member's training-speaker statistics serve all.
        population = speakers_module.load_population(Path(run_dirs[0]), statistics[0][0].shape[-1])
        if population is not None:
            speakers_module.save_population(out, *population)
            population_files = (speakers_module.POPULATION_FILE,)
    members = [info["model"] for info in infos]
    fixed = set(RUN_KEYS) | {"members", "combined_from"}
    run_info = {k: v for k, v in infos[0].items() if k not in fixed}
    run_info.update(members=members, combined_from=[str(r) for r in run_dirs])
    labels = infos[0]["labels"]
    tables = {}
    for split in ("val", "test"):
        parts = [read_predictions(r, split) for r in run_dirs]
        if any(list(p["clip_id"]) != list(parts[0]["clip_id"]) for p in parts):
            raise ValueError(f"the runs' {split} predictions cover different clips")
        probabilities = np.mean([probabilities_of(p, labels) for p in parts], axis=0)
        first = parts[0]
        tables[split] = prediction_table(
            probabilities,
            labels,
            first["clip_id"].tolist(),
            first["true_label"].tolist(),
            first["path"].tolist(),
        )
    member_metrics = [read_json(r / "metrics.json") for r in run_dirs]
    histories = [h for r in run_dirs for h in read_history(r)["members"]]
    return write_run(
        out,
        branch=BRANCH,
        labels=labels,
        model=ENSEMBLE_MODEL,
        seed=infos[0]["seed"],
        smoke=bool(infos[0].get("smoke", False)),
        data=infos[0].get("data", ""),
        split=infos[0]["split"],
        tables=tables,
        skipped=member_metrics[0].get("skipped", []),
        history=histories[0] if histories else None,
        members=histories,
        extra_model_files=(NORMALISATION_FILE,) + population_files,
        info=run_info,
        metrics={
            "members": members,
            "params": int(network.count_params()),
            "train_seconds": float(sum(m.get("train_seconds", 0.0) for m in member_metrics)),
            "epochs": int(sum(m.get("epochs", 0) for m in member_metrics)),
            "train_samples": member_metrics[0].get("train_samples"),
            "normalisation": infos[0]["normalisation"],
        },
    )


# --- saved runs: this branch's parts of the shared driver (mer_utils.pipelines.base) ---------


def load(run_dir: Path, info: dict):
    """This branch's model loader: Keras models need the custom layers registered first."""
    from mer_utils.runs import load_model_file

    if not _is_sklearn_run(info):
        from mer_utils.models.audio import register_custom_layers

        register_custom_layers()
    return load_model_file(run_dir, info)


def table_of(run_dir: Path, info: dict, data, model, degradation, progress: bool) -> pd.DataFrame:
    """Prediction table of a loaded model on every clip with sound in ``data``; "noise" adds white noise.

    With noise, speaker statistics are computed from the noisy clips, as they would be in use.
    """
    from mer_utils.training import predict_probabilities

    noise = float(degradation.level) if degradation is not None else None
    index, skipped = _index(data)
    if _is_sklearn_run(info):
        return vector_table(run_dir, info, index, skipped, model, noise, progress)
    mean, std = _load_normalisation(run_dir, info)
    batch = audio.mfcc_batch(
        index, _params_from(info), noise_snr_db=noise, seed=info["seed"], progress=progress
    )
    rows = batch.rows
    x = _normalise_for_prediction(batch.features, rows["actor"].to_numpy(), info["normalisation"], run_dir)
    probabilities = predict_probabilities(model, audio.apply_standardiser(x, mean, std))
    table = rows_table(probabilities, list(info["labels"]), rows)
    table.attrs["skipped"] = skipped + batch.skipped
    return table


def evaluation_extras(info: dict, table: pd.DataFrame) -> dict:
    """The RAVDESS actors and the speakers scored by ``mer evaluate``."""
    from mer_utils.corpora import scored_speakers

    return scored_speakers(table)


def file_prediction(run_dir: Path, info: dict, path: Path, model) -> dict:
    """This branch's part of :func:`predict_file`: voice check, features, speaker normalisation, model."""
    from mer_utils.training import predict_probabilities

    if _is_sklearn_run(info):
        return file_prediction_sklearn(run_dir, info, path, model)
    params = _params_from(info)

    def reference_of(other: Path) -> np.ndarray:
        return audio.cached_feature(
            other, lambda: audio.clip_mfcc(other, params), audio.mfcc_cache_params(params)
        )

    features, details = clip_for_prediction(
        run_dir, info, path, lambda clip: audio.clip_mfcc(clip, params), reference_of
    )
    if features is None:
        return details
    mean, std = _load_normalisation(run_dir, info)
    network = model if model is not None else base.load_model(run_dir, BRANCH)
    return timed_answer(
        lambda: predict_probabilities(network, audio.apply_standardiser(features, mean, std)[None])[0],
        details,
    )
