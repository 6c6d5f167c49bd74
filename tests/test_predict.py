"""`mer predict` (mer_utils.predict) on real tiny runs: a faces run and an audio run on synthetic clips.

The two runs are trained once per module: the faces run on the pattern-image folder of
tests/test_pipelines_faces.py (a faces run is the video modality of `mer predict`), the audio run as
a scikit-learn model on the 4-actor demo set. Each test hands `predict_clip` one clip that is
healthy, broken in one modality, or broken in all of them, and checks what comes back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mer_utils import cli, media
from mer_utils.config import RAVDESS_EMOTIONS
from mer_utils.predict import NoModalityError, format_prediction, load_models, predict_clip
from tests.test_pipelines_faces import _train_face_run

# Keys of `mer predict --json` (the public interface: add, never rename).
RESULT_KEYS = {
    "clip",
    "label",
    "labels",
    "fused_probabilities",
    "method",
    "method_chosen_by",
    "modalities",
    "timings",
}
# Keys of each modality entry of the result.
MODALITY_KEYS = {"available", "probabilities", "confidence", "trust", "weight", "reason", "details", "branch"}


@pytest.fixture(scope="module")
def face_run(tmp_path_factory) -> Path:
    """A tiny faces run (synthetic pattern images, RAVDESS label order); its caches stay in tmp."""
    root = tmp_path_factory.mktemp("predict_faces")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("mer_utils.face_images.CACHE_DIR", root / "cache", raising=False)
        patch.setattr("mer_utils.faces.CACHE_DIR", root / "cache", raising=False)
        patch.setenv("MER_CACHE_DIR", str(root / "cache"))
        yield _train_face_run(root)


@pytest.fixture(scope="module")
def audio_run(demo_dir, tmp_path_factory) -> Path:
    """A small logistic-regression audio run on utterance statistics of the demo set."""
    from mer_utils.pipelines import base

    out = tmp_path_factory.mktemp("predict_audio") / "audio"
    base.train("audio", demo_dir, out, seed=3, model="logreg", smoke=True, progress=False)
    return out


@pytest.fixture(scope="module")
def loaded(face_run, audio_run) -> dict:
    """Both runs loaded once (with the warm-up clip, as `mer predict` does)."""
    return load_models([face_run, audio_run])


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("predict_clips")


def demo_clip(folder: Path, name: str = "01-01-05-01-01-01-01.mp4", **options) -> Path:
    """One synthetic clip (angry, actor 1) named ``name``."""
    from mer_utils.demo import make_demo_clip

    return make_demo_clip(folder / name, "angry", "normal", 1, 1, **options)


def assert_distribution(probabilities, size: int) -> None:
    p = np.asarray(probabilities, dtype=float)
    assert p.shape == (size,)
    assert (p >= 0).all() and (p <= 1).all()
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-6)


def test_both_modalities_predict_and_the_fused_label_is_the_most_likely(loaded, clip_dir):
    clip = demo_clip(clip_dir)
    result = predict_clip(clip, loaded=loaded)
    labels = result["labels"]
    assert labels == list(RAVDESS_EMOTIONS)
    assert set(result["modalities"]) == {"faces", "audio"}
    for name, entry in result["modalities"].items():
        assert MODALITY_KEYS <= set(entry), name
        assert entry["available"], (name, entry["reason"])
        assert entry["branch"] == name
        assert_distribution(entry["probabilities"], len(labels))
        assert 0.0 <= entry["confidence"] <= 1.0 and 0.0 <= entry["trust"] <= 1.0
        assert entry["weight"] >= 0.0
    assert_distribution(result["fused_probabilities"], len(labels))
    assert result["label"] == labels[int(np.argmax(result["fused_probabilities"]))]
    assert result["true_label"] == "angry"  # read from the RAVDESS file name
    # The faces run never saw five of the eight labels: it gives them probability 0.
    faces = np.asarray(result["modalities"]["faces"]["probabilities"])
    assert (faces[[labels.index(label) for label in ("neutral", "calm", "fearful")]] == 0).all()
    assert {"predict faces", "predict audio", "fusion", "warm-up"} <= set(result["timings"])


def test_the_faces_crops_and_frame_probabilities_come_from_the_same_pass(loaded, clip_dir, monkeypatch):
    from mer_utils import faces

    clip = demo_clip(clip_dir)
    calls = []
    real = faces.extract_clip_faces
    monkeypatch.setattr(faces, "extract_clip_faces", lambda *a, **k: calls.append(a) or real(*a, **k))
    arrays: dict = {}
    result = predict_clip(clip, loaded=loaded, arrays=arrays)
    assert len(calls) == 1  # one face detection pass gives the answer and the crops
    assert set(arrays) == {"faces"}  # the audio run shows no arrays
    crops = arrays["faces"]["face_crops"]
    frames = result["modalities"]["faces"]["details"]["face_frames"]
    assert crops.dtype == np.uint8 and crops.ndim == 4 and len(crops) == len(frames) == 8
    labels = result["labels"]
    for frame in frames:
        assert frame["label"] == labels[int(np.argmax(frame["probabilities"]))]
        assert frame["probability"] == max(frame["probabilities"])
    # The clip's answer is the mean of its frames' weighted by their records' weights (rounded to
    # 4 decimals in the records); the demo face is found and aligned in every frame.
    assert all(f["aligned"] and 0 < f["weight"] <= 1 for f in frames)
    weights = np.array([f["weight"] for f in frames])
    np.testing.assert_allclose(
        weights @ np.array([f["probabilities"] for f in frames]) / weights.sum(),
        result["modalities"]["faces"]["probabilities"],
        atol=1e-3,
    )
    # Frames are sampled over 0.2-0.8 of the 3 s clip, in order.
    seconds = [f["seconds"] for f in frames]
    assert seconds == sorted(seconds) and 0.5 < seconds[0] < seconds[-1] < 2.5, seconds
    segments = result["modalities"]["audio"]["details"]["voice_segments"]
    assert segments and all(0 <= start < end <= 3.05 for start, end in segments)
    assert "arrays" not in json.dumps(result)


def test_the_same_clip_gives_the_same_answer_with_models_loaded_anew(loaded, face_run, audio_run, clip_dir):
    clip = demo_clip(clip_dir)
    again = predict_clip(clip, [face_run, audio_run])
    once = predict_clip(clip, loaded=loaded)
    assert again["label"] == once["label"]
    np.testing.assert_allclose(again["fused_probabilities"], once["fused_probabilities"], atol=1e-6)


def test_cli_json_has_every_key_of_the_result(face_run, audio_run, clip_dir, capsys):
    clip = demo_clip(clip_dir)
    assert cli.main(["predict", str(clip), "--models", str(face_run), str(audio_run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert RESULT_KEYS | {"true_label"} <= set(printed)
    assert printed["clip"] == str(clip)
    assert_distribution(printed["fused_probabilities"], len(printed["labels"]))
    assert printed["method"]  # the fusion method chosen on the runs' validation predictions
    for entry in printed["modalities"].values():
        assert MODALITY_KEYS <= set(entry)
        assert "arrays" not in entry  # face crops are for the page, never in the JSON
    assert len(printed["modalities"]["faces"]["details"]["face_frames"]) == 8

    assert cli.main(["predict", str(clip), "--models", str(face_run), str(audio_run), "--verbose"]) == 0
    text = capsys.readouterr().out
    first = text.splitlines()[0]
    assert first.startswith(f"{clip}: {printed['label']}") and "file name says: angry" in first
    assert "fused:" in text and "timings:" in text
    for name in ("faces", "audio"):
        assert any(line.startswith(name) and "trust" in line for line in text.splitlines()), name


def test_a_clip_without_audio_is_predicted_from_the_faces_alone(loaded, clip_dir):
    clip = demo_clip(clip_dir, "01-01-05-01-01-01-02.mp4", with_audio=False)
    assert not media.probe(clip)["has_audio"]
    result = predict_clip(clip, loaded=loaded)
    audio, faces = result["modalities"]["audio"], result["modalities"]["faces"]
    assert not audio["available"] and "no audio stream" in audio["reason"]
    assert audio["weight"] == 0.0
    assert faces["available"] and faces["weight"] > 0
    assert_distribution(result["fused_probabilities"], len(result["labels"]))
    # With one modality left the fused label is that modality's label.
    assert result["label"] == result["labels"][int(np.argmax(faces["probabilities"]))]
    assert "audio        unavailable: " in format_prediction(result)


def test_a_silent_clip_has_no_audio_answer_but_still_a_faces_answer(loaded, clip_dir):
    clip = demo_clip(clip_dir)
    frames = media.read_frames(clip, 12)
    silent = media.write_mp4(
        clip_dir / "silent.mp4", frames, fps=12, audio=np.zeros(3 * 16_000, np.float32), sr=16_000
    )
    assert media.probe(silent)["has_audio"]  # the audio stream is there, but silent
    result = predict_clip(silent, loaded=loaded)
    audio = result["modalities"]["audio"]
    assert not audio["available"] and "no speech found" in audio["reason"]
    assert result["modalities"]["faces"]["available"]
    assert result["label"] in RAVDESS_EMOTIONS


def test_a_lone_clip_with_any_file_name_is_predicted_without_ground_truth(loaded, clip_dir, tmp_path):
    lone = tmp_path / "my holiday video.mp4"
    shutil.copy(demo_clip(clip_dir), lone)
    result = predict_clip(lone, loaded=loaded)
    assert "true_label" not in result
    assert result["label"] in RAVDESS_EMOTIONS
    assert all(entry["available"] for entry in result["modalities"].values())
    assert "file name says" not in format_prediction(result)


def test_nothing_usable_raises_no_modality_error_with_every_reason(loaded, tmp_path):
    broken = tmp_path / "01-01-05-01-01-01-01.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(
        NoModalityError, match=r"01-01-05-01-01-01-01\.mp4: no modality could be used"
    ) as error:
        predict_clip(broken, loaded=loaded)
    assert "faces: " in str(error.value) and "audio: " in str(error.value)


def test_a_missing_clip_is_a_file_not_found_error(loaded, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4: no such file"):
        predict_clip(tmp_path / "nope.mp4", loaded=loaded)


def test_a_missing_run_folder_is_a_clear_error(audio_run, clip_dir, tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    with pytest.raises(FileNotFoundError, match="no_such_run"):
        load_models([audio_run, missing], warm_up=False)
    assert cli.main(["predict", str(demo_clip(clip_dir)), "--models", str(missing)]) == 2
    assert "no_such_run" in capsys.readouterr().err


def test_no_run_folder_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one run folder"):
        load_models([])


def test_a_text_run_cannot_read_a_clip(audio_run, tmp_path):
    text_run = tmp_path / "text"
    shutil.copytree(audio_run, text_run)
    info = json.loads((text_run / "run.json").read_text())
    info["branch"] = "text"
    (text_run / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"text.*a 'text' run cannot read a video clip"):
        load_models([text_run], warm_up=False)


def test_runs_with_different_label_orders_are_refused(audio_run, face_run, tmp_path):
    from mer_utils.evaluation import prediction_table
    from mer_utils.runs import read_predictions, write_predictions

    reordered = tmp_path / "audio_reordered"
    shutil.copytree(audio_run, reordered)
    info = json.loads((reordered / "run.json").read_text())
    info["labels"] = info["labels"][::-1]
    (reordered / "run.json").write_text(json.dumps(info))
    # The prediction tables follow the run's label order, as a real run of that order writes them.
    for split in ("val", "test"):
        table = read_predictions(reordered, split)
        probabilities = table[[f"prob_{label}" for label in info["labels"]]].to_numpy()
        write_predictions(
            reordered,
            split,
            prediction_table(probabilities, info["labels"], table["clip_id"], table["true_label"]),
        )
    with pytest.raises(ValueError, match="label order"):
        load_models([face_run, reordered], warm_up=False)
