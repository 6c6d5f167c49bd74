"""Every notebook is committed without outputs and executes top to bottom headless in smoke mode.

The notebooks run in their numbered order (06 reads the runs 02-04 write) in one folder of their
own for the test session (runs, caches, figures), never in the project's runs/. Executing them is
part of `make test` (CI); `pytest -m "not notebooks"` skips it for a quick local check. The runner
itself (isolation, quiet kernels, errors) is tested on tiny notebooks in tests/test_notebook_runner.py.
"""

from __future__ import annotations

import json
import os

import pytest

from mer_utils.notebooks import execute_notebook, list_notebooks

NOTEBOOKS = list_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code_cells, f"{path.name} has no code"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code_cells), (
        f"{path.name} is stored with outputs: run `jupyter nbconvert --clear-output --inplace {path}`"
    )
    tagged = [c for c in code_cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    assert "SMOKE_TEST" in "".join(tagged[0]["source"])


def test_notebooks_are_numbered_in_order():
    numbers = [int(nb.name[:2]) for nb in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1))


@pytest.fixture(scope="session")
def notebook_runs(tmp_path_factory):
    """One runs folder (with its cache and figures) shared by the notebooks of a test session."""
    return tmp_path_factory.mktemp("notebook_runs")


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_executes_in_smoke_mode(path, notebook_runs):
    if os.environ.get("MER_SMOKE_TEST") != "1":
        pytest.skip("set MER_SMOKE_TEST=1 to execute the notebooks (make test does)")
    executed = execute_notebook(
        path, smoke=True, timeout=900, runs_dir=notebook_runs, figures_dir=notebook_runs / "figures"
    )
    cells = json.loads(executed.read_text())["cells"]
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    # Quiet: no TensorFlow C++ start-up lines or kernel warnings in the executed notebook.
    stderr = "".join(
        "".join(o.get("text", "")) for c in cells for o in c.get("outputs", []) if o.get("name") == "stderr"
    )
    for chatter in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard", "running over TCP", "IProgress"):
        assert chatter not in stderr, f"{path.name} prints {chatter!r} into the notebook"
