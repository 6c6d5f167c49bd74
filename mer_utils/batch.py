"""Batch prediction: many clips, one row each, in a Parquet dataset written as it goes; serial or on Dask.

``mer predict PATH... --models RUN... --out OUT.parquet`` lands here. ``OUT.parquet`` is a folder of
``part-*.parquet`` files (one schema: path, each modality's availability, reason, weight and
probabilities, the fused label and probabilities, timings), readable as one table with pandas,
Dask or DuckDB; clips that could not be predicted go to ``OUT.parquet/_failures/`` with the reason
(readers of the dataset skip folders that start with ``_``). Parts are written atomically every few
clips, so a crash or Ctrl-C loses at most the clips in flight, and the same command run again
skips every clip already in either table.

Serial mode (the default) loads the models once in this process. ``workers=N`` starts a local Dask
cluster of N processes with one task thread each and ``cores / N`` math threads (TensorFlow,
CTranslate2, BLAS), so the cores are not oversubscribed; ``scheduler=ADDRESS`` uses a running
cluster (dask-jobqueue on Slurm, Kubernetes). Each worker process loads the models once (a cached
loader) and predicts a chunk of clips per task. A worker that dies (killed, out of memory, or stopped
by the per-clip ``timeout``) loses only its chunk: the chunk is retried clip by clip and a clip that
kills its worker again is recorded as a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from mer_utils.walk import files_under
from mer_utils.workers import DASK_MISSING, check_dask_options, open_dask_client, thread_environment

# Files a folder walk picks up as clips (what the clip branches and `mer index` read).
MEDIA_SUFFIXES = (".mp4", ".wav", ".avi", ".mov", ".mkv", ".webm", ".flv", ".m4a", ".mp3", ".flac")
# A PATH with one of these suffixes is a text file listing clips, one per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
# Sub-folder of the output dataset holding the failures table (dataset readers skip "_" folders).
FAILURES_FOLDER = "_failures"
# Sub-folder of the failures folder where a worker stopped by the timeout leaves the reason.
TIMEOUTS_FOLDER = ".timeouts"
# What the dataset was written with; a re-run with other models is refused.
MANIFEST_FILE = "_batch.json"
# Clips per Dask task: enough to hide the scheduler's few milliseconds per task, few enough that a
# dead worker loses little.
DEFAULT_CHUNK_SIZE = 4
# A part file is written after this many rows, or this many seconds since the last one.
FLUSH_ROWS = 64
FLUSH_SECONDS = 15.0
# Chunks in flight per worker: keeps every worker busy without queueing millions of futures.
CHUNKS_PER_WORKER = 4
# Times a task may take its worker down before Dask gives up on it (then it is retried clip by clip).
ALLOWED_FAILURES = 1


class BatchError(ValueError):
    """A batch job that cannot start: bad paths, or an output folder written with other models."""


# --- inputs ---------------------------------------------------------------------------------------------


def collect_clips(paths: Iterable[str | Path]) -> tuple[list[str], list[dict]]:
    """The clips named by ``paths`` (clips, folders walked recursively, text files listing paths).

    Returns (absolute clip paths in order, without repeats; failures for listed paths that do not
    exist). A PATH that does not exist or is neither a media file, a folder nor a list raises.
    """
    clips: list[str] = []
    missing: list[dict] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                p
                for p in files_under(path)
                if p.suffix.lower() in MEDIA_SUFFIXES
                and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            )
            clips.extend(os.path.abspath(p) for p in found)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                listed = Path(line).expanduser()
                listed = listed if listed.is_absolute() else path.parent / listed
                if listed.is_file():
                    clips.append(os.path.abspath(listed))
                else:
                    missing.append(
                        failure(
                            os.path.abspath(listed), "list", f"listed in {path} line {number}: no such file"
                        )
                    )
        elif path.is_file():
            if path.suffix.lower() not in MEDIA_SUFFIXES:
                raise BatchError(
                    f"{path}: not a clip ({', '.join(MEDIA_SUFFIXES)}) nor a list of paths "
                    f"({', '.join(LIST_SUFFIXES)}); give clips, folders or a text file of paths"
                )
            clips.append(os.path.abspath(path))
        else:
            raise FileNotFoundError(
                f"{path}: no such file or folder; give clips, folders or a text file of paths"
            )
    unique = list(dict.fromkeys(clips))
    return unique, missing


def chunks(items: Sequence, size: int) -> list[list]:
    """``items`` cut into lists of at most ``size``."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def folder_chunks(clips: Sequence[str], size: int) -> list[list[str]]:
    """``clips`` cut into chunks of at most ``size`` within each folder, dealt one folder at a time.

    Every folder's first chunk comes first, then every folder's second chunk, and so on. The first
    clip of a speaker computes the features of that speaker's other clips in its folder (the audio
    branch's speaker statistics) and caches them; dealt this way, two workers start on different
    folders instead of computing the same speaker's features at once, and a folder's later chunks
    read them from the cache.
    """
    by_folder: dict[str, list[str]] = {}
    for clip in clips:
        by_folder.setdefault(os.path.dirname(clip), []).append(clip)
    cut = [chunks(folder, size) for folder in by_folder.values()]
    return [
        folder[rank] for rank in range(max(map(len, cut), default=0)) for folder in cut if rank < len(folder)
    ]


# --- rows and tables ------------------------------------------------------------------------------------


def failure(path: str, stage: str, reason: str) -> dict:
    """One row of the failures table."""
    return {"path": path, "stage": stage, "reason": reason, "worker": worker_name()}


def worker_name() -> str:
    """host:pid of this process (the ``worker`` column)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def result_row(result: dict, modalities: Sequence[str], labels: Sequence[str]) -> dict:
    """The flat output row of one :func:`mer_utils.predict.predict_clip` result."""
    timings = result.get("timings", {})
    row: dict = {
        "path": result["clip"],
        "label": result["label"],
        "true_label": result.get("true_label"),
        "method": result.get("method"),
    }
    row.update(
        {f"prob_{label}": float(p) for label, p in zip(labels, result["fused_probabilities"], strict=True)}
    )
    for name in modalities:
        entry = result["modalities"].get(name, {})
        probabilities = entry.get("probabilities") if entry.get("available") else None
        row[f"{name}_available"] = bool(entry.get("available", False))
        row[f"{name}_reason"] = entry.get("reason")
        warnings = entry.get("details", {}).get("warnings")
        row[f"{name}_warnings"] = "; ".join(warnings) if warnings else None
        for key in ("weight", "confidence", "trust"):
            value = entry.get(key)
            row[f"{name}_{key}"] = None if value is None else float(value)
        for index, label in enumerate(labels):
            row[f"{name}_prob_{label}"] = None if probabilities is None else float(probabilities[index])
        row[f"{name}_seconds"] = timings.get(f"predict {name}")
    row["seconds"] = timings.get("total after loading")
    row["finished"] = time.time()
    row["worker"] = worker_name()
    return row


def row_schema(modalities: Sequence[str], labels: Sequence[str]):
    """The pyarrow schema of every part file (fixed, so parts with all-null columns still agree)."""
    import pyarrow as pa

    fields = [
        ("path", pa.string()),
        ("label", pa.string()),
        ("true_label", pa.string()),
        ("method", pa.string()),
    ]
    fields += [(f"prob_{label}", pa.float64()) for label in labels]
    for name in modalities:
        fields += [
            (f"{name}_available", pa.bool_()),
            (f"{name}_reason", pa.string()),
            (f"{name}_warnings", pa.string()),
            (f"{name}_weight", pa.float64()),
            (f"{name}_confidence", pa.float64()),
            (f"{name}_trust", pa.float64()),
        ]
        fields += [(f"{name}_prob_{label}", pa.float64()) for label in labels]
        fields.append((f"{name}_seconds", pa.float64()))
    fields += [("seconds", pa.float64()), ("finished", pa.float64()), ("worker", pa.string())]
    return pa.schema(fields)


def failure_schema():
    """The pyarrow schema of the failures table."""
    import pyarrow as pa

    return pa.schema(
        [("path", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("worker", pa.string())]
    )


def write_part(folder: Path, rows: list[dict], schema) -> Path:
    """Write ``rows`` as one new part file, atomically (a temporary name, then a rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{time.time_ns()}-{os.getpid()}.parquet"
    temporary = folder / f".{name}.tmp"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), temporary)
    os.replace(temporary, folder / name)
    return folder / name


def written_paths(folder: Path) -> set[str]:
    """The ``path`` values of every part file in ``folder`` (none when it does not exist)."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    if not folder.is_dir():
        return done
    for part in sorted(folder.glob("part-*.parquet")):
        try:
            done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        except Exception as error:  # pyarrow raises its own error classes for a broken file
            raise BatchError(
                f"{part}: unreadable part file ({error}); delete it and run the same command again"
            ) from error
    return done


def read_output(out: str | Path, failures: bool = False):
    """The output dataset (or its failures table) as one pandas DataFrame."""
    import pandas as pd
    import pyarrow.parquet as pq

    folder = Path(out) / FAILURES_FOLDER if failures else Path(out)
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        schema = failure_schema() if failures else None
        return schema.empty_table().to_pandas() if schema is not None else pd.DataFrame()
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


class PartWriter:
    """Buffers rows and writes a part file every :data:`FLUSH_ROWS` rows or :data:`FLUSH_SECONDS`."""

    def __init__(
        self, folder: Path, schema, flush_rows: int = FLUSH_ROWS, flush_seconds: float = FLUSH_SECONDS
    ):
        self.folder, self.schema = folder, schema
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.rows: list[dict] = []
        self.last = time.monotonic()
        self.written = 0

    def add(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.flush_rows or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            write_part(self.folder, self.rows, self.schema)
            self.written += len(self.rows)
            self.rows = []
        self.last = time.monotonic()


# --- the work of one task -------------------------------------------------------------------------------


def configure_threads(threads: int) -> None:
    """Cap this process's math threads (BLAS, OpenMP, TensorFlow, CTranslate2) at ``threads``.

    Environment variables reach libraries not loaded yet; TensorFlow, when already imported and not
    yet initialised, is set directly.
    """
    import sys

    os.environ.update(thread_environment(threads))
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        with contextlib.suppress(RuntimeError):  # already initialised: its pool stays as it is
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)


# The models of this process, by (run folders, fusion folder): one load per worker process.
_LOADED: dict = {}
_LOAD_LOCK = threading.Lock()


def cached_models(run_dirs: Sequence[str], fusion: str | None) -> dict:
    """:func:`mer_utils.predict.load_models`, once per process for the same runs and fusion folder."""
    from mer_utils.predict import load_models

    key = (tuple(str(r) for r in run_dirs), None if fusion is None else str(fusion))
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_models(list(key[0]), fusion=key[1])
        return _LOADED[key]


def predict_with_models(clip: str, loaded: dict) -> dict:
    """The default per-clip work: :func:`mer_utils.predict.predict_clip` with loaded models."""
    from mer_utils.predict import predict_clip

    return predict_clip(clip, loaded=loaded)


def timeout_marker(failures_folder: Path, clip: str) -> Path:
    """Where a worker stopped by the timeout on ``clip`` leaves the reason for the driver."""
    return failures_folder / TIMEOUTS_FOLDER / hashlib.sha1(clip.encode()).hexdigest()


@contextlib.contextmanager
def clip_deadline(clip: str, timeout: float | None, failures_folder: Path | None):
    """Stop this worker process when ``clip`` takes longer than ``timeout`` seconds.

    A decoder that hangs in C code cannot be interrupted from Python: the process leaves the reason
    in a marker file and exits; its Dask nanny starts a fresh worker and the driver records the clip.
    """
    if not timeout or failures_folder is None:
        yield
        return

    def stop() -> None:
        marker = timeout_marker(failures_folder, clip)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"timed out after {timeout:g} s (the worker was restarted)")
        os._exit(3)

    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def predict_chunk(
    clips: Sequence[str],
    run_dirs: Sequence[str],
    fusion: str | None,
    modalities: Sequence[str],
    labels: Sequence[str],
    threads: int | None = None,
    timeout: float | None = None,
    failures_folder: str | None = None,
    predict: Callable[[str, dict], dict] = predict_with_models,
) -> list[tuple[str, dict]]:
    """Predict a few clips in this process: ``[("row", row) or ("failure", failure row), ...]``.

    A clip that cannot be predicted (no modality usable, an unreadable file, a per-clip error)
    becomes a failure and the others go on; failing to load the models raises (the job stops).
    """
    from mer_utils.predict import NoModalityError

    if threads:
        configure_threads(threads)
    loaded = cached_models(run_dirs, fusion)
    folder = Path(failures_folder) if failures_folder else None
    results: list[tuple[str, dict]] = []
    for clip in clips:
        with clip_deadline(clip, timeout, folder):
            try:
                result = predict(clip, loaded)
                results.append(("row", result_row(result, modalities, labels)))
            except NoModalityError as error:
                results.append(("failure", failure(clip, "predict", str(error))))
            except MemoryError as error:
                results.append(("failure", failure(clip, "predict", f"out of memory ({error})")))
            except Exception as error:  # one bad clip never stops the job: recorded, with its type
                results.append(("failure", failure(clip, "predict", f"{type(error).__name__}: {error}")))
    return results


# --- the job ---------------------------------------------------------------------------------------------


def job_manifest(run_dirs: Sequence[str], fusion: str | None) -> dict:
    """What the output was written with (runs, fingerprints, fusion, modalities, labels); checks the runs."""
    from mer_utils.fusion.io import fusion_parameters_for_runs
    from mer_utils.runs import read_run_info

    if not run_dirs:
        raise ValueError("give at least one run folder with --models")
    parameters = fusion_parameters_for_runs(list(run_dirs), fusion_path=fusion)
    modalities = list(parameters["modalities"])
    infos = {name: read_run_info(entry["run_dir"]) for name, entry in parameters["modalities"].items()}
    labels = next(iter(infos.values()))["labels"]
    return {
        "models": [str(r) for r in run_dirs],
        "fusion": fusion,
        "modalities": modalities,
        "labels": list(labels),
        "fingerprints": {name: info.get("model_fingerprint") for name, info in infos.items()},
    }


def check_manifest(out: Path, manifest: dict) -> None:
    """Refuse to add rows to an output written with other models; write the manifest the first time."""
    path = out / MANIFEST_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        keys = ("modalities", "labels", "fingerprints", "fusion")
        if any(previous.get(k) != manifest.get(k) for k in keys):
            raise BatchError(
                f"{out}: written with other models or fusion ({previous.get('models')}, fusion "
                f"{previous.get('fusion')}); give another --out, or delete {out} to start again"
            )
        return
    if out.exists() and any(out.glob("part-*.parquet")):
        raise BatchError(f"{out}: holds part files but no {MANIFEST_FILE}; give another --out")
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / f".{MANIFEST_FILE}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2))
    os.replace(temporary, path)


def predict_batch(
    paths: Iterable[str | Path],
    run_dirs: Sequence[str | Path],
    out: str | Path,
    fusion: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    timeout: float | None = None,
    threads: int | None = None,
    memory_limit: str | None = None,
    progress: bool = True,
    predict: Callable[[str, dict], dict] = predict_with_models,
    flush_rows: int = FLUSH_ROWS,
) -> dict:
    """Predict every clip of ``paths`` into the Parquet dataset ``out``; returns a summary.

    Serial without ``workers`` and ``scheduler``; ``workers=N`` starts a local Dask cluster of N
    processes; ``scheduler`` connects to a running one. Clips already in ``out`` (rows or failures)
    are skipped. ``timeout`` (seconds per clip) needs Dask workers: a stuck worker is replaced.
    The summary: clips, skipped (already done), rows, failures, seconds, clips_per_second, mode.
    """
    try:
        import pyarrow  # noqa: F401
    except ImportError as error:
        raise ImportError("--out writes Parquet with pyarrow: pip install 'mer-utils[scale]'") from error
    out = Path(out)
    check_dask_options(workers, scheduler)
    if timeout is not None and timeout <= 0:
        raise ValueError(f"--timeout must be positive, got {timeout}")
    run_dirs = [os.path.abspath(r) for r in run_dirs]
    fusion = None if fusion is None else os.path.abspath(fusion)
    manifest = job_manifest(run_dirs, fusion)
    clips, missing = collect_clips(paths)
    if not clips and not missing:
        raise BatchError(f"no clips ({', '.join(MEDIA_SUFFIXES)}) found in {', '.join(map(str, paths))}")
    check_manifest(out, manifest)
    failures_folder = out / FAILURES_FOLDER
    done = written_paths(out) | written_paths(failures_folder)
    todo = [c for c in clips if c not in done]
    rows = PartWriter(out, row_schema(manifest["modalities"], manifest["labels"]), flush_rows=flush_rows)
    failed = PartWriter(failures_folder, failure_schema(), flush_rows=flush_rows)
    failed.add([m for m in missing if m["path"] not in done])
    task = {
        "run_dirs": run_dirs,
        "fusion": fusion,
        "modalities": manifest["modalities"],
        "labels": manifest["labels"],
        "timeout": timeout,
        "failures_folder": str(failures_folder),
        "predict": predict,
    }
    start = time.perf_counter()
    bar = _progress_bar(len(todo), len(clips) - len(todo), progress)
    mode = "serial"
    try:
        if workers or scheduler:
            mode = f"dask {scheduler}" if scheduler else f"dask {workers} workers"
            _run_dask(todo, task, rows, failed, bar, workers, scheduler, chunk_size, threads, memory_limit)
        else:
            if timeout:
                import logging

                logging.getLogger(__name__).warning("--timeout applies with --workers or --scheduler only")
            _run_serial(todo, task, rows, failed, bar)
    finally:
        # Ctrl-C or a crash: what finished is kept, and the same command resumes after it.
        rows.flush()
        failed.flush()
        bar.close()
    seconds = time.perf_counter() - start
    return {
        "clips": len(clips) + len(missing),
        "skipped": len(clips) - len(todo),
        "rows": rows.written,
        "failures": failed.written,
        "seconds": round(seconds, 3),
        "clips_per_second": round(len(todo) / seconds, 3) if seconds > 0 and todo else None,
        "mode": mode,
        "out": str(out),
    }


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total + initial, initial=initial, unit="clip", disable=not enabled, smoothing=0.1)


def _store(results: list[tuple[str, dict]], rows: PartWriter, failed: PartWriter) -> None:
    rows.add([r for kind, r in results if kind == "row"])
    failed.add([r for kind, r in results if kind == "failure"])


def _run_serial(todo: list[str], task: dict, rows: PartWriter, failed: PartWriter, bar) -> None:
    serial = dict(task, timeout=None)
    for clip in todo:
        _store(predict_chunk([clip], **serial), rows, failed)
        bar.update(1)


def _run_dask(
    todo: list[str],
    task: dict,
    rows: PartWriter,
    failed: PartWriter,
    bar,
    workers: int | None,
    scheduler: str | None,
    chunk_size: int,
    threads: int | None,
    memory_limit: str | None,
) -> None:
    try:
        import dask
        from distributed import as_completed
    except ImportError as error:
        raise ImportError(DASK_MISSING) from error

    with contextlib.ExitStack() as stack:
        # Saturation 1: a worker holds only the task it runs, so a worker's death blames that task
        # alone, not an innocent one queued behind it (the local scheduler reads this config).
        settings = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}
        settings["distributed.scheduler.worker-saturation"] = 1.0
        stack.enter_context(dask.config.set(settings))
        client, count, per_worker = open_dask_client(stack, workers, scheduler, threads, memory_limit)
        task = dict(task, threads=per_worker)
        pending = folder_chunks(todo, chunk_size)[::-1]
        window = max(2, count * CHUNKS_PER_WORKER)
        chunk_of: dict = {}
        finished = as_completed()

        def submit(chunk: list[str]) -> None:
            future = client.submit(predict_chunk, chunk, pure=False, **task)
            chunk_of[future.key] = chunk
            finished.add(future)

        while pending and len(chunk_of) < window:
            submit(pending.pop())
        for future in finished:
            chunk = chunk_of.pop(future.key)
            try:
                results, error = future.result(), None
            except Exception as raised:  # the task's error, or KilledWorker when its workers died
                results, error = None, raised
            if error is None:
                _store(results, rows, failed)
                bar.update(len(chunk))
            elif _worker_died(error):
                if len(chunk) > 1:
                    pending.extend([clip] for clip in chunk[::-1])  # find the clip that kills its worker
                else:
                    failed.add(
                        [failure(chunk[0], "worker", _death_reason(Path(task["failures_folder"]), chunk[0]))]
                    )
                    bar.update(1)
            else:
                raise error
            future.release()
            while pending and len(chunk_of) < window:
                submit(pending.pop())


def _worker_died(error: BaseException) -> bool:
    """Whether a task failed because its worker process died (killed, out of memory, timed out)."""
    from distributed.scheduler import KilledWorker

    return isinstance(error, KilledWorker)


def _death_reason(failures_folder: Path, clip: str) -> str:
    """Why a clip's worker died: the timeout's marker if it left one, else what it may have been."""
    marker = timeout_marker(failures_folder, clip)
    if marker.is_file():
        reason = marker.read_text()
        marker.unlink()
        return reason
    return (
        f"its worker process died {ALLOWED_FAILURES + 1} times while predicting it "
        "(killed, or out of memory: try --memory-limit or fewer --workers)"
    )
