"""Spectrogram branch: log-mel spectrograms rendered as images, classified by a Keras ResNet18.

One clip -> load, trim silence, fix the duration (:mod:`mer_utils.audio`) -> log-mel
spectrogram in dB -> image: dB normalised per image to 0-255, low frequencies at the bottom,
resized to ``image_size`` x ``image_size``, grey copied to 3 channels (the layout ImageNet
networks expect) -> :func:`mer_utils.models.spectrogram.build_resnet18`.

Training is ``base.train("spectrogram", data, out, settings)`` (``mer train spectrogram``) calling
this module's hooks with :class:`SpectrogramSettings` (``FULL`` / ``SMOKE``): ``index`` reads one or
more corpus sources (:mod:`mer_utils.corpora`) and keeps one file per take (audio-video mp4 first,
then audio-only wav), ``split`` splits by speaker inside each corpus with
:func:`mer_utils.corpora.speaker_disjoint_split` (default 12/3/3 actors for 18, 4/2/2 for 8; or the
settings' ``test_actors`` / ``val_actors``), ``features`` builds the network (missing ImageNet
weights fail first) and renders the images, augmenting the training split only: extra copies of
every training clip with waveform augmentation (noise, shift, pitch, stretch) plus SpecAugment
masks; ``fit`` trains with :func:`mer_utils.training.fit_classifier` and ``tables`` predicts the
val and test clips. The features live in :mod:`mer_utils.spectrograms` (cached under the audio cache).

The run folder follows the branch contract of :mod:`mer_utils.pipelines.base`: ``model.keras``,
``run.json`` (everything needed to rebuild the images), ``metrics.json``, ``history.json``,
``skipped.csv``, ``predictions_val.csv``, ``predictions_test.csv`` (clip_id = take id).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.audio_augment import AudioAugmentation
from mer_utils.branches import get_branch
from mer_utils.config import DEFAULT_SEED, RAVDESS_EMOTIONS
from mer_utils.pipelines import base
from mer_utils.pipelines.base import Fitted, Settings
from mer_utils.spectrograms import (
    SpectrogramParams,
    clip_log_mel,
    log_mel_batch,
    masked_copies,
    normalise_speakers,
    render_images,
    speaker_mean_spectra,
    spectrogram_images,
)

log = logging.getLogger(__name__)

# Branch name written to run.json (``mer evaluate`` dispatches on it).
BRANCH = "spectrogram"
# Model variants of ``mer train spectrogram --model``: initial weights and image options.
MODELS: dict[str, dict] = {
    # Random initialisation, per-image dB normalisation.
    "resnet18": {"weights": None},
    # The same plus per-speaker mean-spectrum normalisation (unlabelled clips of each actor).
    "resnet18_speaker_norm": {"weights": None, "speaker_norm": True},
    # ImageNet initialisation from the KerasHub preset (needs keras_hub and, once, internet).
    "resnet18_imagenet": {"weights": "imagenet"},
}
# Extra file of the run folder with the per-epoch training curves (format: pipelines.base).
HISTORY_FILE = "history.json"
# Waveform augmentation of the training copies of a full run.
FULL_AUGMENTATION = AudioAugmentation(
    noise_snr_db=(15.0, 35.0), max_shift_seconds=0.25, max_semitones=1.5, stretch_range=(0.92, 1.08)
)
# Smoke runs skip pitch shift and stretch (the slow librosa effects) and keep noise and shift.
SMOKE_AUGMENTATION = AudioAugmentation(
    noise_snr_db=(15.0, 35.0), max_shift_seconds=0.2, max_semitones=0.0, stretch_range=(1.0, 1.0)
)


@dataclass(frozen=True)
class SpectrogramSettings(Settings):
    """Image size, model size, augmentation, split and training schedule of one run (run.json ``"settings"``)."""

    # Filters of the first ResNet18 stage (64 = the real ResNet18; the ImageNet variant always uses 64).
    width: int = 32
    # Dropout before the softmax: high, because 700 clips of 12 speakers overfit within 10 epochs.
    dropout: float = 0.5
    # Epoch limit (early stopping on validation loss usually ends sooner).
    epochs: int = 40
    batch_size: int = 32
    # Adam step size: 1e-3 overfitted real RAVDESS (train 0.97, val 0.32 by epoch 12).
    learning_rate: float = 5e-4
    # Epochs without validation-loss improvement before stopping (best weights restored).
    patience: int = 8
    # Augmented copies of every training clip added to the originals.
    augmented_copies: int = 2
    # SpecAugment masks on the augmented copies (frequency bands and time spans).
    spec_augment: bool = True
    # Side of the square image fed to the network (pixels; SpectrogramParams.image_size).
    image_size: int = SpectrogramParams.image_size
    # Waveform augmentation of the augmented copies.
    augmentation: AudioAugmentation = FULL_AUGMENTATION
    # Actors of the test and val parts (None: drawn by actor_disjoint_split from the seed).
    test_actors: tuple[int, ...] | None = None
    val_actors: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.augmentation, Mapping):
            # A dict from a caller or run.json becomes the frozen augmentation.
            object.__setattr__(self, "augmentation", AudioAugmentation(**self.augmentation))
        if not isinstance(self.augmentation, AudioAugmentation):
            raise ValueError(
                f"{type(self).__name__}: augmentation must be an AudioAugmentation or a dict of its fields, "
                f"got {self.augmentation!r}"
            )


# The full run: ResNet18 at a quarter of the parameters trains in 10-20 min on 2 CPU cores.
FULL = SpectrogramSettings()
# Smoke runs (CI, demo data): a thin network on small images, still clearly above chance.
SMOKE = SpectrogramSettings(
    width=16,
    dropout=0.2,
    epochs=20,
    batch_size=16,
    learning_rate=2e-3,
    patience=6,
    augmented_copies=1,
    image_size=64,
    augmentation=SMOKE_AUGMENTATION,
)


# --- data -----------------------------------------------------------------------------------


def clip_index(data: str | Path | pd.DataFrame) -> pd.DataFrame:
    """One file with sound per take of corpus sources (or a given index): :func:`mer_utils.corpora.audio_index`."""
    from mer_utils.corpora import audio_index

    return audio_index(data)


def image_params(settings: SpectrogramSettings, model: str | None = None) -> SpectrogramParams:
    """The image parameters of a run: the settings' image size, speaker normalisation from the model variant."""
    variant = MODELS.get(model or get_branch(BRANCH).default_model, {})
    return SpectrogramParams(
        image_size=settings.image_size, speaker_norm=bool(variant.get("speaker_norm", False))
    )


def settings_for(
    smoke: bool = False, overrides: dict | None = None, model: str | None = None
) -> tuple[SpectrogramParams, SpectrogramSettings, dict]:
    """Image parameters, settings and waveform augmentation (a dict) of a full or smoke run of ``model``.

    ``overrides`` replace settings fields (:func:`mer_utils.pipelines.base.settings_for` checks them).
    """
    settings = base.settings_for(BRANCH, smoke, **(overrides or {}))
    return image_params(settings, model), settings, asdict(settings.augmentation)


# --- training: the hooks of base.train ----------------------------------------------------------


def index(data: str | Path | pd.DataFrame, settings: SpectrogramSettings) -> pd.DataFrame:
    """One clip with sound per take of ``data`` (a RAVDESS folder or index); skipped files in ``attrs["skipped"]``."""
    return clip_index(data)


def split(index: pd.DataFrame, settings: SpectrogramSettings, seed: int) -> pd.DataFrame:
    """Actor-disjoint train / val / test parts (12/3/3 actors for 18, 4/2/2 for 8), or the settings' actors.

    With both test and val actors fixed, every other actor trains (the default sizes assume a drawn split).
    """
    from mer_utils.corpora import speaker_disjoint_split

    test_actors, val_actors = settings.test_actors, settings.val_actors
    sizes = None
    if test_actors is not None and val_actors is not None:
        test_actors, val_actors = list(test_actors), list(val_actors)
        sizes = (
            index["actor"].nunique() - len(test_actors) - len(val_actors),
            len(val_actors),
            len(test_actors),
        )
    elif test_actors is not None or val_actors is not None:
        test_actors = list(test_actors) if test_actors is not None else None
        val_actors = list(val_actors) if val_actors is not None else None
    parts = speaker_disjoint_split(index, sizes, seed=seed, test_actors=test_actors, val_actors=val_actors)
    log.info("split actors %s", split_record(parts, {}))
    return parts


def split_record(index: pd.DataFrame, features: dict) -> dict:
    """run.json's ``split``: the actors of each part."""
    return {
        part: sorted(int(actor) for actor in index.loc[index["split"] == part, "actor"].unique())
        for part in ("train", "val", "test")
    }


def features(
    index: pd.DataFrame, settings: SpectrogramSettings, model: str, seed: int, progress: bool
) -> dict:
    """Spectrogram images of every part, augmented training copies, and the untrained network.

    The network is built first, so that missing ImageNet weights fail before minutes of features
    (:class:`mer_utils.models.PretrainedWeightsError`). Speaker statistics come from each actor's
    clean clips; every actor is in one part only.
    """
    from mer_utils.config import set_seed
    from mer_utils.models.spectrogram import RESNET18_WIDTH, build_resnet18
    from mer_utils.training import encode_labels

    weights = MODELS[model]["weights"]
    params = image_params(settings, model)
    augmentation = asdict(settings.augmentation)
    labels = list(RAVDESS_EMOTIONS)
    set_seed(seed, keras=True)
    width = RESNET18_WIDTH if weights == "imagenet" else settings.width
    network = build_resnet18(
        (params.image_size, params.image_size, 3),
        len(labels),
        weights=weights,
        width=width,
        dropout=settings.dropout,
    )

    batches, skipped = {}, []
    for part in ("train", "val", "test"):
        batch = log_mel_batch(index[index["split"] == part], params, seed=seed, progress=progress)
        skipped += batch.skipped
        batches[part] = batch
    means = None
    if params.speaker_norm:
        means = speaker_mean_spectra(
            np.concatenate([b.features for b in batches.values()]),
            np.concatenate([b.rows["actor"].to_numpy() for b in batches.values()]),
            params.db_range,
        )
    train_rows = batches["train"].rows
    train_images = [render_images(batches["train"].features, train_rows["actor"], params, means)]
    train_labels = [train_rows["emotion"].tolist()]
    for copy in range(1, settings.augmented_copies + 1):
        batch = log_mel_batch(
            train_rows, params, augmentation=augmentation, copy=copy, seed=seed, progress=progress
        )
        maps = batch.features
        if params.speaker_norm:
            maps = normalise_speakers(maps, batch.rows["actor"], means, params.db_range)
        if settings.spec_augment:
            maps = masked_copies(maps, seed + copy)
        train_images.append(spectrogram_images(maps, params.image_size))
        train_labels.append(batch.rows["emotion"].tolist())
    return {
        "network": network,
        "width": width,
        "params": params,
        "x_train": np.concatenate(train_images),
        "y_train": encode_labels(sum(train_labels, []), labels),
        "x_val": render_images(batches["val"].features, batches["val"].rows["actor"], params, means),
        "y_val": encode_labels(batches["val"].rows["emotion"], labels),
        "x_test": render_images(batches["test"].features, batches["test"].rows["actor"], params, means),
        "rows": {part: batches[part].rows for part in ("val", "test")},
        "skipped": skipped,
        "progress": progress,
    }


def fit(features: dict, settings: SpectrogramSettings, model: str, seed: int) -> Fitted:
    """Train the network with :func:`mer_utils.training.fit_classifier`, keeping the epoch of best validation accuracy."""
    from mer_utils.pipelines.out_of_fold import network_reason
    from mer_utils.training import best_validation_callback, count_parameters, fit_classifier

    network, params = features["network"], features["params"]
    best = best_validation_callback()
    result = fit_classifier(
        network,
        features["x_train"],
        features["y_train"],
        features["x_val"],
        features["y_val"],
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        patience=settings.patience,
        verbose=2 if features["progress"] else 0,
        callbacks=[best],
    )
    # Keep the epoch with the best validation accuracy: on unseen speakers the validation loss
    # bottoms out epochs before the accuracy peaks (the network grows overconfident first).
    if best.best_weights is not None:
        network.set_weights(best.best_weights)
    return Fitted(
        model=network,
        model_format="keras",
        history=result.history,
        info={"width": features["width"], **asdict(params), "augmentation": asdict(settings.augmentation)},
        metrics={
            "params": count_parameters(network),
            "train_seconds": round(result.seconds, 1),
            "epochs": result.epochs,
            "selected_epoch": best.best_epoch,
            "train_images": len(features["x_train"]),
            "width": features["width"],
            "image_size": params.image_size,
        },
        out_of_fold_reason=network_reason(result.seconds),
    )


def tables(fitted: Fitted, features: dict, settings: SpectrogramSettings, labels: list[str]) -> dict:
    """Val and test prediction tables (clip_id = take id)."""
    return {
        part: _table(fitted.model, features[f"x_{part}"], features["rows"][part], labels)
        for part in ("val", "test")
    }


def _table(network, images: np.ndarray, rows: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Prediction table of ``images`` (clip_id = take id, so audio and video rows align in fusion)."""
    from mer_utils.evaluation import prediction_table
    from mer_utils.pipelines.audio_common import with_corpus_columns
    from mer_utils.training import predict_probabilities

    probabilities = predict_probabilities(network, images) if len(images) else np.zeros((0, len(labels)))
    table = prediction_table(
        probabilities,
        labels,
        rows["take"].astype(str).tolist(),
        rows["emotion"].tolist(),
        rows["path"].astype(str).tolist(),
    )
    return with_corpus_columns(table, rows)


# --- saved runs: this branch's parts of the shared driver (mer_utils.pipelines.base) ---------


def _params_of(info: dict) -> SpectrogramParams:
    fields = SpectrogramParams.__dataclass_fields__
    return SpectrogramParams(**{k: info[k] for k in fields if k in info})


def table_of(run_dir: Path, info: dict, data, model, degradation, progress: bool) -> pd.DataFrame:
    """Prediction table of a loaded model on the clips of ``data``; "noise" degradation adds white noise."""
    params = _params_of(info)
    index = clip_index(data)
    noise = float(degradation.level) if degradation is not None else None
    batch = log_mel_batch(
        index, params, noise_snr_db=noise, seed=int(info.get("seed", DEFAULT_SEED)), progress=progress
    )
    # Per-speaker statistics (if the run uses them) come from the given clips of each actor.
    images = render_images(batch.features, batch.rows["actor"], params)
    table = _table(model, images, batch.rows, list(info["labels"]))
    table.attrs["skipped"] = list(index.attrs.get("skipped", [])) + batch.skipped
    return table


def evaluation_extras(info: dict, table: pd.DataFrame) -> dict:
    """The RAVDESS actors and the speakers scored by ``mer evaluate``."""
    from mer_utils.corpora import scored_speakers

    return scored_speakers(table)


def _reference_log_mels(path: Path, params: SpectrogramParams, seed: int) -> list[np.ndarray]:
    """Cached log-mels of the other clips of the file's RAVDESS actor in its folder."""
    from mer_utils.audio import cached_feature
    from mer_utils.media import MediaError
    from mer_utils.pipelines.audio_common import _reference_clips

    key = {"kind": "log_mel", **params.feature_key(), "noise_snr_db": None, "seed": seed}
    maps = []
    for other in _reference_clips(path):
        try:
            maps.append(cached_feature(other, lambda o=other: clip_log_mel(o, params, seed=seed), key))
        except (MediaError, FileNotFoundError, ValueError):
            continue
    return maps


def file_prediction(run_dir: Path, info: dict, path: Path, model) -> dict:
    """This branch's part of :func:`predict_file`: voice check, log-mel, image, model."""
    from mer_utils.media import MediaError
    from mer_utils.pipelines.base import unavailable
    from mer_utils.voice import clip_voice_activity

    params = _params_of(info)
    start = time.perf_counter()
    try:
        # No speech (silence, hiss, a 0.2 s clip): nothing for the model to read, say so.
        activity = clip_voice_activity(path, params.sr)
        log_mel = clip_log_mel(path, params, seed=int(info.get("seed", DEFAULT_SEED)))
    except (MediaError, FileNotFoundError, ValueError) as error:
        return unavailable(str(error), {"path": str(path)})
    feature_seconds = time.perf_counter() - start
    network = model if model is not None else base.load_model(run_dir, BRANCH)
    means, reference = None, 1
    if params.speaker_norm:
        # As in evaluation: the speaker's mean spectrum over their clips in the folder (RAVDESS
        # names); a clip without any is normalised with its own mean spectrum.
        maps = [log_mel] + _reference_log_mels(path, params, int(info.get("seed", DEFAULT_SEED)))
        reference = len(maps)
        means = speaker_mean_spectra(np.stack(maps), [0] * reference, params.db_range)
    image = render_images(log_mel[None], [0], params, means)
    start = time.perf_counter()
    probabilities = np.asarray(network(image.astype(np.float32), training=False))[0].astype(float)
    labels = list(info["labels"])
    return {
        "available": True,
        "reason": None,
        "probabilities": probabilities.tolist(),
        "details": {
            "path": str(path),
            "label": labels[int(probabilities.argmax())],
            "speaker_norm": (
                (f"{reference} clips of this speaker" if reference > 1 else "this clip only")
                if params.speaker_norm
                else None
            ),
            "voice_seconds": round(activity.seconds, 2),
            "voice_segments": [list(segment) for segment in activity.segments()],
            "feature_seconds": round(feature_seconds, 4),
            "model_seconds": round(time.perf_counter() - start, 4),
        },
    }
