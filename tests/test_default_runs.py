"""The runs that ship inside the package: found, checked, installed with the package, models that know faces and voices."""

from __future__ import annotations

import fnmatch
import json
import shutil
import tomllib

import numpy as np
import pandas as pd
import pytest

from mer_utils.config import PACKAGE_PARENT, RAVDESS_EMOTIONS
from mer_utils.default_runs import DEFAULT_RUNS, DEFAULT_RUNS_DIR, default_run
from mer_utils.pipelines import base
from tests.conftest import REAL_DATA


def test_every_bundled_run_is_a_checked_run_folder_of_its_branch():
    for name, (branch, _) in DEFAULT_RUNS.items():
        folder = default_run(name)
        info = base.run_info(folder, branch)
        assert info["labels"] == list(RAVDESS_EMOTIONS)
        # The data is named by its placeholder, never by a path of the machine that built it.
        assert info["data"].startswith("DATA_DIR/"), info["data"]


def test_unknown_or_missing_bundled_run_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="no bundled run named 'speech'"):
        default_run("speech")
    monkeypatch.setattr("mer_utils.default_runs.DEFAULT_RUNS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="build_default_runs.py"):
        default_run("faces")


def test_bundled_files_are_package_data():
    """`pip install .` copies exactly the files setuptools' package-data patterns match."""
    pyproject = tomllib.loads((PACKAGE_PARENT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["mer_utils"]
    files = [
        path for path in DEFAULT_RUNS_DIR.rglob("*") if path.is_file() and "__pycache__" not in path.parts
    ]
    assert files
    package = DEFAULT_RUNS_DIR.parent
    for path in files:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_a_changed_model_file_is_refused(tmp_path):
    copy = shutil.copytree(default_run("faces"), tmp_path / "faces")
    model = copy / "model.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.keras"):
        base.load_model(copy, "faces")


@pytest.mark.slow
def test_bundled_faces_run_reads_a_real_face_and_not_a_blank(tmp_path):
    """A real photographed face gets a distribution over the FER2013 labels (calm stays 0); a grey square differs."""
    import matplotlib.cbook
    from PIL import Image

    run = default_run("faces")
    model = base.load_model(run, "faces")
    face = tmp_path / "face.png"
    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    Image.open(photo).convert("RGB").save(face)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((96, 96, 3), 128, dtype=np.uint8)).save(blank)
    answers = [base.predict_file(run, path, model=model) for path in (face, blank)]
    for answer in answers:
        assert answer["available"], answer["reason"]
        p = np.asarray(answer["probabilities"], dtype=float)
        np.testing.assert_allclose(p.sum(), 1.0, atol=1e-5)
        assert p[list(RAVDESS_EMOTIONS).index("calm")] == 0.0
    assert np.abs(np.subtract(*[a["probabilities"] for a in answers])).max() > 0.01


@pytest.mark.slow
@pytest.mark.realdata
def test_bundled_faces_run_is_well_above_chance_on_fer2013_validation(tmp_path):
    """On 280 FER2013 validation faces (40 per label) the bundled run is right far more often than 1 in 7."""
    folder = REAL_DATA / "faces" / "fer2013" / "validation"
    if not folder.is_dir():
        pytest.skip(f"FER2013 not found at {folder}")
    sample = tmp_path / "sample"
    for label_folder in sorted(p for p in folder.iterdir() if p.is_dir()):
        (sample / label_folder.name).mkdir(parents=True)
        for image in sorted(label_folder.iterdir())[:40]:
            (sample / label_folder.name / image.name).symlink_to(image)
    table = base.predict_table(default_run("faces"), sample)
    assert len(table) == 280
    accuracy = float((table["true_label"] == table["pred_label"]).mean())
    assert accuracy > 0.4, accuracy  # chance: 1 in 7


def test_predict_without_models_answers_from_the_bundled_runs(demo_dir, tmp_path, capsys):
    import json

    from mer_utils.cli import main

    # A demo clip under a name of the user's, outside any RAVDESS folder.
    clip = tmp_path / "my interview.mp4"
    shutil.copy(next(demo_dir.glob("Actor_*/01-01-05-*.mp4")), clip)
    assert main(["predict", str(clip), "--json"]) == 0
    captured = capsys.readouterr()
    assert "no --models: the runs that ship with the package answer (faces: FER2013" in captured.err
    result = json.loads(captured.out)
    faces = result["modalities"]["faces"]
    assert faces["available"], faces
    assert "audio: RAVDESS actors 01-18 + URDU + TurEV-DB" in captured.err
    assert result["modalities"]["audio"]["available"], result["modalities"]["audio"]
    probabilities = np.asarray(result["fused_probabilities"])
    np.testing.assert_allclose(probabilities.sum(), 1.0, atol=1e-5)
    assert result["label"] == result["labels"][int(np.argmax(probabilities))]
    # The bundled faces run never learned calm (FER2013 has none): its answer cannot be calm.
    assert result["labels"][int(np.argmax(faces["probabilities"]))] != "calm"
    # The fusion was fitted on the runs' own validation predictions, which ship with them.
    assert all((default_run(name) / "predictions_val.csv").is_file() for name in DEFAULT_RUNS)


def test_bundled_audio_run_was_trained_on_every_shared_speech_corpus():
    folder = default_run("audio")
    info = base.run_info(folder, "audio")
    corpora = ["DATA_DIR/ravdess_speech_16k", "DATA_DIR/speech/urdu", "DATA_DIR/speech/turev-db"]
    assert info["data"] == ", ".join(corpora) and info["model"] == "whisper"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["per_corpus"]) == {"ravdess", "urdu", "turev-db"}
    # Every corpus's test speakers, each with its own figures; the run is a few hundred kB, not MB.
    assert sum(entry["n"] for entry in metrics["per_corpus"].values()) == metrics["n"]
    assert sum(path.stat().st_size for path in folder.iterdir()) < 3e6
    validation = pd.read_csv(folder / "predictions_val.csv")
    assert set(validation["corpus"]) == {"ravdess", "urdu", "turev-db"}
    assert validation["path"].str.startswith("DATA_DIR/").all()


def test_bundled_audio_run_answers_real_clips_of_unknown_speakers_variously(tmp_path):
    """Lone clips of two corpora under new names: answers spread over several emotions, not one."""
    from mer_utils import whisper_encoder

    if not whisper_encoder.available():
        pytest.skip("the Whisper encoder is not installed")
    corpora = [REAL_DATA / "speech" / "urdu", REAL_DATA / "speech" / "turev-db"]
    if not all(folder.is_dir() for folder in corpora):
        pytest.skip(f"URDU and TurEV-DB not found under {REAL_DATA / 'speech'}")
    folder = default_run("audio")
    model = base.load_model(folder, "audio")
    answers, unheard = [], 0
    for corpus in corpora:
        for label_folder in sorted(p for p in corpus.iterdir() if p.is_dir()):
            for clip in sorted(label_folder.glob("*.wav"))[:2]:
                copy = tmp_path / f"my recording {len(answers) + unheard}.wav"
                shutil.copy(clip, copy)
                result = base.predict_file(folder, copy, model=model)
                if not result["available"]:
                    # A TurEV-DB word can hold less voice than the voice check asks for: said, not a crash.
                    assert "no speech found" in result["reason"], result
                    unheard += 1
                    continue
                answers.append(int(np.argmax(result["probabilities"])))
    assert len(answers) >= 10
    assert len(set(answers)) >= 3 and max(np.bincount(answers)) <= len(answers) // 2
