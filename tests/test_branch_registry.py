"""The branch registry proven by a toy branch: hooks defined here, one registry line, the whole CLI.

The toy branch reads a tiny folder of ``<label>/<name>.txt`` files and fits a constant-probability
model (scikit-learn's ``DummyClassifier``: the training labels' frequencies, or uniform). Nothing
outside this file knows it, yet ``mer train``, ``mer evaluate``, ``mer predict`` and ``mer fuse``
all take it once it is registered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_utils import branches
from mer_utils.cli import main
from mer_utils.pipelines import base

BRANCH = "toy"
LABELS = ("calm", "happy", "sad")


@dataclass(frozen=True)
class ToySettings(base.Settings):
    """The toy branch's settings: the shares of the split and an epoch count it records."""

    val_share: float = 0.25
    test_share: float = 0.25
    epochs: int = 1


FULL = ToySettings()
SMOKE = ToySettings(epochs=1)


# --- the toy branch's hooks -----------------------------------------------------------------------


def index(data, settings: ToySettings) -> pd.DataFrame:
    """Every ``<label>/*.txt`` file of the folder; files under another folder name are skipped."""
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such data folder")
    rows, skipped = [], []
    for path in sorted(root.rglob("*.txt")):
        label = path.parent.name
        if label in LABELS:
            rows.append({"clip_id": path.relative_to(root).as_posix(), "path": str(path), "label": label})
        else:
            skipped.append({"path": str(path), "reason": f"{path}: unknown label folder {label!r}"})
    frame = pd.DataFrame(rows, columns=["clip_id", "path", "label"])
    frame.attrs["skipped"] = skipped
    return frame


def split(index: pd.DataFrame, settings: ToySettings, seed: int) -> pd.DataFrame:
    """A seeded shuffle cut into test, val and train shares."""
    order = np.random.default_rng(seed).permutation(len(index))
    n_test, n_val = round(settings.test_share * len(index)), round(settings.val_share * len(index))
    parts = np.array(["train"] * len(index), dtype=object)
    parts[order[:n_test]] = "test"
    parts[order[n_test : n_test + n_val]] = "val"
    return index.assign(split=parts)


def features(index: pd.DataFrame, settings: ToySettings, model: str, seed: int, progress: bool) -> dict:
    """One constant feature per file (the model ignores its input)."""
    return {part: index[index["split"] == part] for part in ("train", "val", "test")}


def fit(features: dict, settings: ToySettings, model: str, seed: int) -> base.Fitted:
    from sklearn.dummy import DummyClassifier

    train = features["train"]
    network = DummyClassifier(strategy=model, random_state=seed).fit(
        np.zeros((len(train), 1)), train["label"]
    )
    return base.Fitted(model=network, model_format="sklearn", info={"toy_rule": model}, metrics={"toy": True})


def _table(model, rows: pd.DataFrame, labels) -> pd.DataFrame:
    from mer_utils.evaluation import prediction_table

    raw = model.predict_proba(np.zeros((len(rows), 1)))
    probabilities = np.zeros((len(rows), len(labels)))
    for column, name in enumerate(model.classes_):
        probabilities[:, list(labels).index(name)] = raw[:, column]
    return prediction_table(
        probabilities, labels, rows["clip_id"].tolist(), rows["label"].tolist(), rows["path"].tolist()
    )


def tables(fitted: base.Fitted, features: dict, settings: ToySettings, labels) -> dict:
    return {part: _table(fitted.model, features[part], labels) for part in ("val", "test")}


def table_of(run_dir, info, data, model, degradation, progress) -> pd.DataFrame:
    rows = index(data, FULL)
    table = _table(model, rows, list(info["labels"]))
    table.attrs["skipped"] = rows.attrs["skipped"]
    return table


def file_prediction(run_dir, info, path: Path, model) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = pd.DataFrame({"clip_id": [path.name], "path": [str(path)], "label": [""]})
    probabilities = _table(model, rows, list(info["labels"])).filter(like="prob_").to_numpy()[0]
    return {"available": True, "reason": None, "probabilities": probabilities.tolist(), "details": {}}


# --- the test ---------------------------------------------------------------------------------------


@pytest.fixture()
def toy_branch():
    """The toy branch registered in one line for the test, removed afterwards."""
    branches.register(branches.Branch(BRANCH, "clips", "folder of <label>/*.txt", LABELS, ("prior", "uniform"), "prior", options=("epochs",), reads_clip=True, model_types=("sklearn.dummy.DummyClassifier",), module=__name__))  # fmt: skip
    yield
    branches.unregister(BRANCH)


def _tiny_folder(root: Path) -> Path:
    weights = {"calm": 6, "happy": 3, "sad": 3}
    for label, count in weights.items():
        (root / label).mkdir(parents=True)
        for i in range(count):
            (root / label / f"{i}.txt").write_text(f"{label} {i}")
    (root / "angry").mkdir()
    (root / "angry" / "0.txt").write_text("not a toy label")
    return root


def test_a_branch_registered_in_one_line_trains_evaluates_predicts_and_fuses(toy_branch, tmp_path, capsys):
    data = _tiny_folder(tmp_path / "data")
    prior, uniform = tmp_path / "prior", tmp_path / "uniform"
    assert main(["train", BRANCH, "--data", str(data), "--out", str(prior), "--epochs", "2"]) == 0
    assert (
        main(["train", BRANCH, "--data", str(data), "--out", str(uniform), "--model", "uniform", "--smoke"])
        == 0
    )

    info = json.loads((prior / "run.json").read_text())
    assert info["branch"] == BRANCH and info["labels"] == list(LABELS) and info["model"] == "prior"
    assert info["settings"] == {"val_share": 0.25, "test_share": 0.25, "epochs": 2}  # --epochs landed
    assert info["toy_rule"] == "prior" and info["split"] == {"train": 6, "val": 3, "test": 3}
    assert set(base.RUN_KEYS) <= set(info)
    skipped = pd.read_csv(prior / base.SKIPPED_FILE)
    assert len(skipped) == 1 and "unknown label folder 'angry'" in skipped["reason"][0]
    # The prior model predicts the training frequencies for every file; the uniform one 1/3 each.
    test_table = pd.read_csv(prior / "predictions_test.csv")
    train_labels = [r for r in test_table.columns if r.startswith("prob_")]
    assert np.allclose(test_table[train_labels].sum(axis=1), 1.0)
    assert test_table[train_labels].nunique().max() == 1  # constant over files
    assert np.allclose(pd.read_csv(uniform / "predictions_val.csv")[train_labels], 1 / 3)

    capsys.readouterr()
    assert main(["evaluate", str(prior), "--data", str(data), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["branch"] == BRANCH and scored["n"] == 12 and len(scored["skipped"]) == 1
    # Every file gets the majority label of training; its share of the folder is the accuracy.
    majority = base.load_model(prior).classes_[np.argmax(base.load_model(prior).class_prior_)]
    assert scored["accuracy"] == pytest.approx(
        sum(1 for p in data.rglob("*.txt") if p.parent.name == majority) / 12
    )

    assert main(["predict", str(data / "sad" / "0.txt"), "--models", str(prior), str(uniform), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer["modalities"]) == {"toy-prior", "toy-uniform"}
    assert answer["label"] in LABELS and abs(sum(answer["fused_probabilities"]) - 1) < 1e-6

    fusion = tmp_path / "fusion"
    assert main(["fuse", str(prior), str(uniform), "--out", str(fusion)]) == 0
    assert (fusion / "fusion.json").is_file() and (fusion / "fusion_table.csv").is_file()

    # The CLI's option check reads the registry too: --init is no toy option.
    assert (
        main(["train", BRANCH, "--data", str(data), "--out", str(tmp_path / "x"), "--init", str(prior)]) == 2
    )
    assert "--init applies to `mer train video`, not to 'toy'" in capsys.readouterr().err


def test_toy_settings_are_range_checked_and_unknown_ones_named(toy_branch):
    with pytest.raises(ValueError, match="'val_share' = 1.5 is outside"):
        ToySettings(val_share=1.5)
    with pytest.raises(ValueError, match=r"unknown toy settings \['width'\]"):
        base.settings_for(BRANCH, width=3)
    assert base.settings_for(BRANCH, smoke=True, epochs=4) == ToySettings(epochs=4)


def test_a_branch_without_training_hooks_is_refused(tmp_path):
    branches.register(branches.Branch("hookless", "clips", "anything", LABELS, ("prior",), "prior", module="mer_utils.config"))  # fmt: skip
    try:
        with pytest.raises(ValueError, match=r"mer_utils.config lacks the training hooks \['index', 'split'"):
            base.train("hookless", tmp_path, tmp_path / "run")
    finally:
        branches.unregister("hookless")
    assert not (tmp_path / "run").exists()


def _import_arrows() -> dict[str, set[str]]:
    """mer_utils module -> the mer_utils modules it imports (at the top or inside functions)."""
    import ast

    root = Path(base.__file__).resolve().parents[1]
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    arrows = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(parent + ([module] if module else []))
                targets.update({module, *(f"{module}.{alias.name}" for alias in node.names)})
        arrows[name] = {target for target in targets if target in names and target != name}
    return arrows


def _circle(arrows: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``arrows`` (a list of modules, first = last), or None."""
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(arrows[module]):
            if state.get(target) == "open":
                return trail[trail.index(target) :] + [target]
            if target not in state:
                found = visit(target, trail + [target])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(arrows):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_no_import_circle_and_no_branch_imports_another():
    arrows = _import_arrows()
    assert _circle(arrows) is None, " -> ".join(_circle(arrows))
    modules = {branches.get_branch(name).module for name in branches.branch_names()}
    crossing = sorted((a, b) for a in modules for b in arrows[a] if b in modules)
    assert crossing == [], crossing
    # The check can fail: one arrow back from the core to a branch closes a circle.
    assert _circle({**arrows, "mer_utils.config": {"mer_utils.pipelines.text"}}) is not None
