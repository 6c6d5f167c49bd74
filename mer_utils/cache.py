"""The one disk cache location of every intermediate result (audio features, face crops, images, embeddings).

The folder is read at call time, not frozen at import: ``MER_CACHE_DIR`` when set, else
:data:`mer_utils.config.CACHE_DIR` (``.cache`` beside the project). Each kind of result has its
own sub-folder; a caller may pass an explicit folder instead (tests, notebooks).
"""

from __future__ import annotations

import os
from pathlib import Path

# Environment variable naming the cache folder (read on every call).
CACHE_ENV = "MER_CACHE_DIR"
# Sub-folders of the cache, one per kind of cached result.
AUDIO = "audio"
FACES = "faces"
FACE_IMAGES = "face_images"
TEXT_EMBEDDINGS = "text_embeddings"
TEXT_ENCODERS = "text_encoders"
WHISPER = "whisper"
# Every kind, in one tuple (the branch registry names the kinds each branch writes).
KINDS = (AUDIO, FACES, FACE_IMAGES, TEXT_EMBEDDINGS, TEXT_ENCODERS, WHISPER)


def cache_root() -> Path:
    """The cache folder now: ``MER_CACHE_DIR`` if set, else ``mer_utils.config.CACHE_DIR``."""
    from mer_utils import config

    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path(config.CACHE_DIR)


def cache_dir(kind: str, folder: str | Path | None = None) -> Path:
    """Folder of one kind of cached result: ``folder`` when given, else ``cache_root() / kind``."""
    if folder is not None and str(folder) != "":
        return Path(folder)
    if not kind or "/" in kind or kind in (".", ".."):
        raise ValueError(f"cache kind must be a plain folder name, got {kind!r}")
    return cache_root() / kind
