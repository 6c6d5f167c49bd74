"""One schema for every branch's run folder, and the shared evaluate / predict drivers of pipelines.base.

Each branch trains a tiny smoke run (demo RAVDESS set, a toy text CSV, a synthetic face-image
folder); every run folder is checked against the same schema, then scored through the shared
``evaluate``, ``predict_table`` (with a degradation) and ``predict_file``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_utils.branches import REGISTRY, branch_names, corpus_branches, get_branch, several_source_branches
from mer_utils.config import RAVDESS_EMOTIONS, TEXT_LABELS
from mer_utils.default_runs import default_run
from mer_utils.pipelines import base, branch_module
from mer_utils.runs import read_run_info, validate_run_info
from tests.test_pipelines_faces import write_pattern_folder
from tests.test_text import toy_frame, write_csv

# The registered branches (read before any test registers a toy branch).
BRANCHES = branch_names()


@pytest.fixture(scope="module")
def inputs(demo_dir, tmp_path_factory) -> dict[str, Path]:
    """The data each branch trains on and a file each branch predicts."""
    root = tmp_path_factory.mktemp("schema_inputs")
    text_csv = write_csv(toy_frame(rows_per_label=20, seed=1), root / "toy.csv")
    sentence = root / "note.txt"
    sentence.write_text("I am so happy and delighted today, what a wonderful morning", encoding="utf-8")
    images = write_pattern_folder(root / "patterns", per_label=24, seed=0)
    clip = next(iter(sorted(demo_dir.rglob("*.mp4"))))
    return {
        "ravdess": demo_dir,
        "text": text_csv,
        "sentence": sentence,
        "images": images,
        "image": next(iter(sorted(images.rglob("*.png")))),
        "clip": clip,
    }


# What each kind of input of the registry is, in the inputs fixture: (data to train on, a file to predict).
INPUT_OF = {"clips": ("ravdess", "clip"), "text": ("text", "sentence"), "face images": ("images", "image")}
# Each branch's smoke settings shrunk further, so a schema run takes seconds (the model's options).
TINY = {
    "audio": {"model": "logreg"},
    "spectrogram": {
        "test_actors": [1],
        "val_actors": [2],
        "epochs": 1,
        "augmented_copies": 0,
        "image_size": 32,
    },
    # Started from the bundled faces run (a small CNN): a ResNet50's first step alone takes a minute
    # here; the ResNet50 run folder is checked in tests/test_models_video.py.
    "video": {"num_frames": 2, "clips_per_actor": 4, "frozen_epochs": 1, "init": default_run("faces")},
    "text": {"model": "nb"},
    "faces": {"epochs": 1, "val_share": 0.2, "test_share": 0.2},
}


def _train(branch: str, data: dict[str, Path], out: Path) -> dict:
    """A tiny smoke run of ``branch`` through the one training driver."""
    where = data[INPUT_OF[get_branch(branch).reads][0]]
    seed = 0 if branch == "faces" else 3
    return base.train(branch, where, out, seed=seed, smoke=True, progress=False, **TINY[branch])


@pytest.fixture(scope="module")
def runs(inputs, tmp_path_factory) -> dict[str, Path]:
    """One tiny run folder per branch, every cache in a temporary folder."""
    root = tmp_path_factory.mktemp("schema_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MER_CACHE_DIR", str(root / "cache"))
        for branch in BRANCHES:
            _train(branch, inputs, root / branch)
        yield {branch: root / branch for branch in BRANCHES}


def _labels(branch: str) -> list[str]:
    return list(get_branch(branch).labels)


@pytest.mark.slow
@pytest.mark.parametrize("branch", BRANCHES)
def test_run_folder_follows_the_one_schema(runs, branch):
    run = runs[branch]
    labels = _labels(branch)
    assert any(run.glob("model.*"))
    info = json.loads((run / "run.json").read_text())
    assert set(base.RUN_KEYS) <= set(info), set(base.RUN_KEYS) - set(info)
    assert info["branch"] == branch and info["labels"] == labels
    validate_run_info(info, run, complete=True)
    assert read_run_info(run, complete=True)["model_fingerprint"] == info["model_fingerprint"]

    metrics = json.loads((run / "metrics.json").read_text())
    assert set(base.METRICS_KEYS) <= set(metrics), set(base.METRICS_KEYS) - set(metrics)
    assert set(base.METRIC_KEYS) <= set(metrics["val"])
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["model"] == info["model"]
    assert metrics["seed"] == info["seed"] and metrics["split"] == info["split"]

    history = json.loads((run / base.HISTORY_FILE).read_text())
    assert tuple(history) == base.HISTORY_KEYS and history["format"] == base.HISTORY_FORMAT
    assert isinstance(history["history"], dict) and isinstance(history["phases"], list)
    assert isinstance(history["members"], list)
    if (run / "model.keras").is_file():
        # Keras models (whatever the branch): one value per epoch run, the same for loss and accuracy.
        assert len(history["history"]["loss"]) >= 1
        assert len(history["history"]["loss"]) == len(history["history"]["accuracy"])
    assert base.read_history(run) == history

    skipped = pd.read_csv(run / base.SKIPPED_FILE)
    assert tuple(skipped.columns) == base.SKIPPED_COLUMNS
    assert len(skipped) == len(metrics["skipped"])

    for split in ("val", "test"):
        table = pd.read_csv(run / f"predictions_{split}.csv", keep_default_na=False)
        assert tuple(table.columns[:4]) == base.PREDICTION_COLUMNS
        probs = [f"prob_{label}" for label in labels]
        assert list(table.columns[4 : 4 + len(labels)]) == probs
        assert len(table) == (metrics["n"] if split == "test" else metrics["val"]["n"])
        np.testing.assert_allclose(table[probs].to_numpy(float).sum(axis=1), 1.0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("branch", BRANCHES)
def test_shared_evaluate_and_predict_file(runs, inputs, branch):
    run = runs[branch]
    data = inputs[INPUT_OF[get_branch(branch).reads][0]]
    metrics = base.evaluate(run, data)
    assert set(base.METRIC_KEYS) <= set(metrics)
    for key in ("branch", "model", "seed", "data", "skipped"):
        assert key in metrics, key
    assert metrics["branch"] == branch and metrics["n"] > 0

    file = inputs[INPUT_OF[get_branch(branch).reads][1]]
    answer = base.predict_file(run, file)
    # Plus, for branches that read images (faces, video), the crops they classified, for display only.
    assert set(answer) - {base.ARRAYS_KEY} == {"available", "reason", "probabilities", "details"}
    if base.ARRAYS_KEY in answer:
        assert branch in ("video", "faces"), f"{branch} hands back arrays"
    assert answer["details"]["path"] == str(file)
    if branch == "video" and not answer["available"]:
        # The demo faces are drawn: a detector may find none; then the reason says so.
        assert "face" in answer["reason"]
    else:
        assert answer["available"], answer["reason"]
        assert len(answer["probabilities"]) == len(_labels(branch))
        assert abs(sum(answer["probabilities"]) - 1.0) < 1e-4

    missing = base.predict_file(run, file.with_name("does-not-exist" + file.suffix))
    assert not missing["available"] and "does-not-exist" in missing["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("branch", BRANCHES)
def test_one_degradation_parameter(runs, inputs, branch):
    run = runs[branch]
    data = inputs[INPUT_OF[get_branch(branch).reads][0]]
    clean = base.predict_table(run, data)
    dropped = base.predict_table(run, data, degradation=("missing", 0.5))
    assert len(dropped) == len(clean)
    assert (dropped["pred_label"] == "").sum() == round(0.5 * len(clean))
    assert (
        dropped.loc[dropped["pred_label"] == "", [c for c in dropped if c.startswith("prob_")]]
        .isna()
        .all()
        .all()
    )
    kind = base.degradation_kind(branch)
    if kind == "missing":
        with pytest.raises(ValueError, match="cannot take"):
            base.predict_table(run, data, degradation=("noise", 0.0))
        return
    level = 0.0 if kind == "noise" else 0.5
    tables = base.degraded_tables(run, data, [level])
    assert set(tables) == {level}
    changed = tables[level]
    assert set(changed["clip_id"]) <= set(clean["clip_id"])
    shared = clean.set_index("clip_id").join(changed.set_index("clip_id"), rsuffix="_degraded", how="inner")
    probs = [c for c in clean if c.startswith("prob_")]
    assert not np.allclose(
        shared[probs].to_numpy(float), np.nan_to_num(shared[[f"{c}_degraded" for c in probs]].to_numpy(float))
    )


def test_read_history_accepts_every_old_format(tmp_path: Path):
    curves = {"loss": [1.0, 0.5], "accuracy": [0.2, 0.6]}
    other = {"loss": [0.9], "accuracy": [0.3]}
    formats = {
        "audio": [curves, other],
        "spectrogram": curves,
        "video": {"history": curves, "phases": [{"name": "head", "epochs": 2}]},
    }
    for name, stored in formats.items():
        run = tmp_path / name
        run.mkdir()
        (run / base.HISTORY_FILE).write_text(json.dumps(stored))
        record = base.read_history(run)
        assert tuple(record) == base.HISTORY_KEYS and record["history"] == curves, name
    assert base.read_history(tmp_path / "audio")["members"] == [curves, other]
    assert base.read_history(tmp_path / "video")["phases"] == [{"name": "head", "epochs": 2}]
    text = tmp_path / "text"
    text.mkdir()
    (text / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "history": curves}))
    assert base.read_history(text)["history"] == curves
    assert base.read_history(tmp_path / "nothing")["history"] == {}
    (text / base.HISTORY_FILE).write_text('"not curves"')
    with pytest.raises(ValueError, match="training curves"):
        base.read_history(text)


def test_write_run_refuses_a_folder_without_a_model_and_schema_keys(tmp_path: Path):
    table = pd.DataFrame({"clip_id": ["a"], "path": [""], "true_label": ["joy"], "pred_label": ["joy"]})
    common = dict(branch="text", labels=list(TEXT_LABELS), model="nb", seed=0, smoke=True, data="x", split={})
    with pytest.raises(FileNotFoundError, match="save the model"):
        base.write_run(tmp_path, tables={"val": table, "test": table}, **common)
    (tmp_path / "model.skops").write_bytes(b"x")
    with pytest.raises(ValueError, match="fixed by the schema"):
        base.write_run(tmp_path, tables={"val": table, "test": table}, info={"seed": 1}, **common)


def test_degradation_values_are_checked():
    assert base.as_degradation(("noise", 5)) == base.Degradation("noise", 5)
    assert base.as_degradation({"kind": "occlusion", "level": 0.25}).level == 0.25
    assert base.as_degradation(None) is None
    with pytest.raises(ValueError, match="unknown degradation"):
        base.Degradation("blur", 1.0)
    with pytest.raises(ValueError, match="share between 0 and 1"):
        base.Degradation("occlusion", 1.5)
    with pytest.raises(ValueError, match="kind, level"):
        base.as_degradation(3.0)


def test_choose_on_validation_takes_the_best_mean_of_accuracy_and_macro_f1():
    scores = {"a": {"accuracy": 0.8, "macro_f1": 0.4}, "b": {"accuracy": 0.7, "macro_f1": 0.6}}
    assert base.choose_on_validation(scores) == "b"
    with pytest.raises(ValueError, match="no candidate"):
        base.choose_on_validation({})


def test_cache_folder_is_read_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mer_utils import audio, cache, faces

    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "one"))
    assert faces.faces_cache_dir() == tmp_path / "one" / cache.FACES
    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "two"))
    assert faces.faces_cache_dir() == tmp_path / "two" / cache.FACES
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"stands in for a clip: the key reads its size and time")
    value = audio.cached_feature(clip, lambda: np.arange(3.0), {"kind": "test"})
    assert value.tolist() == [0.0, 1.0, 2.0]
    assert len(list((tmp_path / "two" / cache.AUDIO).glob("clip-*.npy"))) == 1
    assert cache.cache_dir(cache.AUDIO, tmp_path / "given") == tmp_path / "given"
    with pytest.raises(ValueError, match="plain folder name"):
        cache.cache_dir("../up")


def test_the_registry_matches_the_branch_modules():
    """Every list of branches derives from the registry; its model variants are the modules' own."""
    from mer_utils import cli, runs
    from mer_utils.models.audio import BUILDERS
    from mer_utils.models.text import TEXT_MODELS
    from mer_utils.pipelines import audio, faces, spectrogram, video
    from mer_utils.pipelines.audio_vectors import SKLEARN_MODELS
    from mer_utils.predict import clip_branches

    assert BRANCHES == ("video", "audio", "spectrogram", "text", "faces")
    assert set(get_branch("video").models) == set(video.MODEL_WEIGHTS)
    assert set(get_branch("faces").models) == set(faces.MODELS)
    assert set(get_branch("spectrogram").models) == set(spectrogram.MODELS)
    assert set(get_branch("audio").models) == {*BUILDERS, *SKLEARN_MODELS, audio.ENSEMBLE_MODEL}
    assert get_branch("text").models == ("best", *TEXT_MODELS)
    for branch in BRANCHES:
        assert branch_module(branch).BRANCH == branch
        assert get_branch(branch).labels == (TEXT_LABELS if branch == "text" else RAVDESS_EMOTIONS)
    assert clip_branches() == ("video", "audio", "spectrogram", "faces")
    assert several_source_branches() == ("text", "audio", "spectrogram")
    assert corpus_branches() == ("audio", "spectrogram")
    assert dict(runs.BRANCH_KEYS) == {name: dict(b.run_keys) for name, b in REGISTRY.items()}
    parser = cli.build_parser()
    for branch in BRANCHES:
        assert parser.parse_args(["train", branch, "--data", "d", "--out", "o"]).branch == branch
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "speech", "--data", "d", "--out", "o"])
    assert {base.degradation_kind(b) for b in BRANCHES} == {"noise", "occlusion", "missing"}
    from mer_utils import cache

    assert {kind for b in REGISTRY.values() for kind in b.caches} == set(cache.KINDS)


def test_an_unknown_branch_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown branch 'speech'.*'video'"):
        branch_module("speech")
    with pytest.raises(ValueError, match="not one of"):
        from mer_utils.branches import Branch

        Branch(name="toy", reads="clips", data_help="x", labels=("a", "b"), models=("m",), default_model="n")
