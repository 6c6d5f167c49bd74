"""Tests for the spectrogram branch: ResNet18 builder, spectrogram images, pipeline end to end."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from mer_utils.models.spectrogram import (
    RESNET18_BLOCKS,
    PretrainedWeightsError,
    build_resnet18,
)
from mer_utils.pipelines import base


def _band_images(count: int, num_classes: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose class is the frequency band (row band) that holds the energy."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=count)
    images = rng.uniform(0, 80, size=(count, size, size, 1))
    band = size // num_classes
    for i, label in enumerate(labels):
        images[i, label * band : (label + 1) * band] += 150
    images = np.repeat(np.clip(images, 0, 255), 3, axis=-1).astype("float32")
    return images, labels


def test_resnet18_width64_has_resnet18_shape_and_size():
    model = build_resnet18(input_shape=(128, 128, 3), num_classes=8, width=64)
    assert model.output_shape == (None, 8)
    # ResNet18 with an 8-way head: 11.18 M parameters (11.69 M with the 1000-way ImageNet head).
    assert 10.5e6 < model.count_params() < 11.8e6
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    # 1 stem conv + 2 per basic block + 3 projection shortcuts = 17 convs (+ the dense layer = 18).
    assert len(convs) == 1 + 2 * sum(RESNET18_BLOCKS) + 3
    assert max(int(c.filters) for c in convs) == 512


def test_width_scales_parameters_quadratically():
    small = build_resnet18(input_shape=(64, 64, 3), num_classes=4, width=16).count_params()
    medium = build_resnet18(input_shape=(64, 64, 3), num_classes=4, width=32).count_params()
    assert 3.5 < medium / small < 4.2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weights": "places365"},
        {"input_shape": (64, 64, 1)},
        {"input_shape": (16, 16, 3)},
        {"num_classes": 1},
        {"width": 0},
        {"dropout": 1.0},
        {"weights": "imagenet", "width": 16},
    ],
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        build_resnet18(**kwargs)


def test_imagenet_weights_without_keras_hub_fail_fast_and_clearly(monkeypatch):
    import time

    # None in sys.modules makes `import keras_hub` raise ImportError, installed or not.
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match=r"weights=None") as caught:
        build_resnet18(weights="imagenet")
    assert time.perf_counter() - start < 5
    assert "keras_hub is not installed" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_imagenet_weights_download_failure_is_reported(monkeypatch):
    def offline_preset(*args, **kwargs):
        raise OSError("URL fetch failure: Name or service not known")

    fake = types.ModuleType("keras_hub")
    fake.models = types.SimpleNamespace(ResNetBackbone=types.SimpleNamespace(from_preset=offline_preset))
    monkeypatch.setitem(sys.modules, "keras_hub", fake)
    with pytest.raises(PretrainedWeightsError, match=r"resnet_18_imagenet.*weights=None|weights=None"):
        build_resnet18(weights="imagenet")
    with pytest.raises(PretrainedWeightsError, match="URL fetch failure"):
        build_resnet18(weights="imagenet")


@pytest.mark.slow
def test_tiny_resnet18_learns_separable_images():
    from mer_utils.config import set_seed
    from mer_utils.training import fit_classifier, predict_probabilities

    set_seed(0)
    x_train, y_train = _band_images(96, 4, 32, seed=1)
    x_test, y_test = _band_images(48, 4, 32, seed=2)
    model = build_resnet18(input_shape=(32, 32, 3), num_classes=4, width=8, dropout=0.1)
    result = fit_classifier(model, x_train, y_train, epochs=12, batch_size=16, learning_rate=3e-3)
    assert result.history["loss"][-1] < result.history["loss"][0]
    accuracy = float((predict_probabilities(model, x_test).argmax(axis=1) == y_test).mean())
    # Chance is 0.25; a ResNet that learns finds the band easily.
    assert accuracy > 0.6, accuracy


# --- spectrogram images ---------------------------------------------------------------------


def test_spectrogram_image_shape_dtype_range_and_orientation():
    from mer_utils.spectrograms import spectrogram_image

    log_mel = np.full((128, 188), -80.0, dtype=np.float32)
    log_mel[:10] = 0.0  # energy in the lowest mel bands only
    image = spectrogram_image(log_mel, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.min() == 0 and image.max() == 255
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    # Low frequencies are drawn at the bottom, as in every spectrogram plot.
    assert image[-2:, :, 0].mean() == 255 and image[:10, :, 0].mean() == 0
    assert spectrogram_image(log_mel, (32, 48)).shape == (32, 48, 3)


def test_spectrogram_image_normalises_each_image_and_handles_silence():
    from mer_utils.spectrograms import spectrogram_image

    rng = np.random.default_rng(0)
    log_mel = rng.uniform(-60, -20, size=(64, 100)).astype(np.float32)
    quiet = spectrogram_image(log_mel - 15, 32)
    loud = spectrogram_image(log_mel, 32)
    # A level change in dB is removed by the per-image normalisation.
    assert np.abs(quiet.astype(int) - loud.astype(int)).max() <= 1
    silent = spectrogram_image(np.full((64, 100), -80.0), 32)
    assert silent.max() == 0


@pytest.mark.parametrize("bad", [np.zeros(10), np.zeros((1, 50)), np.array([[0.0, np.nan], [1.0, 2.0]])])
def test_spectrogram_image_rejects_bad_input(bad):
    from mer_utils.spectrograms import spectrogram_image

    with pytest.raises(ValueError):
        spectrogram_image(bad, 32)


def test_save_spectrogram_pngs_round_trip(tmp_path):
    import cv2

    from mer_utils.spectrograms import save_spectrogram_pngs, spectrogram_images

    rng = np.random.default_rng(1)
    images = spectrogram_images(rng.uniform(-80, 0, size=(2, 32, 40)), 32)
    paths = save_spectrogram_pngs(images, ["angry", "sad"], tmp_path / "pngs")
    assert [p.name for p in paths] == ["angry.png", "sad.png"]
    read_back = cv2.imread(str(paths[0]))[:, :, ::-1]
    assert np.array_equal(read_back, images[0])
    with pytest.raises(ValueError, match="names"):
        save_spectrogram_pngs(images, ["one"], tmp_path)


# --- pipeline end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_folder(request, tmp_path_factory):
    """The session's 4-actor demo set from conftest when there is one, else our own."""
    try:
        return request.getfixturevalue("demo_dir")
    except pytest.FixtureLookupError:
        from mer_utils.demo import make_demo_dataset

        folder = tmp_path_factory.mktemp("spectrogram_demo")
        make_demo_dataset(folder, actors=4)
        return folder


@pytest.mark.slow
def test_train_evaluate_predict_on_demo(demo_folder, tmp_path, monkeypatch):
    import json

    from mer_utils.config import RAVDESS_EMOTIONS
    from mer_utils.media import write_mp4
    from mer_utils.runs import read_predictions, read_run_info

    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    metrics = base.train(
        "spectrogram",
        demo_folder,
        run,
        seed=3,
        smoke=True,
        test_actors=[1],
        val_actors=[2],
        epochs=6,
        progress=False,
    )
    for name in ("model.keras", "run.json", "metrics.json", "predictions_val.csv", "predictions_test.csv"):
        assert (run / name).is_file(), name
    info = read_run_info(run)
    assert info["branch"] == "spectrogram" and info["labels"] == list(RAVDESS_EMOTIONS)
    assert info["split"] == {"train": [3, 4], "val": [2], "test": [1]}
    assert info["image_size"] == 64 and info["n_mels"] == 128
    # run.json "settings": the smoke settings with the overrides, the augmentation spelled out.
    assert info["settings"]["epochs"] == 6 and info["settings"]["image_size"] == 64
    assert info["settings"]["test_actors"] == [1] and info["settings"]["val_actors"] == [2]
    assert info["settings"]["augmentation"] == info["augmentation"]
    assert info["augmentation"]["max_semitones"] == 0.0
    stored = json.loads((run / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "per_class", "n"):
        assert key in stored
    assert stored["n"] == 30 and stored["val"]["n"] == 30
    test_table = read_predictions(run, "test")
    # clip_id is the take id (file name without the modality field) so fusion can align branches.
    assert test_table["clip_id"].str.fullmatch(r"01-\d\d-\d\d-\d\d-\d\d-01").all()
    probabilities = test_table.filter(like="prob_").to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert metrics["accuracy"] == pytest.approx(stored["accuracy"])

    evaluated = base.evaluate(run, demo_folder)
    assert evaluated["n"] == 120 and evaluated["actors"] == [1, 2, 3, 4]
    # The model saw actors 3 and 4: it must be right on clearly more than chance of all clips.
    assert evaluated["accuracy"] > 1.5 / 8

    noisy = base.predict_table(run, demo_folder / "Actor_01", degradation=("noise", 0.0))
    assert len(noisy) == 30 and not np.allclose(noisy.filter(like="prob_").to_numpy(), probabilities)

    model = base.load_model(run)
    clip = sorted((demo_folder / "Actor_01").glob("*.mp4"))[0]
    result = base.predict_file(run, clip, model=model)
    assert result["available"] and len(result["probabilities"]) == 8
    row = test_table.set_index("path").loc[str(clip)]
    assert np.allclose(result["probabilities"], row.filter(like="prob_").to_numpy(dtype=float), atol=1e-4)

    silent_video = tmp_path / "01-01-01-01-01-01-01.mp4"
    write_mp4(silent_video, np.zeros((6, 32, 32, 3), dtype=np.uint8), fps=6)
    missing = base.predict_file(run, silent_video, model=model)
    assert not missing["available"] and "audio" in missing["reason"].lower()


def test_speaker_normalisation_removes_each_speakers_spectral_colour():
    from mer_utils.spectrograms import SpectrogramParams, render_images, speaker_mean_spectra

    rng = np.random.default_rng(2)
    content = rng.uniform(-55, -10, size=(4, 32, 50)).astype(np.float32)
    content[:, :, :5] = -80.0  # padding / silence at the floor
    tilt = np.linspace(0, -20, 32, dtype=np.float32)[None, :, None]  # speaker B: darker highs
    log_mels = np.concatenate([content, np.where(content > -79.5, content + tilt, -80.0)])
    speakers = [1] * 4 + [2] * 4
    means = speaker_mean_spectra(log_mels, speakers, db_range=80.0)
    assert np.allclose(means[1] - means[2], -tilt[0, :, 0], atol=1e-3)
    plain = render_images(log_mels, speakers, SpectrogramParams(image_size=32))
    normalised = render_images(log_mels, speakers, SpectrogramParams(image_size=32, speaker_norm=True))
    # Without normalisation the two speakers' images differ; with it they match (up to rounding).
    assert np.abs(plain[:4].astype(int) - plain[4:].astype(int)).max() > 20
    assert np.abs(normalised[:4].astype(int) - normalised[4:].astype(int)).max() <= 2
    # Silence stays the darkest value.
    assert (normalised[:, :, :3, 0] == 0).all()
    with pytest.raises(ValueError):
        speaker_mean_spectra(log_mels, [1, 2], db_range=80.0)


def test_train_with_imagenet_variant_fails_before_feature_extraction(tmp_path, monkeypatch):
    from mer_utils.media import write_wav
    from mer_utils.pipelines import spectrogram

    monkeypatch.setitem(sys.modules, "keras_hub", None)
    for actor in (1, 2, 3):
        tone = np.sin(np.linspace(0, 400 * np.pi, 16_000)).astype(np.float32) * 0.3
        write_wav(
            tmp_path / "data" / f"Actor_{actor:02d}" / f"03-01-05-01-01-01-{actor:02d}.wav", tone, 16_000
        )
    called = []
    monkeypatch.setattr(spectrogram, "log_mel_batch", lambda *args, **kwargs: called.append(1))
    with pytest.raises(PretrainedWeightsError, match="weights=None"):
        base.train(
            "spectrogram", tmp_path / "data", tmp_path / "run", model="resnet18_imagenet", progress=False
        )
    assert not called and not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="unknown spectrogram model"):
        base.train("spectrogram", tmp_path / "data", tmp_path / "run", model="vgg", progress=False)


def test_spectrogram_settings_are_checked_and_give_the_image_parameters():
    from mer_utils.audio_augment import AudioAugmentation
    from mer_utils.pipelines import spectrogram

    smoke = base.settings_for("spectrogram", smoke=True)
    assert (
        smoke is spectrogram.SMOKE
        and smoke.image_size == 64
        and smoke.image_size < spectrogram.FULL.image_size
    )
    assert smoke.augmentation.max_semitones == 0 and spectrogram.FULL.augmentation.max_semitones > 0
    chosen = base.settings_for(
        "spectrogram", test_actors=[4, 1], image_size=96, augmentation={"max_semitones": 1}
    )
    # Lists become tuples and a dict the frozen augmentation: settings stay hashable.
    assert chosen.test_actors == (4, 1) and chosen.val_actors is None and hash(chosen)
    assert chosen.augmentation == AudioAugmentation(max_semitones=1)
    assert spectrogram.image_params(chosen, "resnet18").image_size == 96
    assert spectrogram.image_params(chosen, "resnet18_speaker_norm").speaker_norm
    assert not spectrogram.image_params(chosen, "resnet18").speaker_norm
    # Notebook 04's triple: image parameters, settings and the augmentation as a dict.
    params, settings, augmentation = spectrogram.settings_for(True, {"width": 8})
    assert params.image_size == 64 and settings.width == 8 and augmentation["max_shift_seconds"] == 0.2
    with pytest.raises(ValueError, match="'image_size' = 2 is outside"):
        base.settings_for("spectrogram", image_size=2)
    with pytest.raises(ValueError, match=r"unknown spectrogram settings \['n_mel'\]"):
        spectrogram.settings_for(False, {"n_mel": 64})
    with pytest.raises(ValueError, match="augmentation must be an AudioAugmentation"):
        spectrogram.SpectrogramSettings(augmentation="strong")
