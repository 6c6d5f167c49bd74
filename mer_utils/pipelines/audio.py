"""``mer train audio`` / ``mer evaluate``: speech emotion models on RAVDESS, from MFCCs and utterance statistics.

Two families share the split, the run folder and the prediction functions: Keras models on MFCC
sequences (cnn, lstm, bilstm, attention, their average ``ensemble``, ``stats``), and scikit-learn
models on one vector per clip, saved as ``model.skops``: ``whisper`` (the default: logistic
regression on frozen Whisper-encoder embeddings, :mod:`mer_utils.whisper_encoder`), and ``logreg``
and ``svm`` on hand-made utterance statistics (:func:`mer_utils.audio.utterance_features`).

Keras steps: index the folder, keep one file per take (full AV .mp4 first, then audio-only .wav),
split by actor (``actor_disjoint_split``, gender-balanced; 12/3/3 actors for 18), MFCC +
deltas + pitch / energy per 10 ms frame on 2.5 s of trimmed speech (cached), augmented copies
of the training clips only, normalisation, one of the four Keras models trained with
:func:`mer_utils.training.fit_classifier`, and the run folder.

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
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils import audio
from mer_utils import speakers as speakers_module
from mer_utils.config import DEFAULT_SEED, RAVDESS_EMOTIONS

log = logging.getLogger(__name__)

BRANCH = "audio"
# The model averaging the four architectures' probabilities (`--model ensemble`).
ENSEMBLE_MODEL = "ensemble"
# Default model of `mer train audio`: the best on the validation actors (07, 10, 11) of the real-data
# comparison in notebook 03: logistic regression on speaker-normalised Whisper-base embeddings (val 0.72)
# beat the same classifier on utterance statistics (0.578) and the average of the four networks (0.561).
DEFAULT_MODEL = "whisper"
# Modalities with sound, in order of preference, for one file per take.
AUDIO_MODALITIES = ("audio-video", "audio-only")
# Augmented copies of every training clip (noise, shift, pitch, stretch, then SpecAugment masks); 1 in smoke mode.
AUGMENTED_COPIES = 2
# SpecAugment-style masks on the training MFCC sequences (frequency bands, time spans).
FEATURE_MASKS = {"freq_masks": 2, "max_freq_width": 6, "time_masks": 2, "max_time_width": 20}
# Training budget (early stopping on validation loss usually stops much earlier).
EPOCHS = 60
SMOKE_EPOCHS = 12
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
PATIENCE = 10
# Seeds of a single architecture averaged into the saved model (1: one network).
ENSEMBLE_SIZE = 1
# Base width (filters / LSTM units) of the models; smoke runs use half.
WIDTH = 64
# File beside model.keras holding the global standardiser (mean, std).
NORMALISATION_FILE = "normalisation.npz"
# Training curves (list of Keras history dicts, one per ensemble member).
HISTORY_FILE = "history.json"
# Speaker normalisation modes.
NORMALISATIONS = ("speaker", "global")
# scikit-learn models on one vector per clip (saved as model.skops): "logreg" (L2 logistic regression)
# and "svm" (RBF support vector machine with Platt probabilities) on utterance statistics, and
# "whisper" (L2 logistic regression) on Whisper-encoder embeddings.
SKLEARN_MODELS = ("logreg", "svm", "whisper")
# What each scikit-learn model's vector is (run.json key ``feature_kind``).
FEATURE_KINDS = {"logreg": "utterance", "svm": "utterance", "whisper": "whisper"}
# Their saved pipeline (StandardScaler + classifier) inside the run folder (skops: no code runs on load).
SKLEARN_MODEL_FILE = "model.skops"
# Inverse regularisation strengths, chosen on the validation actors 07, 10, 11 of the default split
# (logistic regression C in {0.01, 0.1}, SVM C in {1, 3, 10}; see notebook 03's summary).
LOGREG_C = 0.1
SVM_C = 3.0
# On the Whisper embeddings: C in {0.01, 0.03, 0.1, 1} by actor-grouped 5-fold CV over the 15 training and
# validation actors of the default split (0.817 for 0.01-0.1, 0.804 for 1); the middle value.
WHISPER_C = 0.03


def clip_index(data: str | Path | pd.DataFrame) -> pd.DataFrame:
    """One clip with sound per take of a RAVDESS folder (or index); skipped files in ``attrs["skipped"]``."""
    index, skipped = _index(data)
    index.attrs["skipped"] = skipped
    return index


def _index(data: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """One row per take with sound, from a folder or an index DataFrame; skipped files listed."""
    from mer_utils.ravdess import index_dataset, one_file_per_take

    if isinstance(data, pd.DataFrame):
        index = data.copy()
        skipped = []
    else:
        index = index_dataset(data)
        skipped = [{"path": p, "reason": r} for p, r in index.attrs.get("skipped", [])]
    if index.empty:
        raise ValueError(f"{data if not isinstance(data, pd.DataFrame) else 'index'}: no RAVDESS clips found")
    without_sound = index[~index["modality"].isin(AUDIO_MODALITIES)]
    with_sound_takes = set(index.loc[index["modality"].isin(AUDIO_MODALITIES), "take"])
    for path in without_sound.loc[~without_sound["take"].isin(with_sound_takes), "path"]:
        skipped.append(
            {"path": str(path), "reason": f"{path}: video-only clip (modality 02) has no audio track"}
        )
    kept = one_file_per_take(index, prefer=AUDIO_MODALITIES)
    return kept, skipped


def _params_from(info: dict) -> audio.MfccParams:
    return audio.MfccParams(**info["features"])


def _normalise(
    features: np.ndarray,
    speakers: np.ndarray,
    mode: str,
    statistics: dict | None = None,
) -> np.ndarray:
    if mode == "speaker":
        return audio.normalise_per_speaker(features, speakers, statistics)
    if mode == "global":
        return features
    raise ValueError(f"unknown normalisation {mode!r}; expected one of {NORMALISATIONS}")


def _normalise_for_prediction(
    features: np.ndarray, speakers: np.ndarray, mode: str, run_dir: Path
) -> np.ndarray:
    """Normalisation of clips being scored: a speaker with few clips is shrunk towards the training population.

    Speakers with at least ``speakers.MIN_SPEAKER_CLIPS`` clips (every RAVDESS actor folder) get
    exactly the training-time treatment, their own statistics.
    """
    if mode != "speaker":
        return _normalise(features, speakers, mode)
    population = speakers_module.load_population(run_dir, features.shape[-1])
    return speakers_module.normalise_speakers(features, speakers, population)


def _masked_copies(features: np.ndarray, seed: int) -> np.ndarray:
    """SpecAugment-masked copies of standardised (frames, features) sequences (masks take the mean, 0)."""
    rng = np.random.default_rng(seed)
    return np.stack([audio.spec_augment(x, rng, freq_axis=1, fill=0.0, **FEATURE_MASKS) for x in features])


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


def _write_split_tables(
    out: Path, rows: pd.DataFrame, parts: dict, labels: list[str], probabilities_of_split
) -> dict:
    """Prediction tables of the val and test clips (clip_id = take), written to the run folder."""
    from mer_utils.evaluation import prediction_table
    from mer_utils.runs import write_predictions

    tables = {}
    for split in ("val", "test"):
        part = rows[parts[split]]
        tables[split] = prediction_table(
            probabilities_of_split(split),
            labels,
            part["take"].tolist(),
            part["emotion"].tolist(),
            part["path"].tolist(),
        )
        write_predictions(out, split, tables[split])
    return tables


def train(
    data: str | Path,
    out: str | Path,
    *,
    seed: int = DEFAULT_SEED,
    smoke: bool = False,
    model: str | None = None,
    test_actors: list[int] | None = None,
    val_actors: list[int] | None = None,
    epochs: int | None = None,
    augmented_copies: int | None = None,
    normalisation: str = "speaker",
    ensemble_size: int | None = None,
    width: int | None = None,
    params: audio.MfccParams | None = None,
    progress: bool = True,
) -> dict:
    """Train one MFCC model on a RAVDESS folder and write the run folder; return the test metrics.

    ``model`` is cnn, lstm, bilstm, attention, ensemble (all four trained, their probabilities
    averaged in one saved model), or logreg / svm (scikit-learn on utterance statistics, see
    :func:`_train_sklearn`); the default is :data:`DEFAULT_MODEL`. ``smoke``
    shrinks epochs, width and augmentation for CI. The split is ``actor_disjoint_split(seed)``
    unless ``test_actors`` / ``val_actors`` fix it.
    """
    import keras

    from mer_utils.config import set_seed
    from mer_utils.evaluation import table_metrics
    from mer_utils.models.audio import BUILDERS, SEQUENCE_MODELS, build_model
    from mer_utils.ravdess import actor_disjoint_split
    from mer_utils.runs import save_model, write_json, write_metrics, write_run_info
    from mer_utils.training import count_parameters, encode_labels, fit_classifier, predict_probabilities

    name = model or DEFAULT_MODEL
    known = [*BUILDERS, ENSEMBLE_MODEL, *SKLEARN_MODELS]
    if name not in known:
        raise ValueError(f"unknown audio model {name!r}; expected one of {known}")
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; expected one of {NORMALISATIONS}")
    if name in SKLEARN_MODELS:
        return _train_sklearn(
            data, out, name, seed, smoke, test_actors, val_actors, normalisation, progress=progress
        )
    params = params or audio.MfccParams()
    epochs = epochs or (SMOKE_EPOCHS if smoke else EPOCHS)
    copies = AUGMENTED_COPIES if augmented_copies is None else augmented_copies
    copies = min(copies, 1) if smoke else copies
    ensemble_size = ensemble_size or (1 if smoke else ENSEMBLE_SIZE)
    width = width or (WIDTH // 2 if smoke else WIDTH)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(seed)

    index, skipped = _index(data)
    index = actor_disjoint_split(index, seed=seed, test_actors=test_actors, val_actors=val_actors)
    batch = audio.mfcc_batch(index, params, seed=seed, progress=progress)
    skipped += batch.skipped
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
    parts = {split: (rows["split"] == split).to_numpy() for split in ("train", "val", "test")}
    for split, mask in parts.items():
        if not mask.any():
            raise ValueError(f"{data}: the {split} split has no clips with audio")

    x_train, y_train = [x_all[parts["train"]]], [y_all[parts["train"]]]
    train_rows = rows[parts["train"]].reset_index(drop=True)
    for copy in range(copies):
        augmented = audio.mfcc_batch(
            train_rows,
            params,
            augmentation=audio.AudioAugmentation(),
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
    x_val = audio.apply_standardiser(x_all[parts["val"]], mean, std)
    x_test = audio.apply_standardiser(x_all[parts["test"]], mean, std)
    y_val = y_all[parts["val"]]

    member_names = list(SEQUENCE_MODELS) if name == ENSEMBLE_MODEL else [name] * ensemble_size
    members, fits = [], []
    for member, member_name in enumerate(member_names):
        set_seed(seed + member, keras=True)
        network = build_model(member_name, x_train.shape[1:], len(labels), width=width)
        fits.append(
            fit_classifier(
                network,
                x_train,
                y_train,
                x_val,
                y_val,
                epochs=epochs,
                batch_size=BATCH_SIZE,
                learning_rate=LEARNING_RATE,
                patience=PATIENCE,
                verbose=2 if progress else 0,
            )
        )
        members.append(network)
    network = _ensemble(members)
    save_model(out, network, "keras")
    _save_normalisation(out, mean, std)
    if population is not None:
        speakers_module.save_population(out, *population)
    split_actors = {s: sorted(int(a) for a in rows.loc[m, "actor"].unique()) for s, m in parts.items()}
    write_run_info(
        out,
        BRANCH,
        labels,
        extra_model_files=(NORMALISATION_FILE,) + _population_files(population),
        model=name,
        features=params.to_dict(),
        speaker_population_file=speakers_module.POPULATION_FILE if population is not None else None,
        num_frames=int(x_train.shape[1]),
        num_features=int(x_train.shape[2]),
        normalisation=normalisation,
        normalisation_file=NORMALISATION_FILE,
        augmented_copies=copies,
        spec_augment=FEATURE_MASKS if copies > 0 else None,
        ensemble_size=ensemble_size,
        members=member_names,
        width=width,
        seed=seed,
        data=str(data),
        split=split_actors,
        smoke=smoke,
    )

    inputs = {"val": x_val, "test": x_test}
    tables = _write_split_tables(
        out, rows, parts, labels, lambda split: predict_probabilities(network, inputs[split])
    )
    metrics = table_metrics(tables["test"], labels)
    metrics.update(
        {
            "model": name,
            "seed": seed,
            "split": split_actors,
            "val": table_metrics(tables["val"], labels),
            "skipped": skipped,
            "params": count_parameters(network),
            "train_seconds": float(sum(f.seconds for f in fits)),
            "epochs": int(sum(f.epochs for f in fits)),
            "train_samples": int(len(x_train)),
            "normalisation": normalisation,
        }
    )
    write_metrics(out, metrics)
    # Training curves of every ensemble member (the first is what notebook 03 plots).
    write_json(out / HISTORY_FILE, [f.history for f in fits])
    keras.backend.clear_session()
    return metrics


def build_sklearn_model(name: str, seed: int = DEFAULT_SEED):
    """StandardScaler + classifier pipeline of a scikit-learn audio model (logreg, svm or whisper)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if name in ("logreg", "whisper"):
        c = WHISPER_C if name == "whisper" else LOGREG_C
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


def _train_sklearn(
    data: str | Path,
    out: str | Path,
    name: str,
    seed: int,
    smoke: bool,
    test_actors: list[int] | None,
    val_actors: list[int] | None,
    normalisation: str,
    progress: bool = True,
) -> dict:
    """Train a scikit-learn model on per-speaker-normalised clip vectors; write the run folder.

    One vector per clip: utterance statistics for logreg / svm (:func:`mer_utils.audio.utterance_features`:
    MFCC + delta statistics, log-mel band levels, spectral shape, pitch and energy) or the Whisper
    embedding for whisper (:func:`mer_utils.whisper_encoder.clip_embedding`). Each speaker is
    standardised with their own clips (no labels), then a scaler fitted on the training actors and the
    classifier.
    """
    import time

    from mer_utils.config import set_seed
    from mer_utils.evaluation import table_metrics
    from mer_utils.ravdess import actor_disjoint_split
    from mer_utils.runs import save_model, write_metrics, write_run_info

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    index, skipped = _index(data)
    index = actor_disjoint_split(index, seed=seed, test_actors=test_actors, val_actors=val_actors)
    kind = FEATURE_KINDS[name]
    features = _vector_features(kind)
    batch = _vector_batch(kind, features, index, seed=seed, progress=progress)
    skipped += batch.skipped
    rows = batch.rows
    labels = list(RAVDESS_EMOTIONS)
    x_all = _utterance_vectors(batch, normalisation, rows["actor"].to_numpy())
    y_all = rows["emotion"].astype(str).to_numpy()
    parts = {split: (rows["split"] == split).to_numpy() for split in ("train", "val", "test")}
    for split, mask in parts.items():
        if not mask.any():
            raise ValueError(f"{data}: the {split} split has no clips with audio")
    pipeline = build_sklearn_model(name, seed)
    if name == "svm":
        # Platt calibration cross-validates: no more folds than the rarest emotion has training clips.
        rarest = int(pd.Series(y_all[parts["train"]]).value_counts().min())
        if rarest < 2:
            raise ValueError(f"{data}: the svm needs at least 2 training clips of every emotion present")
        pipeline.set_params(calibratedclassifiercv__cv=min(5, rarest))
    start = time.perf_counter()
    pipeline.fit(x_all[parts["train"]], y_all[parts["train"]])
    seconds = time.perf_counter() - start
    save_model(out, pipeline, "sklearn")
    population = None
    if normalisation == "speaker":
        # The average training speaker: what a lone clip of an unknown speaker is normalised towards.
        population = speakers_module.population_statistics(
            batch.features[parts["train"]], rows.loc[parts["train"], "actor"].to_numpy()
        )
        speakers_module.save_population(out, *population)
    split_actors = {s: sorted(int(a) for a in rows.loc[m, "actor"].unique()) for s, m in parts.items()}
    write_run_info(
        out,
        BRANCH,
        labels,
        extra_model_files=_population_files(population),
        model=name,
        model_file=SKLEARN_MODEL_FILE,
        speaker_population_file=speakers_module.POPULATION_FILE if population is not None else None,
        feature_kind=kind,
        features=features,
        num_features=int(x_all.shape[1]),
        normalisation=normalisation,
        seed=seed,
        data=str(data),
        split=split_actors,
        smoke=smoke,
    )
    tables = _write_split_tables(
        out, rows, parts, labels, lambda split: sklearn_probabilities(pipeline, x_all[parts[split]], labels)
    )
    metrics = table_metrics(tables["test"], labels)
    metrics.update(
        {
            "model": name,
            "seed": seed,
            "split": split_actors,
            "val": table_metrics(tables["val"], labels),
            "skipped": skipped,
            "params": int(x_all.shape[1]),
            "train_seconds": float(seconds),
            "epochs": 0,
            "train_samples": int(parts["train"].sum()),
            "normalisation": normalisation,
        }
    )
    write_metrics(out, metrics)
    return metrics


def _is_sklearn_run(info: dict) -> bool:
    return info.get("feature_kind") in set(FEATURE_KINDS.values())


def _vector_features(kind: str) -> dict:
    """The run.json ``features`` of a clip-vector kind: what determines every vector."""
    if kind == "whisper":
        from mer_utils import whisper_encoder

        return whisper_encoder.feature_params()
    return audio.UtteranceParams().to_dict()


def _check_encoder(kind: str, features: dict, run_dir: Path | None = None) -> None:
    """Refuse a whisper run whose encoder differs from the one this machine would use."""
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
    """One vector per clip of ``index`` (utterance statistics or Whisper embedding), cached."""
    if kind == "whisper":
        from mer_utils import whisper_encoder

        return whisper_encoder.embedding_batch(index, noise_snr_db=noise_snr_db, seed=seed, progress=progress)
    params = audio.UtteranceParams(**features)
    return audio.utterance_batch(index, params, noise_snr_db=noise_snr_db, seed=seed, progress=progress)


def _clip_vector(kind: str, features: dict, path: Path, cached: bool = False) -> np.ndarray:
    """One clip's vector; ``cached`` reads / writes the feature cache (the speaker reference clips)."""
    if kind == "whisper":
        from mer_utils import whisper_encoder

        def compute():
            return whisper_encoder.clip_embedding(path)

        key = whisper_encoder.cache_params()
    else:
        params = audio.UtteranceParams(**features)

        def compute():
            return audio.clip_utterance_features(path, params)

        key = audio.utterance_cache_params(params)
    return audio.cached_feature(path, compute, key) if cached else compute()


def combine_runs(run_dirs: list[str | Path], out: str | Path) -> dict:
    """Average the models of several audio runs (same data, split, features) into one run folder.

    The notebook uses it to build the ``ensemble`` branch run from the four compared runs without
    training again. Predictions are the mean of the members' probabilities, exactly what the saved
    averaged model outputs. Returns the test metrics.
    """
    from mer_utils.evaluation import prediction_table, probabilities_of, table_metrics
    from mer_utils.runs import (
        FINGERPRINT_KEY,
        MODEL_FILES_KEY,
        read_json,
        read_predictions,
        read_run_info,
        save_model,
        write_json,
        write_metrics,
        write_predictions,
        write_run_info,
    )

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
    network = _ensemble([load_model(r) for r in run_dirs])
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
    written_at_save = ("branch", "labels", MODEL_FILES_KEY, FINGERPRINT_KEY)
    run_info = {k: v for k, v in infos[0].items() if k not in written_at_save}
    run_info.update(model=ENSEMBLE_MODEL, members=members, combined_from=[str(r) for r in run_dirs])
    write_run_info(
        out,
        BRANCH,
        infos[0]["labels"],
        extra_model_files=(NORMALISATION_FILE,) + population_files,
        **run_info,
    )
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
        write_predictions(out, split, tables[split])
    member_metrics = [read_json(r / "metrics.json") for r in run_dirs]
    metrics = table_metrics(tables["test"], labels)
    metrics.update(
        {
            "model": ENSEMBLE_MODEL,
            "members": members,
            "seed": infos[0].get("seed"),
            "split": infos[0]["split"],
            "val": table_metrics(tables["val"], labels),
            "skipped": member_metrics[0].get("skipped", []),
            "params": int(network.count_params()),
            "train_seconds": float(sum(m.get("train_seconds", 0.0) for m in member_metrics)),
            "epochs": int(sum(m.get("epochs", 0) for m in member_metrics)),
            "train_samples": member_metrics[0].get("train_samples"),
            "normalisation": infos[0]["normalisation"],
        }
    )
    write_metrics(out, metrics)
    histories = []
    for run_dir in run_dirs:
        path = run_dir / HISTORY_FILE
        histories += read_json(path) if path.is_file() else []
    write_json(out / HISTORY_FILE, histories)
    return metrics


def load_model(run_dir: str | Path):
    """Load a run folder's model: Keras (model.keras) or a scikit-learn pipeline (model.skops), checked."""
    from mer_utils.runs import load_model_file, read_run_info

    info = read_run_info(run_dir, complete=True)
    if info["branch"] != BRANCH:
        raise ValueError(f"{run_dir}: is a {info['branch']!r} run, not an audio run")
    if not _is_sklearn_run(info):
        from mer_utils.models.audio import register_custom_layers

        register_custom_layers()
    return load_model_file(run_dir, info)


def _population_files(population) -> tuple[str, ...]:
    """The training-speaker statistics file to hash with the model, when the run stores one."""
    return (speakers_module.POPULATION_FILE,) if population is not None else ()


def _save_normalisation(run_dir: Path, mean: np.ndarray, std: np.ndarray) -> None:
    from mer_utils.runs import atomic_write_npz

    atomic_write_npz(run_dir / NORMALISATION_FILE, mean=mean, std=std)


def _load_normalisation(run_dir: Path, info: dict) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / info.get("normalisation_file", NORMALISATION_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: normalisation statistics missing from the run folder")
    try:
        with np.load(path, allow_pickle=False) as stored:
            return stored["mean"], stored["std"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: corrupt normalisation statistics ({error}); retrain the run") from error


def predict_table(
    run_dir: str | Path,
    data: str | Path | pd.DataFrame,
    noise_snr_db: float | None = None,
    model=None,
    progress: bool = False,
) -> pd.DataFrame:
    """Prediction table (clip_id = take) of a saved run on every clip with sound in ``data``.

    ``data`` is a RAVDESS folder or an index DataFrame (e.g. the test rows). ``noise_snr_db``
    adds white noise at that SNR before the features (robustness curves); speaker statistics
    are then computed from the noisy clips, as they would be in use. Clips that cannot be read
    are listed in ``table.attrs["skipped"]``.
    """
    from mer_utils.evaluation import prediction_table
    from mer_utils.runs import read_run_info
    from mer_utils.training import predict_probabilities

    run_dir = Path(run_dir)
    info = read_run_info(run_dir, complete=True)
    if info.get("branch") != BRANCH:
        raise ValueError(f"{run_dir}: is a {info.get('branch')!r} run, not an audio run")
    labels = info["labels"]
    index, skipped = _index(data)
    if _is_sklearn_run(info):
        kind = info["feature_kind"]
        _check_encoder(kind, info["features"], run_dir)
        pipeline = model if model is not None else load_model(run_dir)
        batch = _vector_batch(
            kind, info["features"], index, noise_snr_db=noise_snr_db, seed=info["seed"], progress=progress
        )
        rows = batch.rows
        x = _normalise_for_prediction(
            batch.features, rows["actor"].to_numpy(), info["normalisation"], run_dir
        )
        probabilities = sklearn_probabilities(pipeline, x, labels)
        true_labels = [e if e in labels else "" for e in rows["emotion"].astype(str)]
        table = prediction_table(
            probabilities, labels, rows["take"].tolist(), true_labels, rows["path"].astype(str).tolist()
        )
        table.attrs["skipped"] = skipped + batch.skipped
        return table
    mean, std = _load_normalisation(run_dir, info)
    network = model if model is not None else load_model(run_dir)
    batch = audio.mfcc_batch(
        index, _params_from(info), noise_snr_db=noise_snr_db, seed=info["seed"], progress=progress
    )
    skipped += batch.skipped
    rows = batch.rows
    x = _normalise_for_prediction(batch.features, rows["actor"].to_numpy(), info["normalisation"], run_dir)
    probabilities = predict_probabilities(network, audio.apply_standardiser(x, mean, std))
    true_labels = [e if e in labels else "" for e in rows["emotion"].astype(str)]
    table = prediction_table(
        probabilities, labels, rows["take"].tolist(), true_labels, rows["path"].astype(str).tolist()
    )
    table.attrs["skipped"] = skipped
    return table


def evaluate(run_dir: str | Path, data: str | Path) -> dict:
    """Score a saved run on every clip with sound of another RAVDESS folder; metrics + skipped."""
    from mer_utils.evaluation import table_metrics

    table = predict_table(run_dir, data)
    metrics = table_metrics(table)
    metrics["skipped"] = table.attrs.get("skipped", [])
    metrics["data"] = str(data)
    metrics["actors"] = sorted({int(Path(p).stem.split("-")[-1]) for p in table["path"]})
    return metrics


# Most clips of one speaker used as the reference for a single file's speaker normalisation.
MAX_REFERENCE_CLIPS = 60


def _reference_clips(path: Path) -> list[Path]:
    """Other clips with sound of the same RAVDESS actor in the file's folder (for speaker statistics)."""
    from mer_utils.ravdess import parse_filename

    try:
        actor = parse_filename(path).actor
    except ValueError:
        return []
    found = []
    for other in sorted(path.parent.iterdir()):
        if other == path or other.suffix.lower() not in (".wav", ".mp4"):
            continue
        try:
            clip = parse_filename(other)
        except ValueError:
            continue
        if clip.actor == actor and clip.modality in AUDIO_MODALITIES:
            found.append(other)
    return found[:MAX_REFERENCE_CLIPS]


def _unavailable(reason: str, details: dict | None = None) -> dict:
    return {"available": False, "reason": reason, "probabilities": None, "details": details or {}}


def _speaker_normalised(
    features: np.ndarray, path: Path, reference_of, run_dir: Path, details: dict
) -> np.ndarray | None:
    """One clip's features normalised for its speaker (see :mod:`mer_utils.speakers`); None if impossible.

    ``reference_of(other)`` gives another clip's features (cached). The same-speaker clips come
    from :func:`_reference_clips` (RAVDESS names in the same folder); with too few of them the
    statistics are shrunk towards the training population stored in the run folder.
    """
    from mer_utils import media

    reference = [features]
    for other in _reference_clips(path):
        try:
            reference.append(reference_of(other))
        except (media.MediaError, FileNotFoundError, ValueError):
            continue
    population = speakers_module.load_population(run_dir, features.shape[-1])
    mean, std, how = speakers_module.speaker_moments(np.stack(reference), population)
    details["speaker_reference_clips"] = len(reference)
    details["speaker_normalisation"] = how
    if how == "shrunk":
        details["note"] = (
            f"{len(reference)} clip(s) of this speaker: normalised with statistics shrunk towards the "
            "training speakers' average"
        )
    elif how == "self":
        if features.ndim == 1 and len(reference) == 1:
            # A vector standardised against itself is all zeros: every clip would get one answer.
            return None
        details["note"] = (
            "this run stores no training-speaker statistics (trained by an older version): "
            f"normalised with {len(reference)} clip(s) of this speaker only"
        )
    return ((features - mean) / std).astype(np.float32)


# Reason given when a run without stored training-speaker statistics meets a lone clip.
LONE_CLIP_REASON = (
    "{run}: this run predates stored training-speaker statistics, so a clip without other clips of "
    "its speaker cannot be normalised; retrain it with `mer train audio`"
)


def predict_file(run_dir: str | Path, path: str | Path, model=None) -> dict:
    """Emotion probabilities of one clip: available False (with the reason) when it has no usable audio.

    No speech (under :data:`mer_utils.voice.MIN_SPEECH_SECONDS` of voice: silence, hiss, a
    0.2 s clip) makes the model unavailable, as does an unreadable clip or one without sound.
    """
    import time

    from mer_utils import media, voice
    from mer_utils.runs import read_run_info
    from mer_utils.training import predict_probabilities

    run_dir, path = Path(run_dir), Path(path)
    info = read_run_info(run_dir, complete=True)
    if _is_sklearn_run(info):
        return _predict_file_sklearn(run_dir, info, path, model)
    params = _params_from(info)
    start = time.perf_counter()
    try:
        activity = voice.clip_voice_activity(path)
        features = audio.clip_mfcc(path, params)
    except (media.MediaError, FileNotFoundError, ValueError) as error:
        return _unavailable(str(error))
    details: dict = {
        "feature_seconds": time.perf_counter() - start,
        "normalisation": info["normalisation"],
        "voice_seconds": round(activity.seconds, 2),
    }
    if info["normalisation"] == "speaker":

        def reference_of(other: Path) -> np.ndarray:
            return audio.cached_feature(
                other, lambda: audio.clip_mfcc(other, params), audio.mfcc_cache_params(params)
            )

        features = _speaker_normalised(features, path, reference_of, run_dir, details)
    mean, std = _load_normalisation(run_dir, info)
    network = model if model is not None else load_model(run_dir)
    start = time.perf_counter()
    probabilities = predict_probabilities(network, audio.apply_standardiser(features, mean, std)[None])[0]
    details["inference_seconds"] = time.perf_counter() - start
    return {"available": True, "reason": None, "probabilities": probabilities.tolist(), "details": details}


def _predict_file_sklearn(run_dir: Path, info: dict, path: Path, model=None) -> dict:
    """:func:`predict_file` for a scikit-learn run on clip vectors (utterance statistics or Whisper)."""
    import time

    from mer_utils import media, voice

    kind, features = info["feature_kind"], info["features"]
    _check_encoder(kind, features, run_dir)
    start = time.perf_counter()
    try:
        activity = voice.clip_voice_activity(path)
        vector = _clip_vector(kind, features, path)
    except (media.MediaError, FileNotFoundError, ValueError) as error:
        return _unavailable(str(error))
    details: dict = {
        "feature_seconds": time.perf_counter() - start,
        "normalisation": info["normalisation"],
        "voice_seconds": round(activity.seconds, 2),
    }
    if info["normalisation"] == "speaker":
        vector = _speaker_normalised(
            vector, path, lambda other: _clip_vector(kind, features, other, cached=True), run_dir, details
        )
        if vector is None:
            return _unavailable(LONE_CLIP_REASON.format(run=run_dir), details)
    pipeline = model if model is not None else load_model(run_dir)
    start = time.perf_counter()
    probabilities = sklearn_probabilities(pipeline, vector[None], info["labels"])[0]
    details["inference_seconds"] = time.perf_counter() - start
    return {"available": True, "reason": None, "probabilities": probabilities.tolist(), "details": details}
