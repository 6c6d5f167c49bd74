"""Faces branch: a tiny face model that really trains, its run folder, evaluate, predict and --init."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mer_utils.config import RAVDESS_EMOTIONS
from mer_utils.pipelines import base
from tests.conftest import REAL_DATA

# Easy synthetic task: the bright region tells the label (top, bottom or a centre square);
# horizontal flips, small shifts and zooms keep the label.
PATTERNS = {"happiness": "top", "sadness": "bottom", "anger": "centre"}
IMAGES_PER_LABEL = 40


def pattern_image(kind: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    image = rng.normal(70, 20, (size, size))
    if kind == "top":
        image[: size // 3] += 120
    elif kind == "bottom":
        image[-size // 3 :] += 120
    else:
        image[size // 3 : 2 * size // 3, size // 3 : 2 * size // 3] += 120
    return np.clip(image, 0, 255).astype(np.uint8)


def write_pattern_folder(root: Path, per_label: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for folder, kind in PATTERNS.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            cv2.imwrite(str(root / folder / f"{i:03d}.png"), pattern_image(kind, rng))
    return root


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    """A tiny faces run trained on the synthetic pattern folder (label layout); caches stay in tmp."""

    root = tmp_path_factory.mktemp("faces")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MER_CACHE_DIR", str(root / "cache"))
        yield _train_face_run(root)


def _train_face_run(root: Path) -> Path:
    data = write_pattern_folder(root / "patterns", IMAGES_PER_LABEL, seed=0)
    (data / "contempt").mkdir()
    cv2.imwrite(str(data / "contempt" / "x.png"), np.zeros((48, 48), np.uint8))
    (data / "anger" / "broken.png").write_bytes(b"\x89PNG but not really")
    out = root / "run"
    base.train(
        "faces",
        data,
        out,
        seed=0,
        smoke=True,
        epochs=12,
        max_images_per_label=None,
        val_share=0.2,
        test_share=0.2,
        progress=False,
    )
    return out


def test_run_folder_has_every_file_and_the_fixed_label_order(face_run):
    for name in ("model.keras", "run.json", "metrics.json", "predictions_val.csv", "predictions_test.csv"):
        assert (face_run / name).is_file(), name
    info = json.loads((face_run / "run.json").read_text())
    assert info["branch"] == "faces" and info["labels"] == list(RAVDESS_EMOTIONS)
    assert sorted(info["present_labels"]) == ["angry", "happy", "sad"]
    assert info["input_size"] == 48 and info["grayscale"] is True
    test = pd.read_csv(face_run / "predictions_test.csv")
    assert list(test.columns[4:]) == [f"prob_{label}" for label in RAVDESS_EMOTIONS]
    # Labels absent from training get probability exactly 0; rows still sum to 1.
    for label in ("neutral", "calm", "fearful", "disgust", "surprised"):
        assert (test[f"prob_{label}"] == 0).all()
    np.testing.assert_allclose(test.filter(like="prob_").sum(axis=1), 1.0, atol=1e-6)


def test_tiny_face_model_learns_the_easy_task(face_run):
    metrics = json.loads((face_run / "metrics.json").read_text())
    # 3 present labels: chance is 1/3.
    assert metrics["present_labels"]["accuracy"] >= 0.7
    assert metrics["split"]["test"] == 24 and metrics["split"]["val"] == 24
    reasons = " ".join(s["reason"] for s in metrics["skipped"])
    assert "contempt" in reasons and "unreadable image" in reasons
    skipped = pd.read_csv(face_run / "skipped.csv")
    assert len(skipped) == 2


def test_evaluate_scores_another_image_folder(face_run, tmp_path):
    from mer_utils.cli import main

    other = write_pattern_folder(tmp_path / "other" / "validation", 10, seed=5).parent
    metrics = base.evaluate(face_run, other)
    assert metrics["n"] == 30
    assert metrics["present_labels"]["accuracy"] >= 0.7
    assert main(["evaluate", str(face_run), "--data", str(other), "--json"]) == 0


def test_predict_file_on_an_image_and_on_a_demo_clip(face_run, tmp_path):
    from mer_utils.demo import make_demo_clip

    image = tmp_path / "face.png"
    cv2.imwrite(str(image), pattern_image("top", np.random.default_rng(9)))
    outcome = base.predict_file(face_run, image)
    assert outcome["available"] and outcome["details"]["predicted"] == "happy"
    assert outcome["probabilities"][RAVDESS_EMOTIONS.index("calm")] == 0.0
    # An image is its one face: its record has no time in a clip, its crop goes to the page.
    (record,) = outcome["details"]["face_frames"]
    assert record["frame"] == 0 and record["seconds"] is None and record["label"] == "happy"
    assert outcome[base.ARRAYS_KEY]["face_crops"].shape[0] == 1

    clip = make_demo_clip(tmp_path / "01-01-03-01-01-01-01.mp4", "happy", "normal", 1, 1)
    outcome = base.predict_file(face_run, clip)
    assert outcome["available"] and outcome["details"]["frames"] == 8
    assert sum(outcome["details"]["detectors"].values()) == 8
    assert abs(sum(outcome["probabilities"]) - 1) < 1e-6

    missing = base.predict_file(face_run, tmp_path / "nope.mp4")
    assert not missing["available"] and "nope.mp4" in missing["reason"]


def test_cli_rejects_options_of_other_branches(tmp_path, capsys):
    from mer_utils.cli import main

    assert (
        main(["train", "audio", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs", "2"]) == 2
    )
    assert "--epochs applies to `mer train faces`" in capsys.readouterr().err
    assert main(["train", "faces", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--init", "x"]) == 2


def test_init_copies_the_face_run_weights(face_run):
    from mer_utils.models.faces import network_like_face_run
    from mer_utils.models.video import backbone_of

    info = base.run_info(face_run, "faces")
    network = network_like_face_run(info, lambda: base.load_model(face_run), seed=1)
    trained = base.load_model(face_run)
    assert info["model"] == "cnn" and network.input_shape[1:] == (48, 48, 3)
    for ours, theirs in zip(backbone_of(network).weights, backbone_of(trained).weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(
        network.get_layer("emotion").get_weights()[0], trained.get_layer("emotion").get_weights()[0]
    )
    # A fresh build differs: the copy, not the seed, made them equal.
    from mer_utils.models.video import build_face_cnn

    fresh = build_face_cnn(48, 8, seed=1)
    assert not np.array_equal(backbone_of(fresh).weights[0].numpy(), backbone_of(trained).weights[0].numpy())


def test_video_train_with_init_starts_from_the_face_run(face_run, demo_dir, tmp_path):
    out = tmp_path / "video_init"
    metrics = base.train(
        "video",
        demo_dir,
        out,
        smoke=True,
        init=face_run,
        clips_per_actor=2,
        frozen_epochs=1,
        num_frames=2,
        progress=False,
    )
    info = json.loads((out / "run.json").read_text())
    assert info["init"] == str(face_run) and info["input_size"] == 48
    assert metrics["model"] == "init:cnn" and metrics["epochs"] == 1
    model = base.load_model(out)
    assert model.get_layer("backbone") is not None
    with pytest.raises(ValueError, match="either --model or --init"):
        base.train("video", demo_dir, out, smoke=True, init=face_run, model="resnet50-scratch")


def test_a_face_run_is_the_video_modality_of_mer_predict(face_run, tmp_path):
    from mer_utils.demo import make_demo_clip
    from mer_utils.predict import predict_clip

    clip = make_demo_clip(tmp_path / "01-01-05-01-01-01-01.mp4", "angry", "normal", 1, 1)
    result = predict_clip(clip, [face_run])
    assert result["label"] in RAVDESS_EMOTIONS
    assert result["modalities"]["faces"]["available"]
    assert result["modalities"]["faces"]["branch"] == "faces"


def test_predict_on_a_real_clip_finds_real_faces(face_run):
    clip = REAL_DATA / "real_video" / "ravdess" / "01-01-07-02-02-01-01.mp4"
    if not clip.is_file():
        pytest.skip(f"real clip not found at {clip}")
    outcome = base.predict_file(face_run, clip)
    assert outcome["available"]
    assert outcome["details"]["detectors"].get("mtcnn", 0) >= 6  # real frames: MTCNN, not fallbacks


def test_a_face_run_predicts_the_clips_of_a_ravdess_folder_one_row_per_take(face_run, tmp_path):
    from mer_utils.demo import make_demo_clip

    actor = tmp_path / "clips" / "Actor_01"
    actor.mkdir(parents=True)
    for name, emotion in (("01-01-03-01-01-01-01", "happy"), ("01-01-05-01-01-01-01", "angry")):
        make_demo_clip(actor / f"{name}.mp4", emotion, "normal", 1, 1)
    (actor / "01-01-04-01-01-01-01.mp4").write_bytes(b"not a video")
    table = base.predict_table(face_run, tmp_path / "clips")
    # Take ids (the file name without its modality field) line the rows up with other runs' tables.
    assert sorted(table["clip_id"]) == ["01-03-01-01-01-01", "01-05-01-01-01-01"]
    assert sorted(table["true_label"]) == ["angry", "happy"]
    probabilities = table[[f"prob_{label}" for label in RAVDESS_EMOTIONS]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities[:, RAVDESS_EMOTIONS.index("calm")] == 0).all()
    skipped = table.attrs["skipped"]
    assert [Path(item["path"]).name for item in skipped] == ["01-01-04-01-01-01-01.mp4"]
    assert skipped[0]["reason"]
