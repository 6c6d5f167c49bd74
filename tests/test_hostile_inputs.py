"""Hostile but realistic inputs: what a user (or someone sending them a run folder) may hand `mer`.

Every case builds its own tiny files and checks that `mer` answers with a clear error naming the
file (one line, exit code 2, no traceback) or recovers, and that nothing loaded from a file runs
code. docs/bad_input.md lists the same cases, one row each (checked by tests/test_results.py).
"""

from __future__ import annotations

import dataclasses
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
from mer_utils.pipelines import base

LABELS = list(RAVDESS_EMOTIONS)


# --- run folders, model files, caches, archives, CLI ---------------------------------------


class _RunsCommand:
    """Pickled, this object calls os.system on load: the classic hostile model file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _audio_params() -> dict:
    from mer_utils.pipelines.audio_vectors import _vector_features

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
    run = _old_pickle_run(tmp_path / "run", _fitted_pipeline())
    monkeypatch.delenv(runs.TRUST_PICKLE_ENV, raising=False)
    with pytest.raises(runs.UnsafeModelError, match="pickled model"):
        base.load_model(run)
    monkeypatch.setenv(runs.TRUST_PICKLE_ENV, "1")
    assert list(base.load_model(run).classes_) == sorted(LABELS)


def test_trust_pickle_flag_is_scoped_to_one_command(tmp_path, one_clip_dir, capsys, monkeypatch):
    monkeypatch.delenv(runs.TRUST_PICKLE_ENV, raising=False)
    marker = tmp_path / "pwned"
    run = _old_pickle_run(tmp_path / "run", _RunsCommand(marker))
    # With the opt-in the pickle is loaded (and here runs its command): the flag means what it says.
    cli.main(["--trust-pickle", "evaluate", str(run), "--data", str(one_clip_dir)])
    capsys.readouterr()
    assert marker.exists()
    assert runs.TRUST_PICKLE_ENV not in os.environ


def test_pickle_renamed_to_skops_is_refused_as_corrupt(tmp_path, capsys, one_clip_dir, monkeypatch):
    import joblib

    monkeypatch.setenv(runs.TRUST_RUN_ENV, "1")  # even an old run the user trusts: the pickle never runs

    marker = tmp_path / "pwned"
    run = _old_pickle_run(tmp_path / "run", _fitted_pipeline())
    (run / "model.joblib").unlink()
    joblib.dump(_RunsCommand(marker), run / "model.skops")
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "model.skops", "corrupt")
    assert not marker.exists()


def test_skops_file_calling_os_system_is_refused(tmp_path):
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.skops").write_bytes(skops.io.dumps(FunctionTransformer(func=os.system)))
    runs.write_run_info(run, "audio", LABELS, **_audio_params())
    with pytest.raises(runs.UnsafeModelError, match=r"model\.skops.*allow-list.*system"):
        base.load_model(run)


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
    run = _sklearn_run(tmp_path / "run")
    info = runs.read_run_info(run)
    assert not (run / "model.joblib").exists()
    assert info["model_files"] == {"model.skops": runs.file_sha256(run / "model.skops")}
    assert info["model_fingerprint"] == runs.model_fingerprint(LABELS, info["model_files"])
    x = np.random.default_rng(2).normal(size=(3, 5))
    np.testing.assert_allclose(base.load_model(run).predict_proba(x), _fitted_pipeline().predict_proba(x))


def test_retraining_a_folder_with_another_model_type_leaves_one_model(tmp_path, keras_network):
    run = _keras_run(tmp_path / "run", keras_network)
    _sklearn_run(run)
    assert sorted(p.name for p in run.glob("model.*")) == ["model.skops"]
    assert list(base.load_model(run).classes_) == sorted(LABELS)


def test_changed_skops_file_is_refused_by_checksum(tmp_path, capsys, one_clip_dir):
    run = _sklearn_run(tmp_path / "run")
    with (run / "model.skops").open("ab") as stream:
        stream.write(b"\0")
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "model.skops", "SHA-256")


def test_model_file_added_after_training_is_refused(tmp_path, keras_network):
    run = _sklearn_run(tmp_path / "run")
    keras_network.save(run / "model.keras")  # would be preferred over model.skops if trusted
    with pytest.raises(runs.UnsafeModelError, match=r"model\.keras: not among the model files recorded"):
        base.load_model(run)


def test_changed_keras_file_is_refused_by_checksum(tmp_path, keras_network):
    run = _keras_run(tmp_path / "run", keras_network)
    assert base.load_model(run).output_shape[-1] == len(LABELS)
    with (run / "model.keras").open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(runs.UnsafeModelError, match=r"model\.keras: SHA-256"):
        base.load_model(run)


@pytest.mark.parametrize("content", [b"", b"this is not a zip archive"], ids=["empty", "garbage"])
def test_corrupt_keras_file_is_reported_as_corrupt_not_missing(tmp_path, keras_network, content, monkeypatch):
    monkeypatch.setenv(runs.TRUST_RUN_ENV, "1")  # an old run without checksums, trusted by its owner

    run = _keras_run(tmp_path / "run", keras_network, checksums=False)
    (run / "model.keras").write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.keras: corrupt") as caught:
        base.load_model(run)
    assert "not found" not in str(caught.value).lower()


def test_keras_models_load_in_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2)(keras.layers.Dense(len(LABELS))(inputs))
    run = _keras_run(tmp_path / "run", keras.Model(inputs, outputs))

    # A Lambda layer holds Python bytecode: safe_mode refuses to deserialize it.
    with pytest.raises(ValueError, match=r"(?i)model\.keras.*lambda"):
        base.load_model(run)


# run.json: validated on load, labels bound to the weights.


def test_reversed_labels_are_detected(tmp_path, keras_network, capsys, one_clip_dir):
    run = _keras_run(tmp_path / "run", keras_network)
    _edit_run_json(run, labels=LABELS[::-1])
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "run.json", "labels")


def test_reordered_labels_of_a_sklearn_run_are_detected(tmp_path):
    run = _sklearn_run(tmp_path / "run")
    swapped = LABELS[1:2] + LABELS[:1] + LABELS[2:]
    _edit_run_json(run, labels=swapped)
    with pytest.raises(runs.UnsafeModelError, match="not the ones the model was trained with"):
        base.load_model(run)


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
    run = _keras_run(tmp_path / "run", keras_network)
    _edit_run_json(run, branch="video", faces={"no_such_parameter": 1})
    with pytest.raises(ValueError, match=r"run\.json.*'faces'"):
        base.load_model(run)
    _edit_run_json(run, faces=None)
    with pytest.raises(ValueError, match=r"run\.json: the key 'faces'"):
        base.load_model(run)


def test_label_count_must_match_the_network_outputs(tmp_path, keras_network, monkeypatch):
    monkeypatch.setenv(runs.TRUST_RUN_ENV, "1")

    run = _keras_run(tmp_path / "run", keras_network, checksums=False)  # an old run: no fingerprint
    _edit_run_json(run, labels=LABELS[:7])
    with pytest.raises(ValueError, match="lists 7 labels but model.keras has 8 outputs"):
        base.load_model(run)


def test_sklearn_classes_must_be_among_the_labels(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.TRUST_PICKLE_ENV, "1")
    run = _old_pickle_run(tmp_path / "run", _fitted_pipeline())
    _edit_run_json(run, labels=["furious" if label == "angry" else label for label in LABELS])
    with pytest.raises(ValueError, match=r"predicts \['angry'\]"):
        base.load_model(run)


def test_run_without_a_model_file(tmp_path, capsys, one_clip_dir):
    run = _sklearn_run(tmp_path / "run")
    (run / "model.skops").unlink()
    _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "no model", "mer train audio")


def test_recorded_extra_file_missing_is_named(tmp_path):
    run = tmp_path / "run"
    runs.save_model(run, _fitted_pipeline(), "sklearn")
    (run / "normalisation.npz").write_bytes(b"statistics")
    runs.write_run_info(run, "audio", LABELS, extra_model_files=("normalisation.npz",), **_audio_params())
    assert set(runs.read_run_info(run)["model_files"]) == {"model.skops", "normalisation.npz"}
    (run / "normalisation.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"normalisation\.npz: model file missing"):
        base.load_model(run)


def test_checksum_entry_outside_the_run_folder_is_refused(tmp_path):
    run = _sklearn_run(tmp_path / "run")
    (tmp_path / "elsewhere.bin").write_bytes(b"x")
    hashes = {"model.skops": runs.file_sha256(run / "model.skops"), "../elsewhere.bin": "0" * 64}
    _edit_run_json(run, model_files=hashes, model_fingerprint=runs.model_fingerprint(LABELS, hashes))
    with pytest.raises(runs.UnsafeModelError, match="outside the run folder"):
        base.load_model(run)


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
    """A voiced sound on for ``on`` s of every second: harmonics of a pitch gliding around 150 Hz, as a voice's does."""
    t = np.arange(int(seconds * _SR)) / _SR
    pitch = 150 * (1 + 0.15 * np.sin(2 * np.pi * 1.3 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / _SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (level * 0.6 * voiced * ((t % 1.0) < on)).astype(np.float32)


def _hiss(seconds: float, level: float = 0.05, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * _SR)) * level).astype(np.float32)


@pytest.fixture(scope="module")
def lone_run(demo_dir, tmp_path_factory):
    """A small utterance-statistics logreg audio run on the demo set (features are cached)."""
    out = tmp_path_factory.mktemp("hostile") / "logreg"
    base.train("audio", demo_dir, out, seed=3, model="logreg", smoke=True, progress=False)
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
    clip = _media.write_wav(tmp_path / name, sound, _SR)
    result = base.predict_file(lone_run, clip)
    assert result["available"] is False and result["probabilities"] is None
    assert name in result["reason"] and "no speech found" in result["reason"]


def test_no_speech_makes_spectrogram_unavailable_before_the_model_is_loaded(tmp_path):
    run = _fake_run(tmp_path / "spec", "spectrogram", seed=1)  # no model.keras: it must not be needed
    clip = _media.write_wav(tmp_path / "quiet.wav", _hiss(2.0, 1e-4), _SR)
    result = base.predict_file(run, clip)
    assert not result["available"] and "no speech found" in result["reason"]


def test_two_lone_clips_and_a_non_ravdess_name_get_their_own_answers(lone_run, demo_dir, tmp_path):
    sources = sorted((demo_dir / "Actor_01").glob("*.mp4"))
    angry = next(p for p in sources if p.name.split("-")[2] == "05")
    sad = next(p for p in sources if p.name.split("-")[2] == "04")
    results = []
    for source, name in ((angry, "myclip.mp4"), (sad, "holiday video.mp4")):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        results.append(base.predict_file(lone_run, shutil.copy(source, folder / name)))
    for result in results:
        assert result["available"], result["reason"]
        assert result["details"]["speaker_reference_clips"] == 1
        assert result["details"]["speaker_normalisation"] == "shrunk"
        assert np.isclose(sum(result["probabilities"]), 1)
    # Self-normalisation made every lone clip identical; the population statistics must not.
    assert not np.allclose(results[0]["probabilities"], results[1]["probabilities"], atol=1e-3)


def test_a_run_without_stored_speaker_statistics_refuses_a_lone_clip(lone_run, demo_dir, tmp_path):
    from mer_utils.speakers import POPULATION_FILE

    old = tmp_path / "old_run"
    shutil.copytree(lone_run, old)
    (old / POPULATION_FILE).unlink()
    clip = shutil.copy(sorted((demo_dir / "Actor_02").glob("*.mp4"))[0], tmp_path / "mine.mp4")
    result = base.predict_file(old, clip)
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
    faces = {"num_frames": 3, "start": 0.2, "stop": 0.8, "size": 32, "margin": 0.2}
    run = _fake_run(tmp_path / "video", "video", faces={**faces, "detectors": ["mtcnn", "haar", "center"]})
    wall = np.zeros((12, 96, 96, 3), np.uint8)
    wall[..., 1] = 180
    clip = _media.write_mp4(tmp_path / "wall.mp4", wall, fps=12, audio=_tone_bursts(1.0), sr=_SR)
    result = base.predict_file(run, clip)
    assert not result["available"] and "no face found in any of the 3 sampled frames" in result["reason"]


def test_a_centre_crop_is_never_called_a_face_at_prediction(tmp_path):
    from mer_utils import faces

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
    result = base.predict_file(run, clip)
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


@pytest.mark.parametrize(("key", "value"), [("sr", -16000), ("n_mfcc", 1e9), ("n_mels", -128)])
def test_out_of_range_preprocessing_in_run_json_is_refused_naming_the_key(
    tmp_path, capsys, one_clip_dir, key, value
):
    # Issue #25 item 3: run.json's checksums bind the model files and labels, not the settings;
    # a hand-edited number must be refused when run.json is read, before it reaches librosa.
    run = _sklearn_run(tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    info["features"][key] = value
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=rf"run\.json: 'features\.{key}' = .* is outside"):
        runs.read_run_info(run)
    clip = next(one_clip_dir.rglob("*.mp4"))
    assert cli.main(["predict", str(clip), "--models", str(run)]) == 2
    err = capsys.readouterr().err
    assert "run.json" in err and f"features.{key}" in err and "Traceback" not in err


def test_settings_numbers_are_range_checked_by_name():
    from mer_utils.branches import check_settings, parameter_problems

    assert parameter_problems({"sr": 16000, "settings": {"epochs": 3, "learning_rate": 1e-3}}) == []
    assert parameter_problems({"settings": {"batch_size": 0}}) == [
        "'settings.batch_size' = 0 is outside [1, 1048576]"
    ]
    assert parameter_problems({"faces": {"size": "big"}})[0].startswith("'faces.size' must be a number")
    assert parameter_problems({"settings": {"fmax": None, "anything_else": -1}}) == []

    @dataclasses.dataclass(frozen=True)
    class Tiny:
        epochs: int = 3
        dropout: float = 0.2

    check_settings(Tiny())
    with pytest.raises(ValueError, match="'dropout' = 1.5 is outside"):
        check_settings(Tiny(dropout=1.5))


# --- issue 25, round two: trust decided from names, runs and fusion files tied together ------
# A model file naming a module, run.json and fusion.json edited with their hashes recomputed, a
# disk that fills up, paths that are not clips, a killed `mer demo-data`, weak runs.


def _rewrite_zip(path: Path, edit) -> None:
    """Rewrite a zip (model.skops / model.keras) with ``edit(name, data) -> data`` applied to each member."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(buffer, "w") as target:
        for member in source.infolist():
            target.writestr(member, edit(member.filename, source.read(member)))
    path.write_bytes(buffer.getvalue())


def _recompute_hashes(run_dir: Path, labels=None) -> None:
    """What anyone who can edit run.json can do: record the current files' hashes and fingerprint."""
    info = json.loads((run_dir / "run.json").read_text())
    labels = info["labels"] if labels is None else labels
    hashes = {name: runs.file_sha256(run_dir / name) for name in info["model_files"]}
    _edit_run_json(
        run_dir, labels=labels, model_files=hashes, model_fingerprint=runs.model_fingerprint(labels, hashes)
    )


class _ImportSpy:
    """A meta-path finder that records every attempt to import a module under ``prefix``."""

    def __init__(self, prefix: str):
        self.prefix, self.attempts = prefix, []

    def find_spec(self, name, path=None, target=None):
        if name.startswith(self.prefix):
            self.attempts.append(name)
        return None


def _f2py_skops_run(run_dir: Path) -> Path:
    """A real audio run whose model.skops names a type in numpy.f2py.__main__ (importing it runs f2py)."""
    _sklearn_run(run_dir)

    def edit(name, data):
        if name != "schema.json":
            return data
        schema = json.loads(data)
        schema["content"]["content"]["steps"]["content"][0]["content"][1].update(
            {"__module__": "numpy.f2py.__main__", "__class__": "main", "__loader__": "ObjectNode"}
        )
        return json.dumps(schema).encode()

    _rewrite_zip(run_dir / "model.skops", edit)
    _recompute_hashes(run_dir)
    return run_dir


def test_skops_naming_numpy_f2py_is_refused_before_any_import(tmp_path, capsys, one_clip_dir, monkeypatch):
    import subprocess
    import sys

    run = _f2py_skops_run(tmp_path / "run")
    assert "numpy.f2py.__main__" in (run / "model.skops").read_bytes().decode("latin-1")
    for name in [m for m in sys.modules if m.startswith("numpy.f2py")]:
        monkeypatch.delitem(sys.modules, name)
    spy = _ImportSpy("numpy.f2py")
    monkeypatch.setattr(sys, "meta_path", [spy, *sys.meta_path])
    started = []
    monkeypatch.setattr(subprocess.Popen, "__init__", lambda self, *a, **k: started.append(a) or 1 / 0)
    monkeypatch.setattr(os, "system", lambda command: started.append(command) or 1)
    _fails_cleanly(
        ["evaluate", run, "--data", one_clip_dir], capsys, "model.skops", "numpy.f2py.__main__.main"
    )
    assert spy.attempts == [] and not [m for m in sys.modules if m.startswith("numpy.f2py")]
    assert started == []


def test_skops_trust_is_decided_without_importing_anything(tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys

    good = runs.save_model(tmp_path / "good", _fitted_pipeline(), "sklearn").read_bytes()
    bad = (_f2py_skops_run(tmp_path / "bad") / "model.skops").read_bytes()
    spy = _ImportSpy("")
    monkeypatch.setattr(sys, "meta_path", [spy, *sys.meta_path])
    calls = []
    monkeypatch.setattr(socket.socket, "connect", lambda *a: calls.append(("connect", a)))
    monkeypatch.setattr(subprocess.Popen, "__init__", lambda *a, **k: calls.append(("popen", a)))
    before = set(sys.modules)
    assert runs.skops_refused_names(good) == []
    assert runs.skops_refused_names(bad) == ["numpy.f2py.__main__.main"]
    assert set(sys.modules) == before and spy.attempts == [] and calls == []


@pytest.mark.parametrize(
    "node",
    [
        {"__module__": "sklearn", "__class__": "utils", "__loader__": "ObjectNode"},  # a prefix is no name
        {
            "__module__": "numpy",
            "__class__": "load",
            "__loader__": "FunctionNode",
        },  # a real, unlisted function
        {"__module__": "builtins", "__class__": "dict", "__loader__": "SomeFutureNode"},  # an unknown loader
    ],
    ids=["package-prefix", "unlisted-function", "unknown-loader"],
)
def test_only_exact_allow_listed_names_pass(tmp_path, node):
    run = _sklearn_run(tmp_path / "run")

    def edit(name, data):
        if name != "schema.json":
            return data
        schema = json.loads(data)
        schema["content"]["content"]["steps"]["content"][0]["content"][1].update(node)
        return json.dumps(schema).encode()

    _rewrite_zip(run / "model.skops", edit)
    assert runs.skops_refused_names((run / "model.skops").read_bytes())


def test_every_scikit_learn_model_mer_trains_is_on_the_allow_list():
    import skops.io

    from mer_utils.pipelines.audio_vectors import SKLEARN_MODELS, build_sklearn_model
    from mer_utils.pipelines.text_candidates import fit_classical

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)), np.repeat(["joy", "fear", "anger", "shame"], 10)
    models = {f"audio {name}": build_sklearn_model(name, seed=0).fit(x, y) for name in SKLEARN_MODELS}
    words = ["happy sunny day", "scared of the dark", "so angry now", "ashamed of it", "what a joy"]
    texts = [f"{words[i % 5]} {i}" for i in range(40)]
    fitted = fit_classical(["lr", "svm", "nb", "dt", "rf", "lr+svm"], texts, list(y), seed=0, smoke=True)
    models.update({f"text {name}": candidate.model for name, candidate in fitted.items()})
    for name, model in models.items():
        data = skops.io.dumps(model)
        assert runs.skops_refused_names(data) == [], name
        assert set(skops.io.get_untrusted_types(data=data)) <= runs.SKOPS_ALLOWED_NAMES, name


# Runs without checksums; the label order stored inside the model file.


def test_run_without_checksums_is_refused_unless_trusted(
    tmp_path, keras_network, capsys, one_clip_dir, monkeypatch
):
    monkeypatch.delenv(runs.TRUST_RUN_ENV, raising=False)
    run = _keras_run(tmp_path / "run", keras_network)
    _edit_run_json(run, model_files=None, model_fingerprint=None)
    line = _fails_cleanly(["evaluate", run, "--data", one_clip_dir], capsys, "run.json", "model_files")
    assert "--trust-run" in line and runs.TRUST_RUN_ENV in line
    monkeypatch.setenv(runs.TRUST_RUN_ENV, "1")
    assert base.load_model(run).output_shape[-1] == len(LABELS)


def test_trust_run_flag_is_scoped_to_one_command(tmp_path, keras_network, capsys, one_clip_dir, monkeypatch):
    monkeypatch.delenv(runs.TRUST_RUN_ENV, raising=False)
    run = _keras_run(tmp_path / "run", keras_network)
    _edit_run_json(run, model_files=None, model_fingerprint=None, labels=LABELS[::-1])
    # Trusted, the run gets past the checksums and is refused by the labels stored in model.keras.
    assert cli.main(["--trust-run", "evaluate", str(run), "--data", str(one_clip_dir)]) == 2
    err = capsys.readouterr().err
    assert "mer evaluate: error:" in err and "model.keras was trained with" in err and "Traceback" not in err
    assert runs.TRUST_RUN_ENV not in os.environ


@pytest.mark.parametrize("kind", ["keras", "skops"])
def test_reversed_labels_with_recomputed_hashes_are_refused(
    tmp_path, keras_network, capsys, one_clip_dir, kind
):
    run = _keras_run(tmp_path / "run", keras_network) if kind == "keras" else _sklearn_run(tmp_path / "run")
    assert runs.model_file_labels(run / f"model.{kind}") == LABELS
    _recompute_hashes(run, labels=LABELS[::-1])
    line = _fails_cleanly(
        ["evaluate", run, "--data", one_clip_dir], capsys, "run.json", f"model.{kind} was trained with"
    )
    assert str(LABELS) in line


def test_stored_labels_survive_keras_safe_mode_and_skops_loading(tmp_path, keras_network):
    keras_run = _keras_run(tmp_path / "keras", keras_network)
    x = np.random.default_rng(3).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(
        base.load_model(keras_run).predict(x, verbose=0),
        keras_network.predict(x, verbose=0),
        rtol=1e-5,
    )
    skops_run = _sklearn_run(tmp_path / "skops")
    assert list(base.load_model(skops_run).classes_) == sorted(LABELS)
    with zipfile.ZipFile(skops_run / "model.skops") as archive:
        assert json.loads(archive.read(runs.LABELS_MEMBER)) == {"labels": LABELS}


# fusion.json tied to its runs.


def _fusion_run(run_dir: Path, branch: str, seed: int, labels=LABELS) -> Path:
    """A run folder with a (tiny, distinct) model file, run.json and validation and test predictions."""
    from mer_utils.evaluation import prediction_table

    run_dir.mkdir(parents=True, exist_ok=True)
    runs.save_model(run_dir, _fitted_pipeline(), "sklearn")
    (run_dir / "weights.bin").write_bytes(f"{branch} {seed}".encode())
    runs.write_run_info(run_dir, branch, labels, extra_model_files=("weights.bin",), seed=seed)
    rng = np.random.default_rng(seed)
    for split, count in (("val", 40), ("test", 24)):
        truth = [labels[i % len(labels)] for i in range(count)]
        probabilities = rng.dirichlet(np.ones(len(labels)), size=count)
        probabilities[np.arange(count), [labels.index(t) for t in truth]] += 1.0
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        ids = [f"01-01-01-01-01-{i:02d}-{split}" for i in range(count)]
        runs.write_predictions(run_dir, split, prediction_table(probabilities, labels, ids, truth))
    return run_dir


@pytest.fixture()
def fused(tmp_path):
    """Two runs (audio, spectrogram) and the `mer fuse` folder fitted on them."""
    from mer_utils.fusion.io import fuse_runs

    audio = _fusion_run(tmp_path / "audio_logreg", "audio", 1)
    spectrogram = _fusion_run(tmp_path / "spectrogram", "spectrogram", 2)
    fuse_runs([audio, spectrogram], tmp_path / "fusion", n_boot=20)
    return audio, spectrogram, tmp_path / "fusion"


def test_fusion_file_records_each_runs_fingerprint(fused):
    from mer_utils.fusion.io import fusion_parameters_for_runs

    audio, spectrogram, folder = fused
    saved = json.loads((folder / "fusion.json").read_text())
    assert saved["modalities"]["audio"]["model_fingerprint"] == runs.read_run_info(audio)["model_fingerprint"]
    parameters = fusion_parameters_for_runs([audio, spectrogram], folder)
    assert set(parameters["modalities"]) == {"audio", "spectrogram"}


def test_fusion_file_of_another_run_is_refused_naming_both(fused, tmp_path, capsys, one_clip_dir):
    _, spectrogram, folder = fused
    whisper = _fusion_run(tmp_path / "audio_whisper", "audio", 3)  # another audio model, same branch
    clip = next(one_clip_dir.rglob("*.mp4"))
    line = _fails_cleanly(
        ["predict", clip, "--models", whisper, spectrogram, "--fusion", folder],
        capsys,
        "fusion.json",
        "fingerprint",
    )
    assert str(whisper) in line and str(folder / "fusion.json") in line


def test_fusion_file_with_other_labels_or_no_fingerprints_is_refused(fused, monkeypatch):
    from mer_utils.fusion.io import fusion_parameters_for_runs

    audio, spectrogram, folder = fused
    path = folder / "fusion.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "labels": LABELS[::-1]}))
    with pytest.raises(
        ValueError, match=r"fusion\.json: fitted on the labels .*audio_logreg/run\.json lists"
    ):
        fusion_parameters_for_runs([audio, spectrogram], folder)
    for entry in saved["modalities"].values():
        entry.pop("model_fingerprint")
    path.write_text(json.dumps(saved))
    monkeypatch.delenv(runs.TRUST_RUN_ENV, raising=False)
    with pytest.raises(
        ValueError, match=r"fusion\.json: records no model fingerprint for 'audio'.*--trust-run"
    ):
        fusion_parameters_for_runs([audio, spectrogram], folder)
    monkeypatch.setenv(runs.TRUST_RUN_ENV, "1")
    assert set(fusion_parameters_for_runs([audio, spectrogram], folder)["modalities"]) == {
        "audio",
        "spectrogram",
    }


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda p: p["modalities"]["audio"].update(temperature=1e-300),
            r"temperature of 'audio' must be in \[0.05, 20.0\]",
        ),
        (lambda p: p["modalities"]["audio"].update(temperature=1e6), r"temperature of 'audio' must be in"),
        (lambda p: p["parameters"].update(gamma=1e6), r"parameters.gamma must be in \[0.0, 32.0\]"),
        (
            lambda p: p["parameters"].update(confidence_exponent=50),
            r"parameters.confidence_exponent must be in \[0.0, 2.0\]",
        ),
    ],
    ids=["tiny-temperature", "huge-temperature", "huge-gamma", "huge-alpha"],
)
def test_fusion_temperatures_and_exponents_are_bounded(fused, edit, message):
    from mer_utils.fusion.parameters import load_fusion_parameters

    folder = fused[2]
    saved = json.loads((folder / "fusion.json").read_text())
    edit(saved)
    (folder / "fusion.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=message):
        load_fusion_parameters(folder)


# Also: paths that are not clips, the wrong kind of --data, permissions, full disks, umask,
# a killed `mer demo-data`, clashing archive members, weak runs.


def test_a_clip_that_cannot_be_read_for_permission_is_not_called_corrupt(tmp_path, monkeypatch):
    import av

    clip = _media.write_wav(tmp_path / "locked.wav", _tone_bursts(1.0), _SR)
    clip.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make FFmpeg answer as it does for a user

        def denied(path, *args, **kwargs):
            raise av.error.PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(av, "open", denied)
    with pytest.raises(PermissionError, match=r"locked\.wav: permission denied.*chmod") as caught:
        _media.read_audio(clip, _SR)
    assert "corrupt" not in str(caught.value)
    # Also a MediaError: batch jobs skip the clip with this reason instead of stopping.
    assert isinstance(caught.value, _media.MediaError)


@pytest.mark.parametrize(
    ("argument", "needles"),
    [
        ("folder", ("clip.mp4: is a folder, not a clip", "mer evaluate")),
        ("-", ("'-': mer predict does not read standard input",)),
        (
            "https://example.com/clip.mp4",
            ("https://example.com/clip.mp4: is a https URL", "download it first"),
        ),
        ("missing", ("nothing.mp4: no such file", "give the path of a video or audio file")),
    ],
)
def test_predict_says_what_a_non_clip_argument_is(tmp_path, capsys, argument, needles):
    (tmp_path / "clip.mp4").mkdir()
    clip = {"folder": tmp_path / "clip.mp4", "missing": tmp_path / "nothing.mp4"}.get(argument, argument)
    _fails_cleanly(["predict", clip, "--models", tmp_path], capsys, *needles)


def test_train_says_what_the_wrong_kind_of_data_is(tmp_path, capsys):
    csv = tmp_path / "emotions.csv"
    csv.write_text("Emotion,Text\njoy,hello\n")
    _fails_cleanly(
        ["train", "audio", "--data", csv, "--out", tmp_path / "run"],
        capsys,
        "emotions.csv: is a CSV file; audio needs a folder of RAVDESS clips",
        "mer train text",
    )
    _fails_cleanly(
        ["train", "text", "--data", tmp_path, "--out", tmp_path / "run"],
        capsys,
        "is a folder; text needs a CSV",
    )
    assert not (tmp_path / "run").exists()


def _write_tiny_run(out: Path) -> None:
    """A finished run through the one schema writer (model saved first, then write_run)."""
    from mer_utils.evaluation import prediction_table
    from mer_utils.pipelines.base import write_run

    runs.save_model(out, _fitted_pipeline(), "sklearn")
    table = prediction_table(np.full((2, len(LABELS)), 1 / len(LABELS)), LABELS, ["a", "b"], LABELS[:2])
    write_run(
        out,
        branch="audio",
        labels=LABELS,
        model="logreg",
        seed=0,
        smoke=True,
        data="d",
        split={},
        tables={"val": table, "test": table},
        info={k: v for k, v in _audio_params().items() if k not in ("model", "seed")},
    )


def test_a_full_disk_leaves_no_folder_that_looks_like_a_run(tmp_path, capsys, one_clip_dir, monkeypatch):
    import errno

    real_write = runs.atomic_write_bytes

    def disk_full_at_metrics(path, data):
        if Path(path).name == "metrics.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(runs, "atomic_write_bytes", disk_full_at_metrics)
    with pytest.raises(OSError, match="No space left"):
        _write_tiny_run(tmp_path / "new")
    _fails_cleanly(["evaluate", tmp_path / "new", "--data", one_clip_dir], capsys, "not a run folder")
    monkeypatch.setattr(runs, "atomic_write_bytes", real_write)
    _write_tiny_run(tmp_path / "old")  # a finished run, trained again into the same folder
    assert runs.read_run_info(tmp_path / "old")
    monkeypatch.setattr(runs, "atomic_write_bytes", disk_full_at_metrics)
    with pytest.raises(OSError, match="No space left"):
        _write_tiny_run(tmp_path / "old")
    _fails_cleanly(["evaluate", tmp_path / "old", "--data", one_clip_dir], capsys, "not a run folder")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_run_files_honour_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        _write_tiny_run(tmp_path / "run")
    finally:
        os.umask(previous)
    for name in ("model.skops", "run.json", "metrics.json", "predictions_test.csv"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == mode, name


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_kill_9_of_demo_data_leaves_no_worker_alive(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "mer_utils.cli", "demo-data", str(tmp_path / "demo"), "--actors", "24"]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) >= 2, "the demo-data workers never started"
        time.sleep(1.0)  # the workers are making clips
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)]
    finally:
        for pid in {parent.pid, *workers, *_children(parent.pid)}:
            try:  # only the processes this test started (a pid may have been reused)
                if b"demo-data" in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


@pytest.mark.parametrize(
    ("members", "existing", "needle"),
    [
        ({"Actor_01": b"x", "Actor_01/a.mp4": b"v"}, None, r"member 'Actor_01' clashes with another member"),
        (
            {"Actor_01/a.mp4": b"v"},
            "file:Actor_01",
            r"member 'Actor_01/a\.mp4' clashes with the file .*Actor_01",
        ),
        ({"Actor_01/a.mp4": b"v", "b.mp4": b"w"}, "folder:b.mp4", r"member 'b\.mp4' clashes with the folder"),
    ],
    ids=["member-vs-member", "member-under-a-file", "member-over-a-folder"],
)
def test_a_zip_member_that_clashes_names_archive_and_member(tmp_path, members, existing, needle):
    from mer_utils.ravdess import safe_extract

    archive = _zip(tmp_path / "clash.zip", members)
    dest = tmp_path / "dest"
    dest.mkdir()
    if existing:
        kind, name = existing.split(":")
        (dest / name).mkdir() if kind == "folder" else (dest / name).write_bytes(b"mine")
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    with pytest.raises(ValueError, match=rf"clash\.zip: {needle}") as caught:
        safe_extract(archive, dest)
    assert "nothing was extracted" in str(caught.value)
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before


class _FixedModel:
    """A model that always answers the same probabilities (what a weak demo run does)."""

    def __init__(self, probabilities):
        self.probabilities = probabilities


def _fixed_predict_file(run_dir, clip, model=None):
    return {"available": True, "probabilities": list(model.probabilities), "details": {}}


def _weak_loaded(probabilities: dict[str, list[float]], val_accuracy: dict[str, float], n: int = 60) -> dict:
    modalities = {
        name: {"trust": 0.5, "temperature": 1.0, "val_accuracy": val_accuracy[name], "val_n": n}
        for name in probabilities
    }
    return {
        "models": {
            name: {"model": _FixedModel(p), "run_dir": Path(name), "branch": "audio"}
            for name, p in probabilities.items()
        },
        "parameters": {"method": "entropy_trust", "labels": LABELS, "modalities": modalities},
        "labels": LABELS,
        "timings": {},
    }


def test_a_fused_answer_from_weak_runs_says_it_carries_little_information(tmp_path, monkeypatch):
    from mer_utils import predict
    from mer_utils.predict import format_prediction, predict_clip

    monkeypatch.setattr(predict.base, "predict_file", _fixed_predict_file)

    clip = _media.write_wav(tmp_path / "any.wav", _tone_bursts(1.0), _SR)
    peaked = [0.65] + [0.05] * 7
    strong = predict_clip(
        clip, loaded=_weak_loaded({"audio": peaked, "video": peaked}, {"audio": 0.6, "video": 0.5})
    )
    assert strong["weak_answer"] is None and "note:" not in format_prediction(strong)
    chance_runs = predict_clip(
        clip, loaded=_weak_loaded({"audio": peaked, "video": peaked}, {"audio": 0.15, "video": 0.1})
    )
    assert "every run used scored near chance" in chance_runs["weak_answer"]
    flat = [0.16] + [0.12] * 7
    uniform = predict_clip(clip, loaded=_weak_loaded({"audio": flat}, {"audio": 0.6}))
    assert "close to uniform" in uniform["weak_answer"]
    assert "note:    the fused probabilities are close to uniform" in format_prediction(uniform)
    assert json.loads(json.dumps(uniform))["weak_answer"] == uniform["weak_answer"]


# --- issue 25: noise that is not speech, long clips, phone rotation ---
# The level detector called hiss after silence and beeps "voice", only the first 120 s of audio
# were read, and phone rotation was ignored. Each case is a generated signal or clip.


def _coloured_hiss(seconds: float, colour: str, level: float = 0.1, seed: int = 4) -> np.ndarray:
    from mer_utils.audio_augment import coloured_noise

    return level * coloured_noise(colour, seconds, _SR, seed)


def _non_speech() -> dict[str, np.ndarray]:
    t = np.arange(3 * _SR) / _SR
    silence = np.zeros(_SR, np.float32)
    return {
        "silence_then_white_hiss.wav": np.concatenate([silence, _coloured_hiss(2.0, "white")]),
        "silence_then_brown_hiss.wav": np.concatenate([silence, _coloured_hiss(2.0, "brown")]),
        "beeps.wav": (0.3 * np.sin(2 * np.pi * 1000 * t) * ((t % 0.5) < 0.25)).astype(np.float32),
        "hum.wav": sum(0.1 / k * np.sin(2 * np.pi * 60 * k * t) for k in range(1, 8)).astype(np.float32),
        "chord.wav": sum(0.1 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)).astype(np.float32),
    }


@pytest.mark.parametrize("name", sorted(_non_speech()))
def test_hiss_after_silence_beeps_hum_and_chords_make_audio_unavailable(lone_run, tmp_path, name):
    clip = _media.write_wav(tmp_path / name, _non_speech()[name], _SR)
    result = base.predict_file(lone_run, clip)
    assert result["available"] is False, result["details"]
    assert f"{name}: no speech found (0." in result["reason"]


def test_a_long_clip_that_speaks_from_150_s_on_keeps_its_audio(lone_run, tmp_path):
    room = _coloured_hiss(150.0, "pink", level=0.002)
    sound = np.concatenate([room, _tone_bursts(6.0, on=0.8), room[: 4 * _SR]])
    frames = np.zeros((160, 16, 16, 3), np.uint8)  # one frame a second: a 160 s video with sound
    clip = _media.write_mp4(tmp_path / "talk.mp4", frames, fps=1, audio=sound, sr=_SR)
    result = base.predict_file(lone_run, clip)
    assert result["available"], result["reason"]  # was "no speech found (0.0 s of voice in 120.0 s)"
    assert result["details"]["voice_seconds"] > 3.0
    assert _voice.clip_voice_activity(clip).first_voice_seconds() == pytest.approx(150.0, abs=0.6)


def test_a_phone_clip_stored_sideways_has_its_face_found(tmp_path):
    import cv2
    from matplotlib import cbook

    from mer_utils import faces

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        photo = cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    upright = cv2.resize(photo, (128, 160), interpolation=cv2.INTER_AREA)
    stored = np.rot90(upright, -1)  # filmed with the phone turned: the sensor saw the face lying down
    clip = _media.write_mp4(
        tmp_path / "phone.mp4", np.repeat(stored[None], 6, axis=0), fps=6, crf=12, rotation=90
    )
    params = faces.FaceParams(num_frames=3, detectors=("haar",))
    found = faces.extract_clip_faces(clip, params)
    assert list(found.detectors) == ["haar"] * 3  # a face in every sampled frame
    assert faces.detect_face(stored, ("haar",)) is None  # the frames as stored show none
