"""Every file under a folder, following folders that are symbolic links.

Users lay corpora out with links (``data/Actor_01 -> /mnt/ravdess/Actor_01``), and Python 3.11's
``Path.rglob`` does not descend into a linked folder, so a folder of linked actors looked empty. The
walk here follows links, visits each real folder once (a link back up the tree cannot loop) and
returns the paths as found under ``root``, sorted.
"""

from __future__ import annotations

import os
from pathlib import Path


def files_under(root: str | Path) -> list[Path]:
    """Every regular file below ``root`` (linked folders followed, each real folder once), sorted."""
    root = Path(root)
    seen: set[str] = set()
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        found.extend(Path(folder, name) for name in names if os.path.isfile(os.path.join(folder, name)))
    return sorted(found)
