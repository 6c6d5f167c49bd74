"""End-to-end jobs behind ``mer train`` / ``mer evaluate``: one module per branch.

Each branch module (``text``, ``audio``, ``spectrogram``, ``video``, ``faces``) exposes
``train(data, out, *, seed, smoke, model=None) -> dict`` (writes a run folder and returns
its test metrics) and ``evaluate(run_dir, data) -> dict`` (scores a saved run on every
sample of another data set). Branch modules are imported lazily by the CLI.
"""

from mer_utils.config import BRANCHES


def branch_module(branch: str):
    """Import and return ``mer_utils.pipelines.<branch>``; unknown branches raise ``ValueError``."""
    import importlib

    if branch not in BRANCHES:
        raise ValueError(f"unknown branch {branch!r}; expected one of {BRANCHES}")
    return importlib.import_module(f"mer_utils.pipelines.{branch}")
