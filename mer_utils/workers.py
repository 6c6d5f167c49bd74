"""Process pools whose workers die with their parent, so `kill -9` of `mer` leaves no process behind."""

from __future__ import annotations

import os
import sys
import threading
import time

# Linux prctl option: the signal a process receives when its parent dies.
PR_SET_PDEATHSIG = 1
# How often (seconds) the fallback thread checks whether the parent is still alive.
PARENT_POLL_SECONDS = 0.5
# Environment variables that set the math threads of a process (BLAS, OpenMP, TensorFlow, CTranslate2
# through MER_THREADS); they reach the libraries a process has not loaded yet.
THREAD_ENV = (
    "MER_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


# What to do when Dask is not installed (`--workers` / `--scheduler` of `mer predict` and `mer train`).
DASK_MISSING = "--workers and --scheduler need Dask: pip install 'mer-utils[scale]' (or pip install 'dask[distributed]' pyarrow)"


def default_threads(processes: int) -> int:
    """Math threads per process so that processes x threads = the cores of this machine."""
    return max(1, (os.cpu_count() or 1) // max(1, processes))


def thread_environment(threads: int) -> dict[str, str]:
    """The :data:`THREAD_ENV` values that cap a new process at ``threads`` math threads (one inter-op thread)."""
    return {name: str(1 if name == "TF_NUM_INTEROP_THREADS" else threads) for name in THREAD_ENV}


def check_dask_options(workers: int | None, scheduler: str | None) -> None:
    """Refuse a worker count below 1, and ``workers`` with ``scheduler`` (a local cluster or a running one)."""
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if workers and scheduler:
        raise ValueError("give --workers (a local cluster) or --scheduler (a running one), not both")


def open_dask_client(
    stack,
    workers: int | None,
    scheduler: str | None,
    threads: int | None = None,
    memory_limit: str | None = None,
):
    """A Dask client entered on the ``contextlib.ExitStack`` ``stack``: (client, workers, threads per worker).

    ``scheduler`` connects to a running cluster (its cores are its own business: ``threads`` or
    None); else a local cluster of ``workers`` processes with one task thread each and
    ``threads`` (default: the cores shared out) math threads, without a dashboard.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise ImportError(DASK_MISSING) from error

    if scheduler:
        client = stack.enter_context(Client(scheduler))
        return client, max(1, len(client.scheduler_info().get("workers", {}))), threads or None
    count = workers or 1
    per_worker = threads or default_threads(count)
    cluster = stack.enter_context(
        LocalCluster(
            n_workers=count,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit or "auto",
            dashboard_address=None,
            env=thread_environment(per_worker),
        )
    )
    return stack.enter_context(Client(cluster)), count, per_worker


def exit_with_parent() -> None:
    """Make this worker process end when its parent ends (pass as a pool's ``initializer``).

    A parent killed with SIGKILL cannot stop its workers; on Linux the kernel sends them SIGKILL
    (``PR_SET_PDEATHSIG``), elsewhere a daemon thread notices the parent is gone and exits.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass  # no prctl: the thread below still ends the worker
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="exit-with-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)
