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
    DOCUMENTS,
    REQUIRED_KEYS,
    command_line,
    headline_blocks,
    load_results,
    machine_paths,
    merge_rows,
    placeholder_path,
    readme_blocks,
    render_document,
    render_headline,
    render_readme,
    render_table,
    result_names,
    results_path,
    typed_figures,
    update_results,
    validate_record,
    wilson_interval,
    write_results,
)

ROOT = PACKAGE_PARENT
RESULTS = ROOT / "results"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FULL_RESULTS = DOCS / "results.md"
# The documents with generated blocks, and every markdown page a reader sees.
DOCUMENT_PATHS = [ROOT / name for name in DOCUMENTS]
PAGES = [README, *sorted(DOCS.glob("*.md"))]
# The README is a front page; the details live in docs/.
README_MAX_LINES = 150
# The results blocks the README may hold (every other full table lives in docs/results.md).
README_BLOCKS = {"demo_time"}
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


def test_document_tables_agree_with_results_files():
    names: list[str] = []
    for path in DOCUMENT_PATHS:
        text = path.read_text(encoding="utf-8")
        blocks = readme_blocks(text)
        names += list(blocks)
        stale = [name for name in blocks if blocks[name] != render_table(load_results(name, RESULTS))]
        assert not stale, (
            f"{path.name}: results blocks {stale} differ from results/; run python scripts/render_results.py"
        )
    assert sorted(names) == result_names(RESULTS), "every results file needs exactly one block"
    # Full tables belong in docs/results.md; the one exception is what a newcomer meets first, the
    # time of a first `make demo` (issue #28 asks for that breakdown on the front page).
    in_readme = set(readme_blocks(README.read_text(encoding="utf-8")))
    assert in_readme <= README_BLOCKS, (
        f"full tables belong in docs/results.md: {sorted(in_readme - README_BLOCKS)}"
    )


def test_readme_headline_agrees_with_results_files():
    text = README.read_text(encoding="utf-8")
    assert headline_blocks(text) == [render_headline(RESULTS)], (
        "README headline table differs from results/; run python scripts/render_results.py"
    )
    assert render_document(text, RESULTS) == text


def test_headline_links_point_at_sections_of_the_full_results():
    headings = [
        line.lstrip("#").strip() for line in FULL_RESULTS.read_text().splitlines() if line.startswith("#")
    ]
    # GitHub's anchors: lower case, punctuation dropped, spaces as hyphens.
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
    entries = [load_results(name, RESULTS).get("headline") for name in result_names(RESULTS)]
    sections = [entry["section"] for entry in entries if entry]
    assert len(sections) >= 3, "the headline table needs its rows"
    assert set(sections) <= anchors, f"headline sections {sorted(set(sections) - anchors)} are not headings"
    assert all(f"docs/results.md#{section}" in README.read_text() for section in sections)


def test_readme_is_a_front_page_linking_the_docs():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md is over {README_MAX_LINES} lines"
    for page in sorted(DOCS.glob("*.md")):
        assert f"docs/{page.name}" in text, f"README does not link docs/{page.name}"
    for command in ("make demo", "make test", "mer train", "mer predict", "mer fuse"):
        assert command in text
    notebooks = sorted(path.name for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert all(f"`{name}`" in text for name in notebooks), "every notebook needs its row in the README"


@pytest.mark.parametrize("path", PAGES, ids=[page.name for page in PAGES])
def test_no_measured_figure_typed_outside_generated_blocks(path):
    found = typed_figures(path.read_text(encoding="utf-8"))
    assert not found, (
        f"{path.relative_to(ROOT)}: measured figures typed by hand {found}; put them into the results "
        "file (a row, or its notes) and render them"
    )


def test_typed_figures_finds_scores_points_and_times_outside_blocks(tmp_path):
    write_results("tiny", _record(notes=["It scored 0.512, 3.3 points above, and took 12 min."]), tmp_path)
    block = render_document("<!-- results:tiny -->\n<!-- /results:tiny -->\n", tmp_path)
    assert typed_figures(block) == [], "figures inside a generated block are rendered, not typed"
    text = block + "The model reaches 0.681 (2.2 points more); training takes 69 min.\n"
    assert [entry.split(": ")[1] for entry in typed_figures(text)] == [
        "'0.681'",
        "'2.2 points'",
        "'takes 69 min'",
    ]
    for fine in (
        "p < 0.05",
        "Python 3.11",
        "a 0.2-0.8 window",
        "under 0.5 s of voice",
        "34,792 rows",
        "1.26.4",
    ):
        assert typed_figures(fine) == [], fine


def test_generated_tables_name_folders_by_placeholders():
    for path in DOCUMENT_PATHS:
        text = path.read_text(encoding="utf-8")
        for block in [*readme_blocks(text).values(), *headline_blocks(text)]:
            assert "/tmp" not in block and "../shared" not in block, f"{path.name}: a machine path in a table"
    for name in result_names(RESULTS):
        record = load_results(name, RESULTS)
        commands = [record["command"], record["data"]["path"]]
        commands += [row["command"] for row in record["metrics"] if row.get("command")]
        assert not [found for command in commands for found in machine_paths(command)], name


def test_write_results_writes_placeholders_for_machine_paths(tmp_path, monkeypatch):
    data = tmp_path / "real"
    monkeypatch.setenv("MER_REAL_DATA", str(data))
    out = Path(__import__("tempfile").gettempdir()) / "results" / "audio_logreg"
    command = f"mer train audio --data {data}/ravdess_speech_16k --out {out} --model logreg"
    record = _record(command=command, data={"path": str(data / "ravdess_speech_16k")})
    record["metrics"][0]["command"] = f"MER_DATA_DIR={data}/text papermill a.ipynb b.ipynb"
    write_results("paths", record, tmp_path)
    written = load_results("paths", tmp_path)
    assert written["command"] == (
        "mer train audio --data DATA_DIR/ravdess_speech_16k --out runs/audio_logreg --model logreg"
    )
    assert written["data"]["path"] == "DATA_DIR/ravdess_speech_16k"
    assert written["metrics"][0]["command"] == "MER_DATA_DIR=DATA_DIR/text papermill a.ipynb b.ipynb"
    assert placeholder_path(str(ROOT / "runs" / "x")) == "runs/x"
    assert placeholder_path("/somewhere/else/clips") == "DIR/clips"
    script = command_line(
        ROOT / "scripts" / "benchmark_audio.py", ["--data", str(data / "speech"), "--out", str(out)]
    )
    assert script == "python scripts/benchmark_audio.py --data DATA_DIR/speech --out runs/audio_logreg"


def test_a_results_file_with_a_machine_path_fails_to_load(tmp_path):
    path = tmp_path / "machine.json"
    path.write_text(
        json.dumps(_record(command="mer train audio --data d --out /tmp/results/x")), encoding="utf-8"
    )
    with pytest.raises(ValueError, match=r"machine\.json: the command names a folder of one machine \(/tmp/"):
        load_results("machine", tmp_path)


def test_render_results_check_fails_on_a_stale_document(tmp_path, capsys):
    render = _script("render_results")
    copies = {path: tmp_path / path.name for path in DOCUMENT_PATHS}
    for path, copy in copies.items():
        copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    args = [arg for copy in copies.values() for arg in ("--file", str(copy))] + [
        "--results-dir",
        str(RESULTS),
    ]
    assert render.main([*args, "--check"]) == 0
    readme, full = copies[README], copies[FULL_RESULTS]
    edited = readme.read_text(encoding="utf-8").replace("| **0.681** |", "| **0.700** |", 1)
    assert edited != readme.read_text(encoding="utf-8"), "the headline's text row should read 0.681"
    readme.write_text(edited, encoding="utf-8")
    original = full.read_text(encoding="utf-8")
    full.write_text(original.replace("| 0.638 |", "| 0.700 |", 1), encoding="utf-8")
    assert full.read_text(encoding="utf-8") != original, "the text table's SVM row should read 0.638"
    assert render.main([*args, "--check"]) == 1
    out = capsys.readouterr().out
    assert "stale results blocks ['headline']" in out and "stale results blocks ['text']" in out
    assert render.main(args) == 0
    for path, copy in copies.items():
        assert copy.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


def test_render_results_refuses_a_result_shown_twice(tmp_path, capsys):
    write_results("tiny", _record(), tmp_path)
    pages = [tmp_path / "a.md", tmp_path / "b.md"]
    for page in pages:
        page.write_text("<!-- results:tiny -->\n<!-- /results:tiny -->\n", encoding="utf-8")
    args = ["--file", str(pages[0]), "--file", str(pages[1]), "--results-dir", str(tmp_path)]
    assert _script("render_results").main(args) == 1
    assert "more than one block" in capsys.readouterr().out


def test_headline_entries_are_checked(tmp_path):
    headline = {"task": "Text", "data": "a csv", "key": "svm", "section": "text"}
    validate_record(_record(headline=headline))
    with pytest.raises(ValueError, match="headline key 'lr'"):
        validate_record(_record(headline=headline | {"key": "lr"}))
    with pytest.raises(ValueError, match="missing \\['section'\\]"):
        validate_record(_record(headline={k: v for k, v in headline.items() if k != "section"}))
    write_results("b_second", _record(headline=headline | {"task": "Second", "order": 2}), tmp_path)
    write_results("a_first", _record(headline=headline | {"task": "First", "order": 1}), tmp_path)
    write_results("c_none", _record(), tmp_path)
    table = render_headline(tmp_path).splitlines()
    assert len(table) == 6 and table[2].startswith(
        "| [First](docs/results.md#text) | a csv | svm | **0.500** |"
    )
    assert table[3].startswith("| [Second]") and "Wilson" in table[-1]


def test_bad_input_page_has_one_row_per_hostile_input_test():
    source = (ROOT / "tests" / "test_hostile_inputs.py").read_text(encoding="utf-8")
    tests = set(re.findall(r"^def (test_\w+)", source, re.MULTILINE))
    rows = [line for line in (DOCS / "bad_input.md").read_text().splitlines() if line.startswith("| ")][1:]
    named = [set(re.findall(r"`(test_\w+)`", row)) for row in rows]
    assert all(named), "every row of docs/bad_input.md names the tests that check it"
    listed = set().union(*named)
    assert not listed - tests, f"docs/bad_input.md names tests that do not exist: {sorted(listed - tests)}"
    assert not tests - listed, (
        f"hostile-input tests without a row in docs/bad_input.md: {sorted(tests - listed)}"
    )


def test_render_results_names_a_file_without_a_block(tmp_path, capsys):
    write_results("orphan", _record(), tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# nothing here\n", encoding="utf-8")
    assert _script("render_results").main(["--readme", str(readme), "--results-dir", str(tmp_path)]) == 1
    assert "orphan" in capsys.readouterr().out


def test_no_dated_run_notes_in_readme_code_and_scripts():
    files = [*PAGES, *sorted((ROOT / "mer_utils").rglob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]
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


def test_render_table_shows_notes_under_the_table():
    table = render_table(_record(notes=["The SVM wins on this tiny set."]))
    assert table.endswith("Wilson score interval from accuracy and n.\n\nThe SVM wins on this tiny set.\n")
    with pytest.raises(ValueError, match="notes"):
        validate_record(_record(notes="not a list"))


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


def test_benchmark_cross_corpus_scores_four_classes_with_intervals_and_the_answer_spread():
    from mer_utils.evaluation import prediction_table

    cross = _script("benchmark_cross_corpus")
    labels = ["neutral", "calm", "happy", "sad", "angry", "fearful"]
    rng = np.random.default_rng(0)
    truth = ["calm", "neutral", "happy", "sad", "angry", "fearful"] * 10
    probabilities = rng.dirichlet(np.ones(len(labels)), size=len(truth))
    # Every clip leans to calm a little more than to its own label, except the sad ones.
    for row, label in enumerate(truth):
        probabilities[row] = 0.1 * probabilities[row]
        probabilities[row, labels.index("calm")] += 0.45
        probabilities[row, labels.index(label)] += 0.6 if label == "sad" else 0.4
    table = prediction_table(probabilities / probabilities.sum(axis=1, keepdims=True), labels, truth, truth)
    four = cross.four_classes(table)
    # Fearful clips are left out; calm and neutral clips are one class, answered by calm's probability.
    assert len(four) == 50 and set(four["true_label"]) == set(cross.SHARED_LABELS)
    assert (four.loc[four["true_label"] == "neutral", "pred_label"] == "neutral").all()
    row = cross.scored_row(
        "m -> c", four, cross.SHARED_LABELS, seed=0, n_boot=200, values={"trained on": "x"}
    )
    correct = (four["pred_label"] == four["true_label"]).mean()
    assert row["accuracy"] == pytest.approx(correct, abs=1e-4) == 0.6 and row["n"] == 50
    low, high = row["ci95"]["accuracy"]
    assert low <= row["accuracy"] <= high and high - low > 0
    assert row["values"]["top answer"] == "neutral"
    share = (four["pred_label"] == "neutral").mean()
    assert row["values"]["top share"] == pytest.approx(share, abs=1e-3) and share > 0.5
    assert row["per_class_recall"]["neutral"] == 1.0 and row["per_class_recall"]["sad"] == 1.0
    assert sum(row["details"]["answers"].values()) == 50 and row["details"]["classes"] == 4


def test_benchmark_cross_corpus_names_a_model_only_when_it_is_not_whisper():
    cross = _script("benchmark_cross_corpus")
    # Rows measured before the models option keep their keys; the other models' rows say which they are.
    assert cross._setup_name(("speaker", 0.0, "none")) == "speaker, w0"
    assert cross._setup_name(("global", 1.0, "loudness+vad", "whisper")) == "global, w1, loudness+vad"
    assert cross._setup_name(("speaker", 1.0, "none", "whisper+egemaps"), "-") == "whisper+egemaps-speaker-w1"
