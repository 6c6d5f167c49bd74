"""Hostile but realistic inputs: what a user (or someone sending them a run folder) may hand `mer`.

Every case builds its own tiny files and checks that `mer` answers with a clear error naming the
file (one line, exit code 2, no traceback) or recovers, and that nothing loaded from a file runs
code. docs/bad_input.md lists the same cases, one row each (checked by tests/test_results.py).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mer_utils import cli, runs
from mer_utils import media as _media
from mer_utils import voice as _voice
from mer_utils.config import RAVDESS_EMOTIONS

LABELS = list(RAVDESS_EMOTIONS)


# --- run folders, model files, caches, archives, CLI ---------------------------------------


class _RunsCommand:
    """Pickled, this object calls os.system on load: the classic hostile model file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _audio_params() -> dict:
    from mer_utils.pipelines.audio import _vector_features

    return {
        "model": "logreg",
        "feature_kind": "utterance",
        "features": _vector_features("utterance"),
        "normalisation": "global",
        "seed": 0,
    }


def _fitted_pipeline(labels=LABELS):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * len(labels), 5))
    y = np.repeat(labels, 4)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(x, y)


def _write_val_predictions(run_dir: Path, labels=LABELS) -> None:
    from mer_utils.evaluation import prediction_table

    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(len(labels)), size=2 * len(labels))
    truth = list(labels) * 2
    ids = [f"01-01-01-01-01-{i:02d}" for i in range(len(truth))]
    runs.write_predictions(run_dir, "val", prediction_table(probabilities, labels, ids, truth))


def _sklearn_run(run_dir: Path) -> Path:
    """A minimal new-format audio run: model.skops with checksums, as `mer train audio` writes it."""
    runs.save_model(run_dir, _fitted_pipeline(), "sklearn")
    runs.write_run_info(run_dir, "audio", LABELS, model_file="model.skops", **_audio_params())
    _write_val_predictions(run_dir)
    return run_dir


def _old_pickle_run(run_dir: Path, model) -> Path:
    """A run folder as written before skops: model.joblib and run.json without checksums."""
    import joblib

    run_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, run_dir / "model.joblib")
    runs.write_json(run_dir / "run.json", {"branch": "audio", "labels": LABELS, **_audio_params()})
    _write_val_predictions(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def keras_network():
    import keras

    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(len(LABELS), activation="softmax")(inputs))


def _keras_run(run_dir: Path, network, checksums: bool = True) -> Path:
    runs.save_model(run_dir, network, "keras")
    if checksums:
        runs.write_run_info(run_dir, "spectrogram", LABELS)
    else:
        runs.write_json(run_dir / "run.json", {"branch": "spectrogram", "labels": LABELS})
    return run_dir


@pytest.fixture()
def one_clip_dir(tmp_path) -> Path:
    from mer_utils.demo import make_demo_clip

    folder = tmp_path / "clips"
    make_demo_clip(folder / "Actor_01" / "01-01-01-01-01-01-01.mp4", "neutral", "normal", 1, 1)
    return folder


def _edit_run_json(run_dir: Path, **changes) -> None:
    info = json.loads((run_dir / "run.json").read_text())
    for key, value in changes.items():
        if value is None:
            info.pop(key, None)
        else:
            info[key] = value
    (run_dir / "run.json").write_text(json.dumps(info))


def _fails_cleanly(argv: list[str], capsys, *needles: str, code: int = 2) -> str:
    """Run `mer argv`; check the exit code, ONE stderr line with the needles, and no traceback."""
    assert cli.main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("WARNING", "INFO"))]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mer {argv[0]}:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


# Model files that could run code.


def test_malicious_pickle_is_not_loaded_by_evaluate(tmp_path, one_clip_dir, capsys):
    marker = tmp_path / "pwned"
    run = _old_pickle_run(tmp_path / "run", _RunsCommand(marker))
    line = _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "model.joblib", "retrain")
    assert runs.TRUST_PICKLE_ENV in line
    assert not marker.exists()


def test_malicious_pickle_is_not_loaded_by_predict(tmp_path, one_clip_dir, capsys):
    marker = tmp_path / "pwned"
    run = _old_pickle_run(tmp_path / "run", _RunsCommand(marker))
    clip = next(one_clip_dir.rglob("*.mp4"))
    _fails_cleanly(["predict", clip, "--models", run], capsys, "model.joblib")
    assert not marker.exists()


def test_old_pickle_loads_only_with_explicit_trust(tmp_path, monkeypatch):
    from mer_utils.pipelines import audio

    run = _old_pickle_run(tmp_path / "run", _fitted_pipeline())
    monkeypatch.delenv(runs.TRUST_PICKLE_ENV, raising=False)
    with pytest.raises(runs.UnsafeModelError, match="pickled model"):
        audio.load_model(run)
    monkeypatch.setenv(runs.TRUST_PICKLE_ENV, "1")
    assert list(audio.load_model(run).classes_) == sorted(LABELS)


def test_trust_pickle_flag_is_scoped_to_one_command(tmp_path, one_clip_dir, capsys, monkeypatch):
    monkeypatch.delenv(runs.TRUST_PICKLE_ENV, raising=False)
    marker = tmp_path / "pwned"
    run = _old_pickle_run(tmp_path / "run", _RunsCommand(marker))
    # With the opt-in the pickle is loaded (and here runs its command): the flag means what it says.
    cli.main(["--trust-pickle", "evaluate", str(run), "--data", str(one_clip_dir)])
    capsys.readouterr()
    assert marker.exists()
    assert runs.TRUST_PICKLE_ENV not in os.environ


def test_pickle_renamed_to_skops_is_refused_as_corrupt(tmp_path, capsys, one_clip_dir):
    import joblib

    marker = tmp_path / "pwned"
    run = _old_pickle_run(tmp_path / "run", _fitted_pipeline())
    (run / "model.joblib").unlink()
    joblib.dump(_RunsCommand(marker), run / "model.skops")
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "model.skops", "corrupt")
    assert not marker.exists()


def test_skops_file_calling_os_system_is_refused(tmp_path):
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    from mer_utils.pipelines import audio

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.skops").write_bytes(skops.io.dumps(FunctionTransformer(func=os.system)))
    runs.write_run_info(run, "audio", LABELS, **_audio_params())
    with pytest.raises(runs.UnsafeModelError, match=r"model\.skops.*allow-list.*system"):
        audio.load_model(run)


class _NotAModel:
    pass


def test_skops_file_with_an_unknown_class_is_refused(tmp_path, capsys, one_clip_dir):
    import skops.io

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.skops").write_bytes(skops.io.dumps(_NotAModel()))
    runs.write_run_info(run, "audio", LABELS, **_audio_params())
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "model.skops", "_NotAModel")


def test_new_runs_write_skops_with_checksums_and_reload(tmp_path):
    from mer_utils.pipelines import audio

    run = _sklearn_run(tmp_path / "run")
    info = runs.read_run_info(run)
    assert not (run / "model.joblib").exists()
    assert info["model_files"] == {"model.skops": runs.file_sha256(run / "model.skops")}
    assert info["model_fingerprint"] == runs.model_fingerprint(LABELS, info["model_files"])
    x = np.random.default_rng(2).normal(size=(3, 5))
    np.testing.assert_allclose(audio.load_model(run).predict_proba(x), _fitted_pipeline().predict_proba(x))


def test_retraining_a_folder_with_another_model_type_leaves_one_model(tmp_path, keras_network):
    from mer_utils.pipelines import audio

    run = _keras_run(tmp_path / "run", keras_network)
    _sklearn_run(run)
    assert sorted(p.name for p in run.glob("model.*")) == ["model.skops"]
    assert list(audio.load_model(run).classes_) == sorted(LABELS)


def test_changed_skops_file_is_refused_by_checksum(tmp_path, capsys, one_clip_dir):
    run = _sklearn_run(tmp_path / "run")
    with (run / "model.skops").open("ab") as stream:
        stream.write(b"\0")
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "model.skops", "SHA-256")


def test_model_file_added_after_training_is_refused(tmp_path, keras_network):
    from mer_utils.pipelines import audio

    run = _sklearn_run(tmp_path / "run")
    keras_network.save(run / "model.keras")  # would be preferred over model.skops if trusted
    with pytest.raises(runs.UnsafeModelError, match=r"model\.keras: not among the model files recorded"):
        audio.load_model(run)


def test_changed_keras_file_is_refused_by_checksum(tmp_path, keras_network):
    from mer_utils.pipelines import spectrogram

    run = _keras_run(tmp_path / "run", keras_network)
    assert spectrogram.load_model(run).output_shape[-1] == len(LABELS)
    with (run / "model.keras").open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(runs.UnsafeModelError, match=r"model\.keras: SHA-256"):
        spectrogram.load_model(run)


@pytest.mark.parametrize("content", [b"", b"this is not a zip archive"], ids=["empty", "garbage"])
def test_corrupt_keras_file_is_reported_as_corrupt_not_missing(tmp_path, keras_network, content):
    from mer_utils.pipelines import spectrogram

    run = _keras_run(tmp_path / "run", keras_network, checksums=False)
    (run / "model.keras").write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.keras: corrupt") as caught:
        spectrogram.load_model(run)
    assert "not found" not in str(caught.value).lower()


def test_keras_models_load_in_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2)(keras.layers.Dense(len(LABELS))(inputs))
    run = _keras_run(tmp_path / "run", keras.Model(inputs, outputs))
    from mer_utils.pipelines import spectrogram

    # A Lambda layer holds Python bytecode: safe_mode refuses to deserialize it.
    with pytest.raises(ValueError, match=r"(?i)model\.keras.*lambda"):
        spectrogram.load_model(run)


# run.json: validated on load, labels bound to the weights.


def test_reversed_labels_are_detected(tmp_path, keras_network, capsys, one_clip_dir):
    run = _keras_run(tmp_path / "run", keras_network)
    _edit_run_json(run, labels=LABELS[::-1])
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "run.json", "labels")


def test_reordered_labels_of_a_sklearn_run_are_detected(tmp_path):
    from mer_utils.pipelines import audio

    run = _sklearn_run(tmp_path / "run")
    swapped = LABELS[1:2] + LABELS[:1] + LABELS[2:]
    _edit_run_json(run, labels=swapped)
    with pytest.raises(runs.UnsafeModelError, match="not the ones the model was trained with"):
        audio.load_model(run)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": None}, "'labels' is missing"),
        ({"branch": None}, "'branch' is missing"),
        ({"branch": "smell"}, "unknown branch 'smell'"),
        ({"labels": "neutral,calm"}, "list of label names"),
        ({"labels": ["calm", "calm"]}, "distinct"),
        ({"seed": "zero"}, "'seed' must be a JSON int"),
        ({"features": None}, "'features' (audio runs) is missing"),
        ({"model_files": {"model.skops": "not-a-hash"}}, "SHA-256 hex"),
    ],
    ids=[
        "no-labels",
        "no-branch",
        "unknown-branch",
        "labels-string",
        "duplicate-labels",
        "seed-type",
        "no-features",
        "bad-checksum-entry",
    ],
)
def test_malformed_run_json_is_one_clear_line(tmp_path, capsys, one_clip_dir, changes, message):
    run = _sklearn_run(tmp_path / "run")
    _edit_run_json(run, **changes)
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "run.json", message)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
    ids=["broken", "list", "binary"],
)
def test_unreadable_run_json_is_one_clear_line(tmp_path, capsys, one_clip_dir, content, message):
    run = _sklearn_run(tmp_path / "run")
    (run / "run.json").write_bytes(content)
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "run.json", message)


def test_video_run_without_face_parameters(tmp_path, keras_network):
    from mer_utils.pipelines import video

    run = _keras_run(tmp_path / "run", keras_network)
    _edit_run_json(run, branch="video", faces={"no_such_parameter": 1})
    with pytest.raises(ValueError, match=r"run\.json.*'faces'"):
        video.load_model(run)
    _edit_run_json(run, faces=None)
    with pytest.raises(ValueError, match=r"run\.json: the key 'faces'"):
        video.load_model(run)


def test_label_count_must_match_the_network_outputs(tmp_path, keras_network):
    from mer_utils.pipelines import spectrogram

    run = _keras_run(tmp_path / "run", keras_network, checksums=False)  # an old run: no fingerprint
    _edit_run_json(run, labels=LABELS[:7])
    with pytest.raises(ValueError, match="lists 7 labels but model.keras has 8 outputs"):
        spectrogram.load_model(run)


def test_sklearn_classes_must_be_among_the_labels(tmp_path, monkeypatch):
    from mer_utils.pipelines import audio

    monkeypatch.setenv(runs.TRUST_PICKLE_ENV, "1")
    run = _old_pickle_run(tmp_path / "run", _fitted_pipeline())
    _edit_run_json(run, labels=["furious" if label == "angry" else label for label in LABELS])
    with pytest.raises(ValueError, match=r"predicts \['angry'\]"):
        audio.load_model(run)


def test_run_without_a_model_file(tmp_path, capsys, one_clip_dir):
    run = _sklearn_run(tmp_path / "run")
    (run / "model.skops").unlink()
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "no model", "mer train audio")


def test_recorded_extra_file_missing_is_named(tmp_path):
    from mer_utils.pipelines import audio

    run = tmp_path / "run"
    runs.save_model(run, _fitted_pipeline(), "sklearn")
    (run / "normalisation.npz").write_bytes(b"statistics")
    runs.write_run_info(run, "audio", LABELS, extra_model_files=("normalisation.npz",), **_audio_params())
    assert set(runs.read_run_info(run)["model_files"]) == {"model.skops", "normalisation.npz"}
    (run / "normalisation.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"normalisation\.npz: model file missing"):
        audio.load_model(run)


def test_checksum_entry_outside_the_run_folder_is_refused(tmp_path):
    from mer_utils.pipelines import audio

    run = _sklearn_run(tmp_path / "run")
    (tmp_path / "elsewhere.bin").write_bytes(b"x")
    hashes = {"model.skops": runs.file_sha256(run / "model.skops"), "../elsewhere.bin": "0" * 64}
    _edit_run_json(run, model_files=hashes, model_fingerprint=runs.model_fingerprint(LABELS, hashes))
    with pytest.raises(runs.UnsafeModelError, match="outside the run folder"):
        audio.load_model(run)


def test_evaluate_on_wrong_paths(tmp_path, capsys):
    _fails_cleanly(
        ["evaluate", tmp_path / "no_such_run", "--data", tmp_path], capsys, "no_such_run", "does not exist"
    )
    _fails_cleanly(["evaluate", tmp_path, "--data", tmp_path], capsys, "not a run folder")
    run = _sklearn_run(tmp_path / "run")
    _fails_cleanly(["evaluate", run, "--data", tmp_path / "no_data"], capsys, "no_data", "does not exist")


# The command line: one line per expected error, never a traceback.


def _raising_command(monkeypatch, error: BaseException) -> None:
    def command(args):
        raise error

    monkeypatch.setattr(cli, "cmd_index", command)


def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path, capsys, monkeypatch):
    _raising_command(monkeypatch, KeyboardInterrupt())
    _fails_cleanly(["index", tmp_path], capsys, "interrupted", code=130)


def test_out_of_memory_is_reported_as_such(tmp_path, capsys, monkeypatch):
    _raising_command(monkeypatch, MemoryError("Unable to allocate 21.1 GiB"))
    _fails_cleanly(["index", tmp_path], capsys, "out of memory", "21.1 GiB")


def test_permission_error_names_the_file(tmp_path, capsys, monkeypatch):
    _raising_command(monkeypatch, PermissionError(13, "Permission denied", str(tmp_path / "locked.csv")))
    _fails_cleanly(["index", tmp_path], capsys, "Permission denied", "locked.csv")


def test_bad_zip_error_is_one_line(tmp_path, capsys, monkeypatch):
    _raising_command(monkeypatch, zipfile.BadZipFile("File is not a zip file"))
    _fails_cleanly(["index", tmp_path], capsys, "not a zip file")


def test_a_bug_is_one_line_and_the_traceback_needs_debug(tmp_path, capsys, monkeypatch):
    _raising_command(monkeypatch, TypeError("unsupported operand"))
    _fails_cleanly(["index", tmp_path], capsys, "internal error", "TypeError", "-v DEBUG", code=1)
    assert cli.main(["-v", "debug", "index", str(tmp_path)]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_unknown_log_level_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["-v", "LOUD", "index", "."])
    assert caught.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_manifest_into_a_missing_folder_is_created(one_clip_dir, tmp_path, capsys):
    (one_clip_dir / "notes.mp4").write_bytes(b"")
    manifest = tmp_path / "reports" / "deep" / "skipped.csv"
    assert cli.main(["index", str(one_clip_dir), "--manifest", str(manifest)]) == 0
    assert "notes.mp4" in manifest.read_text()


def test_one_actor_folder_needs_three_actors(one_clip_dir, tmp_path, capsys):
    from mer_utils.ravdess import actor_disjoint_split, index_dataset

    with pytest.raises(ValueError, match="at least 3 actors.*found 1 \\(actor 01\\)"):
        actor_disjoint_split(index_dataset(one_clip_dir))
    argv = [
        "train",
        "audio",
        "--data",
        one_clip_dir,
        "--out",
        tmp_path / "run",
        "--model",
        "logreg",
        "--smoke",
    ]
    _fails_cleanly(argv, capsys, "at least 3 actors")


def test_duplicate_files_are_skipped_and_listed(one_clip_dir, tmp_path, caplog):
    from mer_utils.ravdess import index_dataset

    original = next(one_clip_dir.rglob("*.mp4"))
    copy = one_clip_dir / "copies" / original.name
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())
    manifest = tmp_path / "skipped.csv"
    index = index_dataset(one_clip_dir, manifest=manifest)
    assert len(index) == 1
    ((path, reason),) = index.attrs["skipped"]
    assert "duplicate of" in reason and original.name in reason
    assert "duplicate of" in manifest.read_text() and "duplicate of" in caplog.text


# Caches: a zero-byte or truncated file (what a crash leaves) is a miss, not a crash.


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_audio_feature_cache_recovers_from_partial_files(tmp_path, damage):
    from mer_utils import audio

    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    value = np.arange(50, dtype=np.float32)
    calls = []

    def compute():
        calls.append(1)
        return value

    cache = tmp_path / "cache"
    audio.cached_feature(clip, compute, {"kind": "test"}, cache)
    (file,) = cache.glob("*.npy")
    file.write_bytes(b"" if damage == "empty" else file.read_bytes()[:90])
    np.testing.assert_array_equal(audio.cached_feature(clip, compute, {"kind": "test"}, cache), value)
    assert len(calls) == 2
    np.testing.assert_array_equal(np.load(file), value)  # rewritten whole
    audio.cached_feature(clip, compute, {"kind": "test"}, cache)
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_face_cache_recovers_from_partial_files(tmp_path, monkeypatch, damage):
    from mer_utils import faces

    clip = tmp_path / "01-01-01-01-01-01-01.mp4"
    clip.write_bytes(b"video")
    crops = faces.ClipFaces(
        faces=np.zeros((2, 8, 8, 3), dtype=np.uint8),
        detectors=["mtcnn", "mtcnn"],
        confidences=np.ones(2),
        boxes=np.zeros((2, 4)),
    )
    monkeypatch.setattr(faces, "extract_clip_faces", lambda path, params: crops)
    cache = tmp_path / "faces"
    _, computed = faces.cached_clip_faces(clip, cache_dir=cache)
    assert computed
    (file,) = cache.glob("*.npz")
    file.write_bytes(b"" if damage == "empty" else file.read_bytes()[:60])
    again, computed = faces.cached_clip_faces(clip, cache_dir=cache)
    assert computed and again.faces.shape == (2, 8, 8, 3)
    assert faces.cached_clip_faces(clip, cache_dir=cache)[1] is False


def test_text_embedding_cache_recovers_from_a_zero_byte_file(tmp_path, monkeypatch):
    from mer_utils.models.text import SentenceEmbeddings

    class Encoder:
        def encode(self, texts, batch_size, normalize_embeddings):
            return np.ones((len(texts), 384), dtype=np.float32)

    embedder = SentenceEmbeddings(cache_dir=str(tmp_path))
    monkeypatch.setattr(embedder, "_encoder", lambda: Encoder())
    cache_file = embedder._cache_file()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_bytes(b"")
    assert embedder.transform(["hello there"]).shape == (1, 384)
    with np.load(cache_file) as saved:
        assert len(saved["keys"]) == 1


def test_cut_short_whisper_model_in_the_cache_is_joined_again(tmp_path, monkeypatch):
    import hashlib

    from mer_utils import whisper_encoder

    data = tmp_path / "wheel"
    data.mkdir()
    halves = [b"first half " * 100, b"second half " * 100]
    for number, half in enumerate(halves, start=1):
        (data / f"model.bin.part{number}").write_bytes(half)
    for name in whisper_encoder.PACKAGED_FILES:
        (data / name).write_text(f"{name} contents")
    monkeypatch.setattr(whisper_encoder, "_packaged_part", lambda module, name: data / name)
    monkeypatch.setattr(whisper_encoder, "PACKAGED_SHA256", hashlib.sha256(b"".join(halves)).hexdigest())
    monkeypatch.delenv(whisper_encoder.MODEL_DIR_ENV, raising=False)
    folder = whisper_encoder.model_dir(tmp_path / "cache")
    (folder / "model.bin").write_bytes(b"first half ")  # what a crash during an older join leaves
    (folder / "config.json").write_bytes(b"")
    assert whisper_encoder.model_dir(tmp_path / "cache") == folder
    assert (folder / "model.bin").read_bytes() == b"".join(halves)
    assert (folder / "config.json").read_text() == "config.json contents"


def test_cache_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "feature.npy"
    runs.atomic_write_bytes(target, b"old")

    def broken_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        runs.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["feature.npy"]


# Archives: verified member by member, extracted all or nothing.


def _zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _corrupt_member(path: Path, data: bytes) -> None:
    raw = path.read_bytes()
    assert raw.count(data) == 1
    path.write_bytes(raw.replace(data, bytes(255 - b for b in data)))


def test_crc_corrupt_member_is_named_and_nothing_is_written(tmp_path):
    from mer_utils.ravdess import safe_extract

    good = b"A" * 64
    bad = b"0123456789" * 10
    archive = _zip(tmp_path / "a.zip", {"Actor_01/01-01-01-01-01-01-01.mp4": good, "Actor_01/02.mp4": bad})
    _corrupt_member(archive, bad)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=r"member 'Actor_01/02\.mp4' is corrupt"):
        safe_extract(archive, dest)
    assert not dest.exists() or not any(dest.rglob("*"))


def test_symlink_member_is_refused_before_anything_is_written(tmp_path):
    from mer_utils.ravdess import safe_extract

    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("Actor_01/01-01-01-01-01-01-01.mp4", b"video")
        link = zipfile.ZipInfo("Actor_01/passwords")
        link.external_attr = 0o120777 << 16
        handle.writestr(link, "/etc/passwd")
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=r"member 'Actor_01/passwords' is a symbolic link"):
        safe_extract(archive, dest)
    assert not dest.exists()


def test_absolute_member_is_refused(tmp_path):
    from mer_utils.ravdess import safe_extract

    archive = _zip(tmp_path / "abs.zip", {"/tmp/evil.mp4": b"x"})
    with pytest.raises(ValueError, match="outside"):
        safe_extract(archive, tmp_path / "dest")


def test_zero_byte_archive_is_named(tmp_path):
    from mer_utils.ravdess import safe_extract

    (tmp_path / "empty.zip").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.zip: not a valid zip archive"):
        safe_extract(tmp_path / "empty.zip", tmp_path / "dest")


def test_extraction_adds_to_an_existing_folder(tmp_path):
    from mer_utils.ravdess import safe_extract

    dest = tmp_path / "dest"
    safe_extract(_zip(tmp_path / "a.zip", {"Actor_01/one.mp4": b"1"}), dest)
    safe_extract(_zip(tmp_path / "b.zip", {"Actor_01/two.mp4": b"2", "Actor_02/three.mp4": b"3"}), dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "Actor_01/one.mp4",
        "Actor_01/two.mp4",
        "Actor_02/three.mp4",
    ]


def test_download_of_a_corrupt_archive_names_the_member_and_drops_the_cache(loopback_server, tmp_path):
    from mer_utils.ravdess import download_ravdess

    served, url = loopback_server
    bad = b"corrupted-video-bytes" * 4
    archive = _zip(served / "Video_Speech_Actor_07.zip", {"Actor_07/01-01-01-01-01-01-07.mp4": bad})
    _corrupt_member(archive, bad)
    registry = {"video-speech-07": {"name": archive.name, "md5": None}}
    dest = tmp_path / "ravdess"
    with pytest.raises(ValueError, match=r"'Actor_07/01-01-01-01-01-01-07\.mp4' is corrupt"):
        download_ravdess(
            dest, actors=[7], base_url=url, registry=registry, progress=False, checksums_url=None
        )
    assert not list(dest.rglob("*.mp4")) and not (dest / "_downloads" / archive.name).exists()


# --- media, voice activity, faces, lone clips ---
# Clips a user may really hand to `mer predict`: silence, hiss, a 0.2 s clip, a green wall, a lone
# recording with any name, a long or truncated file. Tiny generated files; one small logreg run.


_SR = 16_000
_LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def _tone_bursts(seconds: float, level: float = 0.2, on: float = 0.6) -> np.ndarray:
    """A 180 Hz tone switched on for ``on`` s of every second: voice-like energy that rises and falls."""
    t = np.arange(int(seconds * _SR)) / _SR
    return (level * np.sin(2 * np.pi * 180 * t) * ((t % 1.0) < on)).astype(np.float32)


def _hiss(seconds: float, level: float = 0.05, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * _SR)) * level).astype(np.float32)


@pytest.fixture(scope="module")
def lone_run(demo_dir, tmp_path_factory):
    """A small utterance-statistics logreg audio run on the demo set (features are cached)."""
    from mer_utils.pipelines import audio as pipeline

    out = tmp_path_factory.mktemp("hostile") / "logreg"
    pipeline.train(demo_dir, out, seed=3, model="logreg", smoke=True, progress=False)
    return out


def _fake_run(folder, branch: str, **info):
    """A run folder with run.json only: enough for the checks that come before the model is loaded."""
    from mer_utils.runs import write_run_info

    folder.mkdir(parents=True, exist_ok=True)
    write_run_info(folder, branch, _LABELS, **info)
    return folder


def test_voice_activity_tells_speech_from_silence_hiss_and_a_short_clip():
    assert _voice.voice_activity(_tone_bursts(3.0), _SR).has_speech
    for name, y in {
        "digital silence": np.zeros(3 * _SR, np.float32),
        "loud steady hiss": _hiss(3.0, 0.3),
        "faint hiss": _hiss(3.0, 1e-4),
        "0.2 s of voice": _tone_bursts(0.2, on=1.0),
    }.items():
        activity = _voice.voice_activity(y, _SR)
        assert not activity.has_speech, name
        with pytest.raises(_voice.NoSpeechError, match=r"no speech found \(\d\.\d s of voice"):
            _voice.require_speech(y, _SR, "clip.wav")


@pytest.mark.parametrize(
    "name, sound",
    [
        ("silent.wav", np.zeros(3 * _SR, np.float32)),
        ("short.wav", _tone_bursts(0.2, on=1.0)),
        ("hiss.wav", _hiss(3.0)),
    ],
)
def test_no_speech_makes_audio_unavailable_with_the_reason(lone_run, tmp_path, name, sound):
    from mer_utils.pipelines import audio as pipeline

    clip = _media.write_wav(tmp_path / name, sound, _SR)
    result = pipeline.predict_file(lone_run, clip)
    assert result["available"] is False and result["probabilities"] is None
    assert name in result["reason"] and "no speech found" in result["reason"]


def test_no_speech_makes_spectrogram_unavailable_before_the_model_is_loaded(tmp_path):
    from mer_utils.pipelines import spectrogram

    run = _fake_run(tmp_path / "spec", "spectrogram", seed=1)  # no model.keras: it must not be needed
    clip = _media.write_wav(tmp_path / "quiet.wav", _hiss(2.0, 1e-4), _SR)
    result = spectrogram.predict_file(run, clip)
    assert not result["available"] and "no speech found" in result["reason"]


def test_two_lone_clips_and_a_non_ravdess_name_get_their_own_answers(lone_run, demo_dir, tmp_path):
    from mer_utils.pipelines import audio as pipeline

    sources = sorted((demo_dir / "Actor_01").glob("*.mp4"))
    angry = next(p for p in sources if p.name.split("-")[2] == "05")
    sad = next(p for p in sources if p.name.split("-")[2] == "04")
    results = []
    for source, name in ((angry, "myclip.mp4"), (sad, "holiday video.mp4")):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        results.append(pipeline.predict_file(lone_run, shutil.copy(source, folder / name)))
    for result in results:
        assert result["available"], result["reason"]
        assert result["details"]["speaker_reference_clips"] == 1
        assert result["details"]["speaker_normalisation"] == "shrunk"
        assert np.isclose(sum(result["probabilities"]), 1)
    # Self-normalisation made every lone clip identical; the population statistics must not.
    assert not np.allclose(results[0]["probabilities"], results[1]["probabilities"], atol=1e-3)


def test_a_run_without_stored_speaker_statistics_refuses_a_lone_clip(lone_run, demo_dir, tmp_path):
    from mer_utils.pipelines import audio as pipeline
    from mer_utils.speakers import POPULATION_FILE

    old = tmp_path / "old_run"
    shutil.copytree(lone_run, old)
    (old / POPULATION_FILE).unlink()
    clip = shutil.copy(sorted((demo_dir / "Actor_02").glob("*.mp4"))[0], tmp_path / "mine.mp4")
    result = pipeline.predict_file(old, clip)
    assert not result["available"] and "retrain" in result["reason"]


def test_speaker_statistics_unchanged_with_enough_clips_and_shrunk_with_few():
    from mer_utils import audio, speakers

    rng = np.random.default_rng(0)
    features = rng.normal(3.0, 2.0, size=(40, 5)).astype(np.float32)
    ids = np.repeat(["a", "b"], 20)
    population = (np.zeros(5, np.float32), np.ones(5, np.float32))
    np_old = audio.normalise_per_speaker(features[:, None, :], ids)[:, 0, :]
    np.testing.assert_allclose(speakers.normalise_speakers(features, ids, population), np_old, atol=1e-5)
    lone = speakers.normalise_speakers(features[:1], ["c"], population)
    assert np.abs(lone).max() > 0.1  # not the all-zero vector of self-normalisation
    _, _, how = speakers.speaker_moments(features[:3], population)
    assert how == "shrunk"


def test_a_green_wall_has_no_face_so_video_is_unavailable(tmp_path):
    from mer_utils.pipelines import video

    faces = {"num_frames": 3, "start": 0.2, "stop": 0.8, "size": 32, "margin": 0.2}
    run = _fake_run(tmp_path / "video", "video", faces={**faces, "detectors": ["mtcnn", "haar", "center"]})
    wall = np.zeros((12, 96, 96, 3), np.uint8)
    wall[..., 1] = 180
    clip = _media.write_mp4(tmp_path / "wall.mp4", wall, fps=12, audio=_tone_bursts(1.0), sr=_SR)
    result = video.predict_file(run, clip)
    assert not result["available"] and "no face found in any of the 3 sampled frames" in result["reason"]


def test_a_centre_crop_is_never_called_a_face_at_prediction(tmp_path):
    from mer_utils import faces
    from mer_utils.pipelines import video

    grey = np.full((96, 96, 3), 120, np.uint8)
    # Training keeps its centre-crop fallback (every frame yields a crop) ...
    assert faces.detect_face(grey, ("haar", "center")).detector == "center"
    # ... but prediction drops it: the only detector left (Haar) finds nothing.
    params = {
        "num_frames": 2,
        "start": 0.2,
        "stop": 0.8,
        "size": 32,
        "margin": 0.2,
        "detectors": ["haar", "center"],
    }
    run = _fake_run(tmp_path / "video", "video", faces=params)
    clip = _media.write_mp4(tmp_path / "grey.mp4", np.repeat(grey[None], 6, axis=0), fps=6)
    result = video.predict_file(run, clip)
    assert not result["available"] and "detectors: haar" in result["reason"]
    assert result["details"]["frames_with_face"] == 0


def test_nothing_left_to_fuse_is_one_clear_error(lone_run, tmp_path):
    from mer_utils.predict import NoModalityError, load_models, predict_clip

    loaded = load_models([lone_run], warm_up=False)
    mute = _media.write_mp4(tmp_path / "mute.mp4", np.zeros((6, 32, 32, 3), np.uint8), fps=6)
    with pytest.raises(NoModalityError, match="mute.mp4: no modality could be used.*no audio stream"):
        predict_clip(mute, loaded=loaded)
    hiss = _media.write_wav(tmp_path / "hiss.wav", _hiss(2.0), _SR)
    with pytest.raises(NoModalityError, match="no speech found"):
        predict_clip(hiss, loaded=loaded)


def test_frame_sampling_keeps_only_the_sampled_frames_in_memory(tmp_path):
    import tracemalloc

    frames = np.random.default_rng(0).integers(0, 255, size=(400, 96, 128, 3), dtype=np.uint8)
    clip = _media.write_mp4(tmp_path / "long.mp4", frames, fps=25)
    del frames
    tracemalloc.start()
    sampled = _media.read_frames(clip, 4, start=0.2, stop=0.8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sampled.shape == (4, 96, 128, 3)
    # All 400 decoded frames would be 14.7 MB of arrays; 4 kept frames are 0.15 MB.
    assert peak < 2_000_000, peak


def test_audio_reading_stops_at_its_bound_and_whisper_starts_at_the_voice():
    from mer_utils import whisper_encoder

    y = np.concatenate([np.zeros(20 * _SR, np.float32), _tone_bursts(40.0)])
    window = whisper_encoder.speech_window(y)
    assert window.size == 30 * _SR
    assert _voice.voice_activity(window[:_SR], _SR).seconds > 0.3  # voice from its first second
    short = _tone_bursts(3.0)
    assert whisper_encoder.speech_window(short) is short  # RAVDESS-length clips are unchanged


def test_audio_read_is_bounded(tmp_path):
    clip = _media.write_wav(tmp_path / "long.wav", _tone_bursts(5.0), _SR)
    assert _media.read_audio(clip, _SR, max_seconds=1.0).size == _SR
    assert _media.read_audio(clip, _SR).size == 5 * _SR


def _faststart_copy(source, target):
    """Remux an mp4 with its index (moov) in front, as web downloads are."""
    import av

    with av.open(str(source)) as inp, av.open(str(target), "w", options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return target


def test_a_truncated_faststart_mp4_is_used_with_a_notice(tmp_path):
    frames = np.random.default_rng(1).integers(0, 255, size=(60, 64, 64, 3), dtype=np.uint8)
    whole = _media.write_mp4(tmp_path / "whole.mp4", frames, fps=20, audio=_tone_bursts(3.0), sr=_SR)
    full = _faststart_copy(whole, tmp_path / "full.mp4")
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.5)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", _media.MediaWarning)
        _media.read_frames(full, 4)  # the whole file: no notice
    with pytest.warns(_media.MediaWarning, match="cut.mp4: the video decodes only"):
        sampled = _media.read_frames(cut, 4)
    assert sampled.shape == (4, 64, 64, 3)
    with pytest.warns(_media.MediaWarning, match="cut.mp4: the audio decodes only"):
        _media.read_audio(cut, _SR)


def test_out_of_memory_is_reported_as_such_not_as_a_corrupt_file(tmp_path, monkeypatch):
    import cv2

    clip = _media.write_mp4(tmp_path / "big.mp4", np.zeros((4, 32, 32, 3), np.uint8), fps=4)

    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(cv2, "resize", exhausted)
    with pytest.raises(MemoryError, match="big.mp4: out of memory while decoding the video"):
        _media.read_frames(clip, 2, size=16)
