"""``mer train audio`` / ``mer evaluate``: speech emotion models on RAVDESS, from MFCCs and utterance statistics.

Two families share the split, the run folder and the prediction functions: Keras models on MFCC
sequences (cnn, lstm, bilstm, attention, their average ``ensemble``, ``stats``), and scikit-learn
models on one vector per clip, saved as ``model.skops``: ``whisper`` (the default: logistic
regression on frozen Whisper-encoder embeddings, :mod:`mer_utils.whisper_encoder`), and ``logreg``
and ``svm`` on hand-made utterance statistics (:func:`mer_utils.utterance.utterance_features`).

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

The scikit-learn path lives in :mod:`mer_utils.pipelines.audio_vectors`, the parts both paths share
in :mod:`mer_utils.pipelines.audio_common`; the run folder follows :mod:`mer_utils.pipelines.base`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils import audio
from mer_utils import speakers as speakers_module
from mer_utils.audio_augment import AudioAugmentation, spec_augment
from mer_utils.branches import get_branch
from mer_utils.config import DEFAULT_SEED, RAVDESS_EMOTIONS
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
    rows_table,
    split_tables,
    timed_answer,
    write_audio_run,
)
from mer_utils.pipelines.audio_vectors import (
    SKLEARN_MODELS,
    _is_sklearn_run,
    file_prediction_sklearn,
    fit_sklearn,
    vector_table,
)
from mer_utils.pipelines.base import Settings

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
    the scikit-learn models ``normalisation`` only)."""

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


def train(
    data: str | Path,
    out: str | Path,
    settings: AudioSettings | None = None,
    *,
    seed: int = DEFAULT_SEED,
    smoke: bool = False,
    model: str | None = None,
    test_actors: list[int] | None = None,
    val_actors: list[int] | None = None,
    params: audio.MfccParams | None = None,
    progress: bool = True,
    **overrides,
) -> dict:
    """Train one MFCC model on a RAVDESS folder and write the run folder; return the test metrics.

    ``model`` is cnn, lstm, bilstm, attention, ensemble (all four trained, their probabilities
    averaged in one saved model), or logreg / svm / whisper (scikit-learn on clip vectors, see
    :func:`mer_utils.pipelines.audio_vectors.fit_sklearn`); the default is :data:`DEFAULT_MODEL`. ``smoke``
    shrinks epochs, width and augmentation for CI (``settings`` default to SMOKE or FULL,
    :class:`AudioSettings`; ``overrides`` replace single fields, None meaning the default, e.g.
    ``epochs=5``, ``normalisation="global"``). The split is ``actor_disjoint_split(seed)`` unless
    ``test_actors`` / ``val_actors`` fix it.
    """
    import keras

    from mer_utils.config import set_seed
    from mer_utils.models.audio import BUILDERS, SEQUENCE_MODELS, build_model
    from mer_utils.pipelines.out_of_fold import network_reason
    from mer_utils.ravdess import actor_disjoint_split
    from mer_utils.runs import save_model
    from mer_utils.training import count_parameters, encode_labels, fit_classifier, predict_probabilities

    name = model or DEFAULT_MODEL
    known = [*BUILDERS, ENSEMBLE_MODEL, *SKLEARN_MODELS]
    if name not in known:
        raise ValueError(f"unknown audio model {name!r}; expected one of {known}")
    settings = base.settings_for(
        BRANCH, smoke, settings, **{key: value for key, value in overrides.items() if value is not None}
    )
    normalisation = settings.normalisation
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; expected one of {NORMALISATIONS}")
    if name in SKLEARN_MODELS:
        fitted = fit_sklearn(
            data, out, name, seed, smoke, test_actors, val_actors, normalisation, progress=progress
        )
        fitted["info"] = {**fitted.get("info", {}), "settings": asdict(settings)}
        return write_audio_run(out, name, seed, smoke, data, **fitted)
    params = params or audio.MfccParams()
    epochs = settings.epochs
    copies = settings.augmented_copies
    ensemble_size = settings.ensemble_size
    width = settings.width
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
                batch_size=settings.batch_size,
                learning_rate=settings.learning_rate,
                patience=settings.patience,
                verbose=2 if progress else 0,
            )
        )
        members.append(network)
    network = _ensemble(members)
    save_model(out, network, "keras")
    _save_normalisation(out, mean, std)
    if population is not None:
        speakers_module.save_population(out, *population)
    inputs = {"val": x_val, "test": x_test}
    tables = split_tables(rows, parts, labels, lambda split: predict_probabilities(network, inputs[split]))
    metrics = write_audio_run(
        out,
        name,
        seed,
        smoke,
        data,
        rows=rows,
        parts=parts,
        tables=tables,
        skipped=skipped,
        # The first member's curves are the model's (notebook 03 plots them); every member's follow.
        history=fits[0].history,
        members=[f.history for f in fits],
        out_of_fold_reason=network_reason(sum(f.seconds for f in fits)),
        extra_model_files=(NORMALISATION_FILE,) + _population_files(population),
        info={
            "features": params.to_dict(),
            "speaker_population_file": speakers_module.POPULATION_FILE if population is not None else None,
            "num_frames": int(x_train.shape[1]),
            "num_features": int(x_train.shape[2]),
            "normalisation": normalisation,
            "normalisation_file": NORMALISATION_FILE,
            "augmented_copies": copies,
            "spec_augment": FEATURE_MASKS if copies > 0 else None,
            "ensemble_size": ensemble_size,
            "members": member_names,
            "width": width,
            "settings": asdict(settings),
        },
        metrics={
            "params": count_parameters(network),
            "train_seconds": float(sum(f.seconds for f in fits)),
            "epochs": int(sum(f.epochs for f in fits)),
            "train_samples": int(len(x_train)),
            "normalisation": normalisation,
        },
    )
    keras.backend.clear_session()
    return metrics


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
    """The actors scored by ``mer evaluate``."""
    return {"actors": sorted({int(Path(p).stem.split("-")[-1]) for p in table["path"]})}


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
