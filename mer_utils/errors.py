"""How `mer` says what went wrong: one line, the same words in the terminal and in `mer app`'s page.

:mod:`mer_utils.cli` prints ``mer <command>: <error_message>`` and the page of :mod:`mer_utils.app`
shows :func:`error_message`: one source for both.
"""

from __future__ import annotations

import zipfile

# Errors that mean bad input, a missing file or package, or a refused file (not a bug).
EXPECTED_ERRORS = (ValueError, OSError, ImportError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile)


def one_line(error: BaseException) -> str:
    """The error's message on one line (OSError's own message names the file)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def error_message(error: BaseException) -> str:
    """What `mer` prints after ``mer <command>:`` for ``error``: an expected error, out of memory or a bug."""
    if isinstance(error, MemoryError):
        detail = f" ({one_line(error)})" if str(error) else ""
        return f"error: out of memory{detail}; try a shorter clip, fewer files or a smaller model"
    if isinstance(error, EXPECTED_ERRORS):
        return f"error: {one_line(error)}"
    return (
        f"internal error: {type(error).__name__}: {one_line(error)} "
        "(a bug; rerun with -v DEBUG for the traceback and report it)"
    )
