"""Reading any speech corpus into one index: layouts, label aliases, speaker ids, per-corpus splits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_utils import corpora
from tests.conftest import REAL_DATA

# Sample rate and length of the tiny generated clips.
SR = 16_000
SECONDS = 0.3


def _wav(path: Path, seed: int = 0) -> Path:
    """A short tone plus noise: a real, readable WAV file."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * SECONDS)) / SR
    sound = 0.3 * np.sin(2 * np.pi * (150 + 10 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    soundfile.write(path, sound.astype(np.float32), SR)
    return path


def _folder(root: Path, names: list[str]) -> Path:
    for seed, name in enumerate(names):
        _wav(root / name, seed)
    return root


# Layout -> (file names, expected {speaker: label counts}, what is skipped).
SCHEMES = {
    "ravdess": (
        ["Actor_01/03-01-05-01-01-01-01.wav", "Actor_02/03-01-03-02-01-01-02.wav"],
        {"ravdess:01": {"angry": 1}, "ravdess:02": {"happy": 1}},
    ),
    "crema-d": (
        ["1001_DFA_ANG_XX.wav", "1001_IEO_SAD_HI.wav", "1091_TIE_NEU_XX.wav", "1091_TIE_FEA_XX.wav"],
        {"crema-d:1001": {"angry": 1, "sad": 1}, "crema-d:1091": {"neutral": 1, "fearful": 1}},
    ),
    "emo-db": (
        ["03a01Fa.wav", "03a02Wb.wav", "08b10Ec.wav", "08b10Aa.wav", "16a01Nc.wav", "16b01Ta.wav"],
        {
            "emo-db:03": {"happy": 1, "angry": 1},
            "emo-db:08": {"disgust": 1, "fearful": 1},
            "emo-db:16": {"neutral": 1, "sad": 1},
        },  # fmt: skip
    ),
    "tess": (
        ["OAF_angry/OAF_back_angry.wav", "OAF_ps/OAF_back_ps.wav", "YAF_disgust/YAF_bite_disgust.wav"],
        {"tess:OAF": {"angry": 1, "surprised": 1}, "tess:YAF": {"disgust": 1}},
    ),
    "urdu": (
        [
            "Angry/SM1_F10_A010.wav",
            "Happy/SM1_F11_H011.wav",
            "Sad/SF3_F1_S001.wav",
            "Neutral/SF3_F2_N002.wav",
        ],
        {"urdu:SM1": {"angry": 1, "happy": 1}, "urdu:SF3": {"sad": 1, "neutral": 1}},
    ),
    "turev-db": (
        [
            "Angry/1157_kz_ayna.wav",
            "Calm/1157_sk_ayna.wav",
            "Sad/7895_hl_kalem.wav",
            "Happy/7895_mt_kalem.wav",
        ],
        {"turev-db:1157": {"angry": 1, "calm": 1}, "turev-db:7895": {"sad": 1, "happy": 1}},
    ),
}


@pytest.mark.parametrize("layout", sorted(SCHEMES))
def test_every_naming_scheme_gives_speakers_and_ravdess_labels(tmp_path, layout):
    names, expected = SCHEMES[layout]
    root = _folder(tmp_path / f"my_{layout}", names)
    assert corpora.detect_layout(root) == layout
    index = corpora.read_corpora(root)
    assert set(index["corpus"]) == {layout}
    assert index.attrs["skipped"] == []
    found = {speaker: part["emotion"].value_counts().to_dict() for speaker, part in index.groupby("speaker")}
    assert found == expected
    # One dense integer per speaker, the same for all its clips.
    assert index.groupby("speaker")["actor"].nunique().eq(1).all()
    assert index["actor"].nunique() == len(expected)
    assert all(Path(p).is_file() for p in index["path"])


def test_emodb_boredom_and_an_unknown_folder_label_are_skipped_with_the_reason(tmp_path):
    root = _folder(tmp_path / "emodb", ["03a01Fa.wav", "03a01La.wav", "10b02Wa.wav"])
    index = corpora.read_corpora(root)
    assert sorted(index["emotion"]) == ["angry", "happy"]
    [(path, reason)] = index.attrs["skipped"]
    assert path.endswith("03a01La.wav")
    assert "'langeweile' has no RAVDESS counterpart" in reason and "03a01La.wav" in reason
    # EMO-DB speakers' genders are known: 03 and 10 are men (odd ids).
    assert set(index["gender"]) == {"male"} and set(index["actor"] % 2) == {1}

    generic = _folder(tmp_path / "mine", ["anger/a.wav", "joy/b.wav", "guilt/c.wav", "Sad/d.wav"])
    index = corpora.read_corpora(generic)
    assert sorted(index["emotion"]) == ["angry", "happy", "sad"]
    assert [Path(p).name for p, _ in index.attrs["skipped"]] == ["c.wav"]
    assert "'guilt' has no RAVDESS counterpart" in index.attrs["skipped"][0][1]
    # No speaker ids in this layout: every clip is its own speaker, and the index says so.
    assert index["speaker"].nunique() == len(index) and index.attrs["no_speaker_ids"] == ["mine"]


def test_label_aliases_map_onto_the_eight_ravdess_names():
    cases = {"Anger": "angry", "WUT": "angry", "ang": "angry", "joy": "happy", "Freude": "happy",
             "hap": "happy", "sadness": "sad", "fear": "fearful", "FEA": "fearful", "dis": "disgust",
             "ps": "surprised", "surprise": "surprised", "neu": "neutral", "calm": "calm"}  # fmt: skip
    assert {name: corpora.canonical_label(name) for name in cases} == cases
    assert corpora.canonical_label("boredom") is None and corpora.canonical_label("guilt") is None


def test_manifest_paths_are_relative_to_the_csv_and_bad_rows_are_skipped(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav", "d.wav"):
        _wav(tmp_path / "clips" / name)
    manifest = tmp_path / "lists" / "mine.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "path,label,speaker,corpus\n"
        "../clips/a.wav,angry,1,alpha\n"
        "../clips/b.wav,boredom,1,alpha\n"
        "../clips/c.wav,sadness,1,beta\n"
        "../clips/missing.wav,happy,2,beta\n"
        f"{tmp_path / 'clips' / 'd.wav'},joy,2,\n"
    )
    assert corpora.detect_layout(manifest) == "manifest"
    index = corpora.read_corpora(manifest)
    assert dict(zip(index["speaker"], index["emotion"], strict=True)) == {
        "alpha:1": "angry",
        "beta:1": "sad",
        "mine:2": "happy",
    }
    # Speaker 1 of alpha and speaker 1 of beta are two people.
    assert index["actor"].nunique() == 3
    reasons = [reason for _, reason in index.attrs["skipped"]]
    assert len(reasons) == 2
    assert "mine.csv line 3" in reasons[0] and "'boredom'" in reasons[0]
    assert "mine.csv line 5" in reasons[1] and "no such file" in reasons[1]

    # `mer train audio|spectrogram --data mine.csv` takes it; the video branch does not.
    from mer_utils import cli

    cli._check_train_data("audio", manifest)
    with pytest.raises(ValueError, match="mine.csv: is a CSV file; video needs"):
        cli._check_train_data("video", manifest)

    broken = tmp_path / "broken.csv"
    broken.write_text("file,emotion\nx.wav,angry\n")
    with pytest.raises(ValueError, match=r"broken\.csv: manifest lacks the column\(s\) \['path', 'label'\]"):
        corpora.read_corpora(broken)


def test_a_folder_with_no_known_layout_is_named_and_its_corpus_subfolders_suggested(tmp_path):
    root = tmp_path / "speech"
    _folder(root / "urdu", ["Angry/SM1_F10_A010.wav"])
    _folder(root / "turev", ["Angry/1157_kz_ayna.wav", "Sad/1157_hl_ayna.wav"])
    mixed = (
        r"speech: mixes the layouts .*urdu \(1 files\), turev-db \(2 files\); its subfolders turev, urdu are"
    )
    with pytest.raises(ValueError, match=mixed):
        corpora.read_corpora(root)
    unknown = _folder(tmp_path / "misc", ["x/recording.wav", "take1.wav"])
    with pytest.raises(
        ValueError, match=r"misc: no known corpus layout among its 2 clip file\(s\); expected ravdess"
    ):
        corpora.read_corpora(unknown)
    # A stray file inside a recognised corpus is skipped with the reason, not fatal.
    _wav(root / "urdu" / "notes" / "recording.wav")
    index = corpora.read_corpora(root / "urdu")
    assert len(index) == 1 and "does not follow the urdu scheme" in index.attrs["skipped"][0][1]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        corpora.read_corpora(tmp_path / "nowhere")


def _many_speakers(tmp_path: Path) -> list[Path]:
    """Three small corpora: URDU-like (6 speakers), TurEV-like (4) and EMO-DB-like (5)."""
    urdu = [
        f"{label}/S{g}{n}_F{i}_{label[0]}00{i}.wav"
        for g, n in (("M", 1), ("M", 2), ("M", 3), ("F", 1), ("F", 2), ("F", 3))
        for i, label in enumerate(("Angry", "Sad"), start=1)
    ]
    turev = [
        f"{label}/{speaker}_{code}_kelime.wav"
        for speaker in (1157, 1234, 1358, 1984)
        for label, code in (("Angry", "kz"), ("Calm", "sk"))
    ]
    emodb = [
        f"{speaker}a0{i}{letter}a.wav"
        for speaker in ("03", "08", "09", "10", "11")
        for i, letter in enumerate("WT")
    ]
    return [
        _folder(tmp_path / "urdu", urdu),
        _folder(tmp_path / "turev", turev),
        _folder(tmp_path / "emodb", emodb),
    ]


def test_several_corpora_split_keeps_each_speaker_on_one_side_inside_each_corpus(tmp_path):
    sources = _many_speakers(tmp_path)
    index = corpora.audio_index(sources)
    assert index["speaker"].str.split(":").str[0].tolist() == index["corpus"].tolist()
    assert index.groupby("corpus")["speaker"].nunique().to_dict() == {"urdu": 6, "turev-db": 4, "emo-db": 5}
    # Speaker ids never collide across corpora.
    assert index.groupby("actor")["corpus"].nunique().max() == 1
    for seed in (0, 1, 2):
        parts = corpora.speaker_disjoint_split(index, seed=seed)
        assert parts.groupby("speaker")["split"].nunique().max() == 1
        # Every corpus has speakers in train, val and test.
        assert (parts.groupby("corpus")["split"].nunique() == 3).all()
    again = corpora.speaker_disjoint_split(index, seed=1)
    assert again["split"].tolist() == corpora.speaker_disjoint_split(index, seed=1)["split"].tolist()
    # Fixed test speakers land in the corpus that has them; the other corpora are drawn.
    urdu_ids = sorted(index.loc[index["corpus"] == "urdu", "actor"].unique())
    fixed = corpora.speaker_disjoint_split(index, test_actors=urdu_ids[:2])
    assert (
        sorted(fixed.loc[(fixed["split"] == "test") & (fixed["corpus"] == "urdu"), "actor"].unique())
        == urdu_ids[:2]
    )
    # Both parts fixed (what the spectrogram branch passes, with sizes restating them).
    both = corpora.speaker_disjoint_split(
        index, (10, 2, 3), test_actors=urdu_ids[:2], val_actors=urdu_ids[2:3]
    )
    urdu_parts = both[both["corpus"] == "urdu"].groupby("split")["actor"].nunique().to_dict()
    assert urdu_parts == {"test": 2, "val": 1, "train": 3}
    assert both.groupby("speaker")["split"].nunique().max() == 1
    with pytest.raises(ValueError, match="split sizes .* fit one corpus"):
        corpora.speaker_disjoint_split(index, (10, 2, 3))
    # URDU names carry the gender: men odd, women even, as RAVDESS numbers them.
    urdu = index[index["corpus"] == "urdu"].drop_duplicates("speaker")
    assert all((a % 2 == 1) == (g == "male") for a, g in zip(urdu["actor"], urdu["gender"], strict=True))


def test_a_corpus_with_too_few_speakers_to_split_is_named(tmp_path):
    sources = _many_speakers(tmp_path)[:1] + [
        _folder(tmp_path / "tess", ["OAF_back_angry.wav", "YAF_back_sad.wav"])
    ]
    with pytest.raises(ValueError, match="corpus 'tess': an actor-disjoint split needs at least 3 actors"):
        corpora.speaker_disjoint_split(corpora.audio_index(sources))


def test_the_real_shared_corpora_count_their_speakers_and_labels():
    sources = [
        REAL_DATA / "speech" / "urdu",
        REAL_DATA / "speech" / "turev-db",
        REAL_DATA / "ravdess_speech_16k",
    ]
    if not all(s.is_dir() for s in sources):
        pytest.skip(f"real speech corpora not found under {REAL_DATA}")
    index = corpora.audio_index(sources)
    assert index.attrs["skipped"] == []
    counts = corpora.count_table(index, "corpus")
    assert counts.loc["urdu", ["angry", "happy", "neutral", "sad"]].tolist() == [100] * 4
    assert counts.loc["turev-db", ["angry", "calm", "happy", "sad"]].tolist() == [487, 408, 357, 483]
    assert counts.loc["ravdess", "total"] == 1080 and counts.loc["ravdess", "speakers"] == 18
    # TurEV-DB's six actors; URDU's file names hold 29 distinct speaker ids (the paper reports 38).
    assert counts.loc["turev-db", "speakers"] == 6 and counts.loc["urdu", "speakers"] == 29
    assert set(index.loc[index["corpus"] == "turev-db", "speaker"]) == {
        f"turev-db:{s}" for s in (1157, 1234, 1358, 1984, 6783, 7895)
    }
    parts = corpora.speaker_disjoint_split(index)
    assert parts.groupby("speaker")["split"].nunique().max() == 1
    assert isinstance(corpora.speaker_summary(index), pd.DataFrame)


def test_one_ravdess_folder_gives_the_same_index_and_split_as_before(demo_dir):
    from mer_utils.pipelines import audio
    from mer_utils.ravdess import actor_disjoint_split, audio_takes

    before = audio_takes(demo_dir)
    after = corpora.audio_index(demo_dir)
    pd.testing.assert_frame_equal(after[list(before.columns)], before)
    assert list(after.columns) == [*before.columns, "speaker", "corpus"]
    assert set(after["corpus"]) == {"ravdess"}
    assert (after["speaker"] == [f"ravdess:{a:02d}" for a in after["actor"]]).all()
    assert after.attrs["skipped"] == before.attrs["skipped"]
    for seed in (3, 42):
        old = actor_disjoint_split(before, seed=seed)["split"]
        assert corpora.speaker_disjoint_split(after, seed=seed)["split"].tolist() == old.tolist()
        # The audio branch's own hooks: the same rows, the same split.
        hooked = audio.split(audio.index(demo_dir, audio.SMOKE), audio.SMOKE, seed)
        assert hooked["path"].tolist() == before["path"].tolist() and hooked["split"].tolist() == old.tolist()
    # An index DataFrame (what notebooks pass) gets the same two columns.
    assert corpora.audio_index(before)[["speaker", "corpus"]].equals(after[["speaker", "corpus"]])


def test_mer_train_audio_reads_several_corpora_and_mer_index_counts_them(tmp_path, monkeypatch, capsys):
    import json

    from mer_utils import cli
    from mer_utils.runs import read_predictions

    monkeypatch.setattr(sys.modules[__name__], "SECONDS", 1.0)  # utterance statistics need a second
    sources = _many_speakers(tmp_path)
    assert cli.main(["index", *map(str, sources)]) == 0
    out = capsys.readouterr().out
    assert "30 clips, 15 speakers, 3 corpora" in out
    assert "urdu:SM1" in out and "turev-db:1984" in out and "emo-db:03" in out
    assert "speaker-disjoint split inside each corpus" in out

    run = tmp_path / "run"
    argv = ["train", "audio", "--data", *map(str, sources), "--out", str(run), "--model", "logreg", "--smoke"]
    assert cli.main(argv) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["data"] == ", ".join(map(str, sources))
    split = info["split"]
    assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
    test = read_predictions(run, "test")
    assert set(test["corpus"]) == {"urdu", "turev-db", "emo-db"}
    assert (test["speaker"].str.split(":").str[0] == test["corpus"]).all()
    # Each corpus's own test and validation figures, read off the prediction tables.
    metrics = json.loads((run / "metrics.json").read_text())
    for key, part in (("per_corpus", test), ("val_per_corpus", read_predictions(run, "val"))):
        per_corpus = metrics[key]
        assert set(per_corpus) == {"urdu", "turev-db", "emo-db"}
        for corpus, entry in per_corpus.items():
            rows = part[part["corpus"] == corpus]
            assert entry["n"] == len(rows) and entry["speakers"] == rows["speaker"].nunique()
            assert entry["accuracy"] == pytest.approx((rows["pred_label"] == rows["true_label"]).mean())
            assert sum(entry["predicted"].values()) == len(rows)
    assert sum(entry["n"] for entry in metrics["per_corpus"].values()) == metrics["n"]
    # Several --data stay refused for a branch that reads only RAVDESS folders.
    assert cli.main(["train", "video", "--data", *map(str, sources[:2]), "--out", str(tmp_path / "v")]) == 2
    assert "several sources are for text, audio, spectrogram" in capsys.readouterr().err


@pytest.fixture(scope="module")
def logreg_run(demo_dir, tmp_path_factory) -> Path:
    """A small utterance-statistics logreg audio run on the demo set (RAVDESS names, 8 classes)."""
    from mer_utils.pipelines import base

    out = tmp_path_factory.mktemp("corpora") / "logreg"
    base.train("audio", demo_dir, out, seed=3, model="logreg", smoke=True, progress=False)
    return out


def test_evaluate_labels_scores_only_those_classes_and_writes_the_predictions(
    logreg_run, demo_dir, tmp_path, monkeypatch, capsys
):
    from mer_utils import cli
    from mer_utils.evaluation import EVALUATION_COLUMNS
    from mer_utils.pipelines import base

    monkeypatch.setattr(sys.modules[__name__], "SECONDS", 1.0)
    lone = _folder(tmp_path / "mine", ["angry/a.wav", "sad/b.wav", "calm/c.wav"])
    four = ["angry", "happy", "neutral", "sad"]
    out = tmp_path / "scored"
    argv = [
        "evaluate",
        str(logreg_run),
        "--data",
        str(demo_dir),
        str(lone),
        "--labels",
        *four,
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    clips = corpora.audio_index([demo_dir, lone])
    wanted = clips["emotion"].isin(four)
    assert metrics["n"] == int(wanted.sum()) and metrics["labels"] == four
    assert metrics["left_out"]["n"] == int((~wanted).sum())
    assert (
        metrics["left_out"]["by_label"] == clips.loc[~wanted, "emotion"].value_counts().sort_index().to_dict()
    )
    assert f"{metrics['left_out']['n']} rows left out" in printed

    written = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    assert list(written.columns) == [*EVALUATION_COLUMNS, *(f"prob_{label}" for label in four), "clip_id"]
    assert set(written["true_label"]) <= set(four) and set(written["pred_label"]) <= set(four)
    assert set(written["corpus"]) == {"ravdess", "mine"}
    # The argmax restricted to the four labels, recomputed from the run's full 8-class probabilities.
    full = base.predict_table(logreg_run, [demo_dir, lone]).set_index("path")
    expected = full.loc[written["path"], [f"prob_{label}" for label in four]].to_numpy().argmax(axis=1)
    assert written["pred_label"].tolist() == [four[i] for i in expected]
    probabilities = written[[f"prob_{label}" for label in four]].astype(float).to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    accuracy = float((written["pred_label"] == written["true_label"]).mean())
    assert metrics["accuracy"] == pytest.approx(accuracy)
    # Each corpus has its own figures; a corpus without speaker ids says its clips were lone clips.
    assert metrics["per_corpus"]["mine"]["n"] == 2 and "lone clip" in metrics["per_corpus"]["mine"]["note"]
    assert "note" not in metrics["per_corpus"]["ravdess"] and "mine: accuracy" in printed
    assert sum(entry["n"] for entry in metrics["per_corpus"].values()) == metrics["n"]
    assert "ravdess:01" in metrics["speakers"] and "mine:angry/a" in metrics["speakers"]
    assert metrics["actors"] == [1, 2, 3, 4]  # RAVDESS actor numbers, as before

    assert cli.main(["evaluate", str(logreg_run), "--data", str(demo_dir), "--labels", "angry", "bored"]) == 2
    assert "['bored'] are not" in capsys.readouterr().err


def test_class_weights_balance_the_union_of_labels_of_several_corpora(tmp_path, monkeypatch):
    from mer_utils.pipelines import base
    from mer_utils.pipelines.audio_vectors import _fitted_sklearn_model, class_weights

    y = np.array(["angry"] * 6 + ["sad"] * 3 + ["calm"] * 1)
    balanced = class_weights(y, 1.0)
    # Every label's clips weigh the same in total (n / K), the rarest clip the most.
    assert {label: balanced[label] * (y == label).sum() for label in balanced} == pytest.approx(
        dict.fromkeys(("angry", "sad", "calm"), 10 / 3)
    )
    assert class_weights(y, 0.0) == dict.fromkeys(("angry", "calm", "sad"), 1.0)
    assert class_weights(y, 0.5)["calm"] == pytest.approx(balanced["calm"] ** 0.5)
    # Weighting moves a logistic regression's answers towards the rare label.
    rng = np.random.default_rng(0)
    y = np.array(["angry"] * 90 + ["calm"] * 10)
    x = rng.standard_normal((100, 4)) + (y == "calm")[:, None] * 0.7
    plain = _fitted_sklearn_model("logreg", 0, x, y, "data", 0.0)
    weighted = _fitted_sklearn_model("logreg", 0, x, y, "data", 1.0)
    assert (weighted.predict(x) == "calm").sum() > (plain.predict(x) == "calm").sum()

    # A run over three corpora records the weights of the labels its training speakers have.
    monkeypatch.setattr(sys.modules[__name__], "SECONDS", 1.0)
    sources = _many_speakers(tmp_path)
    run = tmp_path / "run"
    power = {"class_weight_power": 1.0, "out_of_fold": False}
    base.train("audio", sources, run, seed=0, model="logreg", smoke=True, progress=False, **power)
    info = json.loads((run / "run.json").read_text())
    assert info["settings"]["class_weight_power"] == 1.0
    weights = info["class_weights"]
    assert set(weights) == {"angry", "sad", "calm"}
    assert weights["calm"] > weights["sad"] > weights["angry"]
    # A run that needs no out-of-fold table (a benchmark's) skips the refits and says so.
    assert not (run / "predictions_oof.csv").exists()
    assert "not asked for" in info["out_of_fold"]["reason"]
