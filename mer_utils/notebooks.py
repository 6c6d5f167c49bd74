"""Execute the numbered notebooks headless, in order, and report time and status of each."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from mer_utils.config import PROJECT_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
# Executed copies go here (outside git), so the committed notebooks stay without outputs.
EXECUTED_DIR = PROJECT_ROOT / "runs" / "notebooks"


def list_notebooks(only: Sequence[str] | None = None) -> list[Path]:
    """The numbered notebooks in order, optionally only those whose names start with a prefix in ``only``."""
    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(prefix) for prefix in only)]
        if not notebooks:
            raise ValueError(f"no notebook in {NOTEBOOK_DIR} starts with {list(only)}")
    return notebooks


def execute_notebook(path: Path, smoke: bool, timeout: int = 1800, output_dir: Path = EXECUTED_DIR) -> Path:
    """Execute one notebook with papermill (cwd = notebooks/), writing the executed copy to ``output_dir``."""
    import papermill

    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / path.name
    previous = os.environ.get("MER_SMOKE_TEST")
    os.environ["MER_SMOKE_TEST"] = "1" if smoke else "0"
    # TensorFlow's C++ start-up chatter would otherwise land in every executed notebook.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        papermill.execute_notebook(
            str(path),
            str(output),
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=timeout,
        )
    finally:
        if previous is None:
            os.environ.pop("MER_SMOKE_TEST", None)
        else:
            os.environ["MER_SMOKE_TEST"] = previous
    return output


def run_notebooks(smoke: bool = False, only: Sequence[str] | None = None, timeout: int = 1800) -> list[dict]:
    """Execute the notebooks in order; print and return name, status, seconds and error of each.

    A failing notebook is reported and the next one still runs (later notebooks train
    what they need themselves when an earlier run folder is missing).
    """
    results = []
    for path in list_notebooks(only):
        start = time.perf_counter()
        status, error = "ok", ""
        try:
            execute_notebook(path, smoke=smoke, timeout=timeout)
        except Exception as exc:  # report every failure, then go on with the next notebook
            status, error = (
                "failed",
                str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else repr(exc),
            )
        seconds = time.perf_counter() - start
        results.append(
            {"notebook": path.name, "status": status, "seconds": round(seconds, 1), "error": error}
        )
        print(f"{path.name:45s} {status:7s} {seconds:7.1f} s {error}", flush=True)
    failed = sum(r["status"] != "ok" for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return results
