"""End-to-end jobs behind ``mer train`` / ``mer evaluate`` / ``mer predict``: one module per branch.

Every branch module (``text``, ``audio``, ``spectrogram``, ``video``, ``faces``) follows the one
contract of :mod:`mer_utils.pipelines.base` (read it first: the hooks a branch supplies and the
run-folder schema) and exposes ``train(data, out, *, seed, smoke, model=None) -> dict`` plus its
hooks; evaluating, predicting and loading go through ``base.evaluate``, ``base.predict_table``,
``base.predict_file`` and ``base.load_model`` for every branch. Branch modules are imported lazily
by the CLI, and no branch module imports another (shared parts live in ``base``, ``audio_common``
or below).
"""

from mer_utils.config import BRANCHES


def branch_module(branch: str):
    """Import and return ``mer_utils.pipelines.<branch>``; unknown branches raise ``ValueError``."""
    import importlib

    if branch not in BRANCHES:
        raise ValueError(f"unknown branch {branch!r}; expected one of {BRANCHES}")
    return importlib.import_module(f"mer_utils.pipelines.{branch}")
