"""Feature caches filled in parallel on Dask: `mer train ... --workers N | --scheduler ADDRESS`.

Training reads every clip's features through :func:`mer_utils.audio.extract_features` (Whisper
embeddings, MFCC sequences, utterance statistics, log-mel spectrograms) or
:func:`mer_utils.faces.extract_faces` (face detection and crops, the video branch), which cache each
clip's result on disk. Inside :func:`cluster`, they first hand the clips to :func:`fill`:
chunks of clips go to the Dask workers, each computes and caches its clips' features, and the
training process then reads them all from the cache, in the clips' order, as a serial run would
(same files, same keys). The arrays equal the serial ones up to floating-point rounding: a worker
runs with fewer math threads, so some sums add up in another order (on the demo set, utterance
statistics differed in the fifth decimal and a logreg run predicted the same label for every clip).
Clips that cannot be read are reported back with their reason and skipped as in a serial run.

The same engine as batch prediction (:mod:`mer_utils.batch`): a local cluster of worker processes
(``workers``) or a running one (``scheduler``: Slurm through dask-jobqueue, Kubernetes). Workers of a
remote cluster need the clips and the cache folder at the same paths (a shared file system; set
``MER_CACHE_DIR``). The text and faces branches read a CSV or face images, not clips, and refuse it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from mer_utils.workers import check_dask_options, open_dask_client

# Clips per Dask task: enough to hide the scheduler's per-task cost (about 1 ms), few enough that
# two workers share a small corpus evenly.
CHUNK_SIZE = 8

# The client of the cluster opened by :func:`cluster` (None outside it).
_ACTIVE: dict = {"client": None}


@contextlib.contextmanager
def cluster(
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    memory_limit: str | None = None,
) -> Iterator[object | None]:
    """Within this block, feature extraction runs on Dask; without workers or a scheduler, serially.

    Yields the Dask client (None when serial). Refuses ``workers`` and ``scheduler`` together.
    """
    check_dask_options(workers, scheduler)
    if not workers and not scheduler:
        yield None
        return

    with contextlib.ExitStack() as stack:
        client, _, _ = open_dask_client(stack, workers, scheduler, threads, memory_limit)
        previous, _ACTIVE["client"] = _ACTIVE["client"], client
        try:
            yield client
        finally:
            _ACTIVE["client"] = previous


def active() -> bool:
    """True inside :func:`cluster` with workers or a scheduler."""
    return _ACTIVE["client"] is not None


def fill(paths: Sequence[str], compute: Callable[[str], str | None], chunk_size: int = CHUNK_SIZE) -> dict:
    """Run ``compute(path)`` for every path on the active cluster; {path: reason} of those that failed.

    ``compute`` caches one clip's features and returns None, or the reason it could not (an
    unreadable clip); any other error stops the job, as it would serially.
    """
    from distributed import as_completed

    client = _ACTIVE["client"]
    if client is None:
        raise RuntimeError("feature_map.fill needs an open feature_map.cluster(workers=... or scheduler=...)")
    chunks = [list(paths[i : i + chunk_size]) for i in range(0, len(paths), chunk_size)]
    futures = [client.submit(_compute_chunk, chunk, compute, pure=False) for chunk in chunks]
    failures: dict = {}
    for future in as_completed(futures):
        failures.update(future.result())
        future.release()
    return failures


def _compute_chunk(paths: list[str], compute: Callable[[str], str | None]) -> dict:
    reasons = {path: compute(path) for path in paths}
    return {path: reason for path, reason in reasons.items() if reason is not None}
