"""End-to-end jobs behind ``mer train`` / ``mer evaluate`` / ``mer predict``: one module per branch.

Every branch module follows the one contract of :mod:`mer_utils.pipelines.base` (read it first:
the hooks a branch supplies and the run-folder schema) and is listed, with its import path, in the
registry of :mod:`mer_utils.branches` (the one list of branches). Training goes
through ``base.train(branch, data, out, settings)``, evaluating, predicting and loading through
``base.evaluate``, ``base.predict_table``, ``base.predict_file`` and ``base.load_model``, for every
branch. Branch modules are imported lazily by the CLI, and no branch module imports another
(shared parts live in ``base``, ``audio_common`` or below).
"""

from mer_utils.branches import get_branch


def branch_module(branch: str):
    """Import and return a registered branch's module (:mod:`mer_utils.branches`); unknown ones raise ``ValueError``."""
    import importlib

    return importlib.import_module(get_branch(branch).module)
