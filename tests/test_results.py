"""results/ as the one source of measured results: the files, their README tables, the recording scripts."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_utils.config import PACKAGE_PARENT
from mer_utils.results import (
    REQUIRED_KEYS,
    load_results,
    merge_rows,
    readme_blocks,
    render_readme,
    render_table,
    result_names,
    results_path,
    update_results,
    validate_record,
    wilson_interval,
    write_results,
)

ROOT = PACKAGE_PARENT
RESULTS = ROOT / "results"
README = ROOT / "README.md"
# Development-log wording that has no place in the README or in code comments and docstrings.
DIARY_PATTERNS = (
    r"\b20\d\d-\d\d-\d\d\b",
    r"\bthis session\b",
    r"\bthe integrator\b",
    r"\bnow corrected\b",
    r"\b(before|after) this change\b",
    r"\bthis commit\b",
)


def _script(name: str):
    """Import scripts/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(**changes) -> dict:
    record = {
        "data": {"path": "data/x.csv", "description": "a tiny set"},
        "protocol": {"split": "70/30", "test": "the test part", "n": 100},
        "command": "mer train text --data data/x.csv --out runs/x",
        "metrics": [{"name": "svm", "key": "svm", "accuracy": 0.5, "macro_f1": 0.4}],
    }
    return record | changes


# --- the committed results files and the README -------------------------------------------------


def test_results_folder_has_files():
    assert len(result_names(RESULTS)) >= 5


@pytest.mark.parametrize("name", result_names(RESULTS))
def test_results_file_is_complete(name):
    record = load_results(name, RESULTS)
    for key in REQUIRED_KEYS:
        assert record[key], f"{name}: empty {key}"
    assert record["metrics"], name
    keys = [row.get("key") for row in record["metrics"]]
    assert None not in keys and len(set(keys)) == len(keys), (
        f"{name}: rows need unique keys (record_result --key)"
    )
    for row in record["metrics"]:
        ci = (row.get("ci95") or {}).get("accuracy")
        if ci:
            assert ci[0] <= row["accuracy"] <= ci[1], f"{name}: {row['name']} outside its interval"


def test_readme_tables_agree_with_results_files():
    text = README.read_text(encoding="utf-8")
    blocks = readme_blocks(text)
    assert sorted(blocks) == result_names(RESULTS), "every results file needs exactly one README block"
    stale = [name for name in blocks if blocks[name] != render_table(load_results(name, RESULTS))]
    assert not stale, (
        f"README results blocks {stale} differ from results/; run python scripts/render_results.py"
    )


def test_render_results_check_fails_on_a_stale_readme(tmp_path, capsys):
    render = _script("render_results")
    readme = tmp_path / "README.md"
    original = README.read_text(encoding="utf-8")
    edited = original.replace("| **0.681** |", "| **0.700** |", 1)
    assert edited != original, "the text table's chosen row should read 0.681"
    readme.write_text(edited, encoding="utf-8")
    assert render.main(["--readme", str(readme), "--results-dir", str(RESULTS), "--check"]) == 1
    assert "stale results blocks" in capsys.readouterr().out
    assert render.main(["--readme", str(readme), "--results-dir", str(RESULTS)]) == 0
    assert readme.read_text(encoding="utf-8") == README.read_text(encoding="utf-8")


def test_render_results_names_a_file_without_a_block(tmp_path, capsys):
    write_results("orphan", _record(), tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# nothing here\n", encoding="utf-8")
    assert _script("render_results").main(["--readme", str(readme), "--results-dir", str(tmp_path)]) == 1
    assert "orphan" in capsys.readouterr().out


def test_no_dated_run_notes_in_readme_code_and_scripts():
    files = [README, *sorted((ROOT / "mer_utils").rglob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if any(re.search(pattern, line, re.IGNORECASE) for pattern in DIARY_PATTERNS):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "development-log wording:\n" + "\n".join(found)


# --- load / write / validate -----------------------------------------------------------------


def test_write_and_load_round_trip(tmp_path):
    record = _record()
    record["metrics"][0]["accuracy"] = np.float64(0.5)  # a script passes NumPy scalars straight through
    path = write_results("text_small", record, tmp_path)
    assert path == tmp_path / "text_small.json"
    assert load_results("text_small", tmp_path) == json.loads(json.dumps(_record()))
    assert [p.name for p in tmp_path.iterdir()] == ["text_small.json"], "no temporary file left behind"


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_a_record_without_a_required_key_is_refused(tmp_path, key):
    record = _record()
    del record[key]
    with pytest.raises(ValueError, match=key):
        write_results("broken", record, tmp_path)
    assert not (tmp_path / "broken.json").exists()


def test_a_results_file_without_a_command_fails_to_load(tmp_path):
    path = tmp_path / "nocommand.json"
    path.write_text(json.dumps(_record(command="")), encoding="utf-8")
    with pytest.raises(ValueError, match=r"nocommand\.json.*command"):
        load_results("nocommand", tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data": {"description": "no path"}}, "path"),
        ({"metrics": [{"accuracy": 0.5}]}, "name"),
        ({"metrics": [{"name": "empty"}]}, "no metric values"),
        ({"metrics": [{"name": "text", "accuracy": "0.5"}]}, "number"),
    ],
)
def test_malformed_records_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        validate_record(_record(**change))


def test_broken_json_and_missing_files_name_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        load_results("bad", tmp_path)
    with pytest.raises(FileNotFoundError, match="absent"):
        load_results("absent", tmp_path)
    with pytest.raises(ValueError, match="lower-case"):
        results_path("../escape", tmp_path)


# --- rendering -------------------------------------------------------------------------------


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson_interval(0.5, 100)
    assert (round(low, 3), round(high, 3)) == (0.404, 0.596)
    with pytest.raises(ValueError):
        wilson_interval(0.5, 0)


def test_render_table_shows_data_protocol_command_and_intervals():
    record = _record(
        metrics=[
            {"name": "svm", "accuracy": 0.5, "macro_f1": 0.4, "ci95": {"accuracy": [0.41, 0.6]}},
            {"name": "lr", "accuracy": 0.5, "command": "mer train text --model lr"},
            {
                "name": "paper",
                "accuracy": 0.61,
                "n": None,
                "decimals": 2,
                "reference": True,
                "source": "a paper",
            },
        ]
    )
    table = render_table(record)
    assert "`data/x.csv`: a tiny set" in table
    assert "70/30; the test part; n = 100." in table
    assert "**Command:** `mer train text --data data/x.csv --out runs/x`" in table
    assert "| svm | 0.500 | [0.410, 0.600]* | 0.400 |" in table
    assert "| lr (1) | 0.500 | [0.404, 0.596] |  |" in table
    assert "| paper (2) | 0.61 |  |  |" in table
    assert "(1) `mer train text --model lr`" in table and "(2) a paper" in table


def test_render_readme_replaces_only_marked_blocks(tmp_path):
    write_results("tiny", _record(), tmp_path)
    text = "intro\n<!-- results:tiny -->\nold table\n<!-- /results:tiny -->\noutro\n"
    rendered = render_readme(text, tmp_path)
    assert rendered.startswith("intro\n<!-- results:tiny -->\n**Data:**")
    assert rendered.endswith("<!-- /results:tiny -->\noutro\n")
    assert "old table" not in rendered
    assert render_readme(rendered, tmp_path) == rendered


def test_merge_rows_replaces_by_key_and_keeps_the_rest():
    old = [
        {"name": "linear SVM", "key": "svm", "accuracy": 0.5, "bold": True},
        {"name": "paper", "accuracy": 0.6},
    ]
    new = [
        {"name": "svm", "key": "svm", "accuracy": 0.7},
        {"name": "bilstm", "key": "bilstm", "accuracy": 0.4},
    ]
    merged = merge_rows(old, new)
    assert merged == [
        {"name": "linear SVM", "key": "svm", "accuracy": 0.7, "bold": True},
        {"name": "paper", "accuracy": 0.6},
        {"name": "bilstm", "key": "bilstm", "accuracy": 0.4},
    ]


def test_update_results_keeps_the_command_of_rows_it_did_not_remeasure(tmp_path):
    record = _record()
    record["metrics"].append({"name": "paper", "accuracy": 0.6, "reference": True})
    record["metrics"].append({"name": "lr", "key": "lr", "accuracy": 0.45})
    write_results("mixed", record, tmp_path)
    update_results(
        "mixed", [{"name": "svm", "key": "svm", "accuracy": 0.55}], "python scripts/b.py", {}, tmp_path
    )
    rows = {row["name"]: row for row in load_results("mixed", tmp_path)["metrics"]}
    assert rows["svm"]["accuracy"] == 0.55 and "command" not in rows["svm"]
    assert rows["lr"]["command"] == "mer train text --data data/x.csv --out runs/x"
    assert "command" not in rows["paper"]


# --- record_result.py on run folders -----------------------------------------------------------


def _run_folder(path: Path, accuracy_hits: int = 6) -> Path:
    labels = ["happy", "sad"]
    truth = ["happy", "sad"] * 5
    predicted = [t if i < accuracy_hits else labels[1 - labels.index(t)] for i, t in enumerate(truth)]
    path.mkdir(parents=True)
    table = pd.DataFrame(
        {"clip_id": [str(i) for i in range(10)], "true_label": truth, "pred_label": predicted}
    )
    table.to_csv(path / "predictions_test.csv", index=False)
    metrics = {
        "accuracy": accuracy_hits / 10,
        "macro_f1": 0.55,
        "n": 10,
        "seed": 3,
        "split": {"test": [13]},
        "data": "data/demo",
        "val": {"accuracy": 0.7},
        "per_class": {label: {"recall": 0.6} for label in labels},
    }
    (path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return path


def test_record_result_copies_a_training_run(tmp_path):
    record = _script("record_result")
    run = _run_folder(tmp_path / "runs" / "audio_small")
    command = "mer train audio --data data/demo --out runs/audio_small"
    folder = tmp_path / "results"
    args = ["demo_audio", str(run), "--command", command, "--results-dir", str(folder), "--per-class"]
    assert record.main(args) == 0
    result = load_results("demo_audio", folder)
    assert result["command"] == command and result["data"]["path"] == "data/demo"
    (row,) = result["metrics"]
    assert row["key"] == "audio_small" and row["accuracy"] == 0.6 and row["n"] == 10
    assert row["values"] == {"val accuracy": 0.7}
    assert row["per_class_recall"] == {"happy": 0.6, "sad": 0.6}
    low, high = row["ci95"]["accuracy"]
    assert low < 0.6 < high
    # A second run becomes a second row; re-recording the first replaces it.
    other = _run_folder(tmp_path / "runs" / "audio_other", accuracy_hits=8)
    record.main(["demo_audio", str(other), "--command", "mer train audio", "--results-dir", str(folder)])
    record.main(
        ["demo_audio", str(run), "--command", command, "--results-dir", str(folder), "--row", "small"]
    )
    rows = load_results("demo_audio", folder)["metrics"]
    assert [(r["name"], r["accuracy"]) for r in rows] == [("small", 0.6), ("audio_other", 0.8)]


def test_record_result_copies_a_fusion_folder(tmp_path):
    fusion_dir = tmp_path / "fusion"
    fusion_dir.mkdir()
    method = {"accuracy": 0.6, "macro_f1": 0.5, "n": 10, "accuracy_ci_low": 0.3, "accuracy_ci_high": 0.9}
    metrics = {
        "entropy_trust_guarded": method,
        "single_audio": method,
        "single_video": method | {"accuracy": 0.4},
        "mean": method | {"accuracy": 0.5},
        "entropy_trust": method | {"accuracy": 0.55},
    }
    parameters = {
        "method": "single_audio",
        "modalities": {"audio": {"trust": 0.7, "run_dir": "/x/runs/audio_whisper"}, "video": {"trust": 0.5}},
        "val_cv_accuracy": {"entropy_trust": 0.65},
    }
    (fusion_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (fusion_dir / "fusion.json").write_text(json.dumps(parameters), encoding="utf-8")
    folder = tmp_path / "results"
    command = "mer fuse runs/audio runs/video --out fusion"
    args = ["demo_fusion", str(fusion_dir), "--command", command, "--results-dir", str(folder)]
    assert _script("record_result").main([*args, "--key", "audio + video"]) == 0
    (row,) = load_results("demo_fusion", folder)["metrics"]
    assert row["name"] == "audio + video" and row["accuracy"] == 0.6
    assert row["ci95"] == {"accuracy": [0.3, 0.9]}
    assert row["values"] == {
        "chosen": "audio_whisper alone",
        "best single": 0.6,
        "plain mean": 0.5,
        "entropy x trust": 0.55,
        "its val CV": 0.65,
    }


def test_record_result_refuses_a_folder_without_metrics(tmp_path):
    with pytest.raises(SystemExit):
        _script("record_result").main(
            ["x", str(tmp_path), "--command", "mer train", "--results-dir", str(tmp_path)]
        )


# --- the benchmark scripts write through write_results -----------------------------------------


def test_benchmark_text_records_every_model_with_the_other_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("MER_RESULTS_DIR", str(tmp_path))
    write_results("text", _record(), tmp_path)

    def seed_metrics(shift: float) -> dict:
        scores = {"accuracy": 0.5 + shift, "macro_f1": 0.4 + shift, "macro_auc": 0.8}
        return {"model": "svm", "n": 100, "models": {"svm": {"test": scores}, "lr": {"test": scores}}}

    _script("benchmark_text").record_results(
        "text", Path("x.csv"), [42, 1], {42: seed_metrics(0), 1: seed_metrics(0.1)}
    )
    result = load_results("text", tmp_path)
    rows = {row["key"]: row for row in result["metrics"]}
    assert rows["svm"]["accuracy"] == 0.5 and rows["svm"]["other_seeds"]["1"]["accuracy"] == 0.6
    assert rows["svm"]["values"] == {"macro AUC": 0.8} and "values" not in rows["lr"]
    assert "seed 42 in the main columns, seeds 1 beside them" in result["protocol"]["test"]
    assert result["command"].startswith("python scripts/benchmark_text.py")


def test_benchmark_audio_records_mean_and_sd_over_folds(tmp_path, monkeypatch):
    monkeypatch.setenv("MER_RESULTS_DIR", str(tmp_path))
    table = pd.DataFrame({"fold": [0, 1, 0, 1], "model": ["svc_stats", "svc_stats", "logreg", "logreg"]})
    table["accuracy"] = [0.5, 0.7, 0.6, 0.6]
    args = ["--data", "d", "--out", "o", "--models", "logreg"]
    _script("benchmark_audio").record_results("kfold", table, Path("d"), args)
    result = load_results("kfold", tmp_path)
    rows = {row["key"]: row for row in result["metrics"]}
    assert rows["svc_stats"]["values"]["2-fold accuracy"] == pytest.approx(
        {"mean": 0.6, "sd": 0.1414}, abs=1e-4
    )
    assert rows["logreg"]["details"]["folds"] == [0.6, 0.6]
    assert result["command"] == "python scripts/benchmark_audio.py --data d --out o --models logreg"


def test_fusion_noise_curves_records_accuracy_per_level(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setenv("MER_RESULTS_DIR", str(tmp_path))
    curve = pd.DataFrame(
        {"level": [20.0, -5.0, 20.0, -5.0], "method": ["single_audio", "single_audio", "mean", "mean"]}
    )
    curve["accuracy"] = [0.6, 0.4, 0.65, 0.55]
    args = argparse.Namespace(run_dirs=[Path("runs/a"), Path("runs/b")], data=Path("d"))
    _script("fusion_noise_curves").record_results("noise", curve, args, "audio", ["runs/a", "runs/b"])
    result = load_results("noise", tmp_path)
    assert result["row_label"] == "method"
    rows = {row["key"]: row["values"] for row in result["metrics"]}
    assert rows == {"single_audio": {"20 dB": 0.6, "-5 dB": 0.4}, "mean": {"20 dB": 0.65, "-5 dB": 0.55}}


def test_benchmark_faces_records_speed_and_the_fer_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("MER_RESULTS_DIR", str(tmp_path))
    faces = _script("benchmark_faces")
    faces.record_speed(
        "speed",
        [{"name": "decode (cold)", "key": "decode (cold)", "values": {"images/s": 900}}],
        Path("d"),
        "2 cores",
    )
    assert load_results("speed", tmp_path)["metrics"][0]["values"] == {"images/s": 900}
    fer = {"accuracy": 0.58, "macro_f1": 0.5, "n": 10, "recall": {"happy": 0.8}}
    faces.record_fer_scores("faces", fer, Path("d"))
    (row,) = load_results("faces", tmp_path)["metrics"]
    assert row["key"] == "fer" and row["accuracy"] == 0.58 and row["per_class_recall"] == {"happy": 0.8}
