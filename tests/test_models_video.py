"""Tests of the video model (ResNet50 builder, two-phase training, clip aggregation) and the video pipeline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mer_utils.models import video as video_model
from mer_utils.pipelines import base

# The smallest input ResNet50 accepts keeps the TensorFlow tests within seconds.
TINY_SIZE = 32


def test_clip_probabilities_are_the_mean_of_frame_probabilities():
    frames = np.array([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9], [0.3, 0.7]])
    owners = [0, 0, 2, 2]
    clips = video_model.clip_probabilities(frames, owners, num_clips=3)
    np.testing.assert_allclose(clips[0], [0.6, 0.4])
    np.testing.assert_allclose(clips[2], [0.2, 0.8])
    assert np.isnan(clips[1]).all()  # a clip with no frame gets no prediction
    with pytest.raises(ValueError, match="one clip index per frame"):
        video_model.clip_probabilities(frames, [0, 1], num_clips=2)


@pytest.mark.slow
def test_build_video_model_shapes_and_checks():
    model = video_model.build_video_model(weights=None, input_size=TINY_SIZE, num_classes=8)
    assert model.input_shape == (None, TINY_SIZE, TINY_SIZE, 3)
    assert model.output_shape == (None, 8)
    probabilities = model.predict(np.zeros((2, TINY_SIZE, TINY_SIZE, 3), np.float32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert video_model.backbone_of(model).name == video_model.BACKBONE_NAME
    # From scratch, each image is standardised: a lighting change (gain and offset) changes nothing.
    plain = video_model.build_video_model(weights=None, input_size=TINY_SIZE, augment=False)
    faces = np.random.default_rng(0).normal(0, 40, (2, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(
        plain.predict(faces, verbose=0), plain.predict(1.3 * faces + 20, verbose=0), rtol=1e-3, atol=1e-5
    )
    unstandardised = video_model.build_video_model(weights=None, input_size=TINY_SIZE, standardize=False)
    assert "standardize" in [layer.name for layer in plain.layers]
    assert "standardize" not in [layer.name for layer in unstandardised.layers]
    with pytest.raises(ValueError, match="input_size >= 32"):
        video_model.build_video_model(weights=None, input_size=16)
    with pytest.raises(ValueError, match="weights"):
        video_model.build_video_model(weights="vggface")


def test_imagenet_weights_unavailable_fail_fast_with_a_clear_message(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: Name or service not known")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(video_model.PretrainedWeightsError, match=r"weights=None") as caught:
        video_model.build_video_model(weights="imagenet", input_size=TINY_SIZE)
    message = str(caught.value)
    assert "ImageNet" in message and "URL fetch failure" in message and "resnet50-scratch" in message
    assert isinstance(caught.value, ValueError)  # so `mer train` prints it as a one-line error


def _colour_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed 'faces' whose class is their colour: a task any network learns in a few steps."""
    from mer_utils.faces import preprocess_faces

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, TINY_SIZE, TINY_SIZE, 3)).astype(np.uint8)
    images[y == 0, ..., 0] += 180
    images[y == 1, ..., 2] += 180
    return preprocess_faces(images), y


@pytest.mark.slow
def test_two_phase_fine_tuning_freezes_then_unfreezes_the_top_stage():
    from mer_utils.config import set_seed

    set_seed(0)
    x, y = _colour_faces(32)
    model = video_model.build_video_model(weights=None, input_size=TINY_SIZE, num_classes=2, augment=False)
    backbone = video_model.backbone_of(model)
    stem, top = backbone.get_layer("conv1_conv"), backbone.get_layer("conv5_block3_3_conv")
    top_bn = backbone.get_layer("conv5_block3_3_bn")
    before = {layer.name: layer.get_weights()[0].copy() for layer in (stem, top, top_bn)}
    # pretrained=True runs the ImageNet recipe (here on random weights, to test the mechanics).
    result = video_model.train_video_model(
        model, x, y, x, y, pretrained=True, frozen_epochs=1, fine_tune_epochs=1, batch_size=16, patience=5
    )
    assert [p["backbone"] for p in result.phases] == ["frozen", "top"]
    assert result.phases[0]["trainable_backbone_layers"] == 0
    assert 0 < result.phases[1]["trainable_backbone_layers"] < 20
    assert len(result.history["loss"]) == 2 and result.phases[1]["first_epoch"] == 2
    np.testing.assert_array_equal(stem.get_weights()[0], before["conv1_conv"])  # never unfrozen
    np.testing.assert_array_equal(top_bn.get_weights()[0], before["conv5_block3_3_bn"])  # BN stays frozen
    assert not np.allclose(top.get_weights()[0], before["conv5_block3_3_conv"])  # fine-tuned in phase 2


@pytest.mark.slow
def test_from_scratch_training_learns_and_clips_average_frames():
    from mer_utils.config import set_seed

    set_seed(0)
    x, y = _colour_faces(64)
    model = video_model.build_video_model(weights=None, input_size=TINY_SIZE, num_classes=2, seed=0)
    result = video_model.train_video_model(
        model, x, y, pretrained=False, frozen_epochs=4, fine_tune_epochs=0, learning_rate=1e-3, batch_size=16
    )
    assert [p["backbone"] for p in result.phases] == ["all"]
    assert result.history["loss"][-1] < result.history["loss"][0]
    clips = [x[:3], x[3:4], x[4:8]]
    by_clip = video_model.predict_clip_probabilities(model, clips)
    frames = model.predict(x[:8], verbose=0)
    np.testing.assert_allclose(by_clip[0], frames[:3].mean(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(by_clip[2], frames[4:8].mean(axis=0), rtol=1e-4, atol=1e-6)
    empty = video_model.predict_clip_probabilities(model, [x[:2], x[:0]])
    assert np.isnan(empty[1]).all() and np.isfinite(empty[0]).all()


# --- pipeline (train -> run folder -> evaluate / predict_table / predict_file) ----------------


@pytest.fixture(scope="module")
def video_run(demo_dir, tmp_path_factory):
    """A tiny smoke run on the 4-actor demo set: 8 clips per actor, 2 frames, 2 epochs at 32 pixels."""

    cache = tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("MER_CACHE_DIR", str(cache))
    out = tmp_path_factory.mktemp("runs") / "video"
    metrics = base.train(
        "video", demo_dir, out, smoke=True, progress=False, num_frames=2, clips_per_actor=8, frozen_epochs=2
    )
    yield out, metrics
    patch.undo()


@pytest.mark.slow
def test_train_writes_the_run_folder_contract(video_run):
    from mer_utils.config import RAVDESS_EMOTIONS
    from mer_utils.runs import read_predictions, read_run_info

    out, metrics = video_run
    for name in ("model.keras", "run.json", "metrics.json", "predictions_val.csv", "predictions_test.csv"):
        assert (out / name).is_file(), name
    for key in (
        "accuracy",
        "macro_f1",
        "macro_precision",
        "macro_recall",
        "weighted_f1",
        "n",
        "per_class",
        "split",
        "val",
        "skipped",
        "seed",
    ):
        assert key in metrics, key
    assert json.loads((out / "metrics.json").read_text())["n"] == metrics["n"] == 8  # 1 test actor x 8 clips
    info = read_run_info(out)
    assert info["branch"] == "video" and info["weights"] is None and info["faces"]["size"] == TINY_SIZE
    split = metrics["split"]
    assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
    table = read_predictions(out, "test")
    assert list(table.columns[:4]) == ["clip_id", "path", "true_label", "pred_label"]
    assert [c[5:] for c in table.columns if c.startswith("prob_")] == list(RAVDESS_EMOTIONS)
    # clip_id is the take id (file name without the modality field) so fusion aligns branches.
    assert all(len(c.split("-")) == 6 for c in table["clip_id"])
    np.testing.assert_allclose(table.filter(like="prob_").sum(axis=1), 1.0, rtol=1e-5)
    assert set(table["true_label"]) <= set(RAVDESS_EMOTIONS)


@pytest.mark.slow
def test_evaluate_scores_every_clip_of_another_folder(video_run, demo_dir, tmp_path):
    import shutil

    out, _ = video_run
    folder = tmp_path / "other"
    folder.mkdir()
    for source in sorted((demo_dir / "Actor_02").glob("*.mp4"))[:5]:
        shutil.copy(source, folder)
    (folder / "03-01-01-01-01-01-02.wav").write_bytes(b"RIFF broken")  # audio-only: not a video clip
    corrupt = folder / "01-01-08-02-02-02-02.mp4"  # repetition 02: a take of its own
    corrupt.write_bytes(b"corrupt")
    metrics = base.evaluate(out, folder)
    assert metrics["n"] == 5
    assert [s["path"] for s in metrics["skipped"]] == [str(corrupt)]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "macro_f1" in metrics


@pytest.mark.slow
def test_predict_table_occlusion_drops_frames(video_run, demo_dir):
    from mer_utils.ravdess import index_dataset

    out, _ = video_run
    index = index_dataset(demo_dir)
    index = index[index["actor"] == 4].head(3)
    model = base.load_model(out)
    clean = base.predict_table(out, index, model=model)
    assert len(clean) == 3 and clean.attrs["skipped"] == []
    half = base.predict_table(out, index, model=model, degradation=("occlusion", 0.5))
    assert np.isfinite(half.filter(like="prob_").to_numpy()).all()
    again = base.predict_table(out, index, model=model, degradation=("occlusion", 0.5))
    pd.testing.assert_frame_equal(half, again)  # the same frames are hidden for the same seed
    hidden = base.predict_table(out, index, model=model, degradation=("occlusion", 1.0))
    assert hidden.filter(like="prob_").isna().all().all() and (hidden["pred_label"] == "").all()
    assert len(hidden.attrs["skipped"]) == 3
    with pytest.raises(ValueError, match="occlusion"):
        base.predict_table(out, index, model=model, degradation=("occlusion", 1.5))


@pytest.mark.slow
def test_predict_file_on_a_clip_a_wav_and_a_faceless_video(video_run, demo_dir, tmp_path):
    from mer_utils.config import RAVDESS_EMOTIONS
    from mer_utils.media import write_mp4, write_wav

    out, _ = video_run
    model = base.load_model(out)
    clip = next(iter(sorted((demo_dir / "Actor_01").glob("*.mp4"))))
    result = base.predict_file(out, clip, model=model)
    assert result["available"] and result["reason"] is None
    assert len(result["probabilities"]) == 8 and abs(sum(result["probabilities"]) - 1) < 1e-5
    assert result["details"]["fallback_share"] == 0.0  # MTCNN finds the demo face
    # Each detected face's frame record and its crop (for the page; not JSON) come with the answer.
    frames, crops = result["details"]["face_frames"], result[base.ARRAYS_KEY]["face_crops"]
    assert len(frames) == len(crops) == result["details"]["frames_with_face"] > 0
    assert all(f["label"] == RAVDESS_EMOTIONS[int(np.argmax(f["probabilities"]))] for f in frames)
    seconds = [f["seconds"] for f in frames]
    assert seconds == sorted(seconds) and crops.dtype == np.uint8
    wav = write_wav(tmp_path / "voice.wav", np.zeros(4000, np.float32), 16000)
    sound_only = base.predict_file(out, wav, model=model)
    assert not sound_only["available"] and "no video stream" in sound_only["reason"]
    faceless = write_mp4(tmp_path / "grey.mp4", np.full((6, 64, 64, 3), 120, np.uint8), fps=6)
    # The centre crop of training is not a face at prediction time: no face, no video answer.
    wall = base.predict_file(out, faceless, model=model)
    assert not wall["available"] and "no face found" in wall["reason"]
    assert wall["details"]["frames_with_face"] == 0
    assert not base.predict_file(out, tmp_path / "nope.mp4", model=model)["available"]


@pytest.mark.slow
def test_train_without_imagenet_weights_fails_before_extracting_faces(demo_dir, tmp_path, monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(video_model.PretrainedWeightsError, match="resnet50-scratch"):
        base.train("video", demo_dir, tmp_path / "run", model="resnet50", progress=False)
    assert not (tmp_path / "cache").exists()  # failed fast: no face was extracted
    with pytest.raises(ValueError, match="unknown video model"):
        base.train("video", demo_dir, tmp_path / "run", model="vgg16", progress=False)


def test_video_choose_names_the_model_and_takes_the_face_runs_input_size():
    from mer_utils.default_runs import default_run
    from mer_utils.pipelines import video

    smoke = base.settings_for("video", smoke=True)
    # Smoke runs default to the from-scratch network (offline); full runs to the registry's default.
    assert video.choose(None, smoke, True) == ("resnet50-scratch", smoke)
    assert video.choose(None, video.FULL, False)[0] == "resnet50"
    face_run = default_run("faces")
    chosen = base.settings_for("video", smoke=True, init=face_run, test_actors=[1], val_actors=[2])
    assert chosen.init == str(face_run) and chosen.test_actors == (1,) and chosen.val_actors == (2,)
    name, settings = video.choose(None, chosen, True)
    face_info = base.run_info(face_run)
    assert name == f"init:{face_info['model']}"
    assert settings.input_size == face_info["input_size"] != smoke.input_size
    with pytest.raises(ValueError, match="either --model or --init"):
        video.choose("resnet50", chosen, True)
    with pytest.raises(ValueError, match="unknown video model 'vgg16'"):
        video.choose("vgg16", smoke, True)
