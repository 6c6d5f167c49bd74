"""Tests of mer_utils.notebooks: mode folders, quiet kernels, one line per notebook, clear failures.

The notebooks here are tiny probes (no TensorFlow), so each kernel starts in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from mer_utils import notebooks as notebooks_module
from mer_utils.config import RUNS_DIR
from mer_utils.notebooks import (
    NoNotebooksError,
    error_line,
    kernel_environment,
    list_notebooks,
    notebook_runs_dir,
    run_notebooks,
)

# Writes where the kernel's mer_utils puts runs, caches and figures, then imitates TensorFlow's
# C++ start-up line (written straight to file descriptor 2, as the C++ logger does).
PROBE = """
import json, os
from mer_utils.config import CACHE_DIR, FIGURES_DIR, RUNS_DIR
RUNS_DIR.mkdir(parents=True, exist_ok=True)
(RUNS_DIR / "probe.json").write_text(json.dumps(
    {"runs": str(RUNS_DIR), "cache": str(CACHE_DIR), "figures": str(FIGURES_DIR), "smoke": os.environ["MER_SMOKE_TEST"]}
))
os.write(2, b"I0000 00:00:1 port.cc:153] oneDNN custom operations are on.\\n")
print("probe done")
"""


def write_notebook(path: Path, *sources: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_each_mode_has_its_own_runs_folder():
    smoke, full = notebook_runs_dir(True), notebook_runs_dir(False)
    assert smoke != full
    assert smoke.parent == full.parent == RUNS_DIR / "notebooks"
    assert notebook_runs_dir(True, Path("/x")) == Path("/x/notebooks/smoke")


def test_kernel_environment_points_the_kernel_at_the_mode_folders(tmp_path):
    env = kernel_environment(True, tmp_path / "runs", tmp_path / "cache", tmp_path / "fig", base={"A": "1"})
    assert env["A"] == "1"
    assert env["MER_SMOKE_TEST"] == "1"
    assert env["MER_RUNS_DIR"] == str(tmp_path / "runs")
    assert env["MER_CACHE_DIR"] == str(tmp_path / "cache")
    assert env["MER_FIGURES_DIR"] == str(tmp_path / "fig")
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    # A user's own setting wins over the quiet default.
    assert (
        kernel_environment(False, tmp_path, tmp_path, base={"TF_CPP_MIN_LOG_LEVEL": "0"})[
            "TF_CPP_MIN_LOG_LEVEL"
        ]
        == "0"
    )
    assert kernel_environment(False, tmp_path, tmp_path, base={})["MER_SMOKE_TEST"] == "0"


def test_list_notebooks_without_notebooks_is_an_error(tmp_path):
    with pytest.raises(NoNotebooksError, match="checkout"):
        list_notebooks(notebook_dir=tmp_path)
    write_notebook(tmp_path / "01_a.ipynb", "1")
    with pytest.raises(ValueError, match="starts with"):
        list_notebooks(["07"], notebook_dir=tmp_path)
    assert [p.name for p in list_notebooks(notebook_dir=tmp_path)] == ["01_a.ipynb"]


def test_error_line_is_the_last_line_without_colours():
    assert error_line(RuntimeError("first\n\x1b[31mValueError: boom\x1b[0m\n")) == "ValueError: boom"

    class CellError(Exception):
        ename, evalue = "KeyError", "'x'"

    assert error_line(CellError("long traceback")) == "KeyError: 'x'"


def test_run_notebooks_isolates_runs_reports_each_and_stays_quiet(tmp_path, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_probe.ipynb", PROBE)
    write_notebook(notebooks / "02_fails.ipynb", "raise ValueError('boom')")
    runs = tmp_path / "runs" / "notebooks" / "smoke"

    results = run_notebooks(smoke=True, runs_dir=runs, notebook_dir=notebooks, timeout=120)

    assert [(r["notebook"], r["status"]) for r in results] == [
        ("01_probe.ipynb", "ok"),
        ("02_fails.ipynb", "failed"),
    ]
    assert results[1]["error"] == "ValueError: boom"
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4  # header, one line per notebook, summary
    assert lines[1].startswith("01_probe.ipynb") and " ok " in lines[1]
    assert lines[2].startswith("02_fails.ipynb") and lines[2].endswith("ValueError: boom")
    assert lines[3].startswith("1 passed, 1 failed")
    # The kernel wrote into this mode's folders, not into the project's runs/ and .cache/.
    seen = json.loads((runs / "probe.json").read_text())
    assert seen == {"runs": str(runs), "cache": str(runs / "cache"), "figures": seen["figures"], "smoke": "1"}
    # The C++ line went to the kernel log, not into the executed notebook.
    executed = json.loads((runs / "executed" / "01_probe.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    assert any("probe done" in "".join(o.get("text", "")) for o in outputs)
    assert not any("oneDNN" in "".join(o.get("text", "")) for o in outputs)
    assert "oneDNN" in (runs / "executed" / "logs" / "01_probe.log").read_text()
    # The kernels talked over local sockets in a private folder, none left in the notebooks' folder.
    assert sorted(p.name for p in notebooks.iterdir()) == ["01_probe.ipynb", "02_fails.ipynb"]


def test_parallel_notebooks_run_side_by_side_and_wait_for_the_runs_they_read(tmp_path, monkeypatch, capsys):
    # 02 reads what 01 writes; 03 reads nothing. Each kernel notes when it ran.
    stamp = """
import json, time
from mer_utils.config import RUNS_DIR
RUNS_DIR.mkdir(parents=True, exist_ok=True)
start = time.time()
time.sleep({sleep})
(RUNS_DIR / "{name}.json").write_text(json.dumps({{"start": start, "end": time.time()}}))
"""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name, sleep in (("01_writes", 6), ("02_reads", 0), ("03_alone", 0)):
        write_notebook(notebooks / f"{name}.ipynb", stamp.format(name=name, sleep=sleep))
    monkeypatch.setattr(notebooks_module, "NEEDS", {"02": ("01",)})
    runs = tmp_path / "runs"

    results = run_notebooks(smoke=True, runs_dir=runs, notebook_dir=notebooks, timeout=120, jobs=2)

    assert [r["notebook"] for r in results] == ["01_writes.ipynb", "02_reads.ipynb", "03_alone.ipynb"]
    assert all(r["status"] == "ok" for r in results)
    seen = {
        name: json.loads((runs / f"{name}.json").read_text())
        for name in ("01_writes", "02_reads", "03_alone")
    }
    assert seen["02_reads"]["start"] >= seen["01_writes"]["end"]  # waited for the run it reads
    assert seen["03_alone"]["start"] < seen["01_writes"]["end"]  # ran beside 01 instead of after it
    assert "3 notebooks in smoke mode, 2 at a time" in capsys.readouterr().out


def test_jobs_below_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--jobs must be at least 1"):
        run_notebooks(runs_dir=tmp_path, jobs=0)
