"""Execute the numbered notebooks headless, in order, and report time and status of each.

Each mode (smoke, full) writes its run folders, caches and executed copies into a folder of its
own (``runs/notebooks/<mode>/``), so notebook 06 only ever fuses the runs its own mode trained.
The kernels run quietly: TensorFlow's C++ start-up lines and the kernel's own log go to a log
file per notebook (``<mode folder>/logs/``), not into the terminal or the executed notebook.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mer_utils.config import CHECKOUT_ROOT, FIGURES_DIR, PROJECT_ROOT, RUNS_DIR

# The notebooks ship with a checkout of the repository, not with an installed package.
NOTEBOOK_DIR = (CHECKOUT_ROOT or PROJECT_ROOT) / "notebooks"
# Kernel settings that keep library chatter out of the terminal and the executed notebooks.
QUIET_KERNEL_ENV = {
    # TensorFlow's C++ INFO / WARNING lines (its oneDNN banner ignores this; see the log file).
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # Python warnings that say nothing about the notebook's own code: library deprecations, and
    # tqdm.auto's "IProgress not found" (no ipywidgets: a text bar is what a headless run wants).
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning,ignore:IProgress not found",
}
# ipykernel would forward low-level (C++) stderr into the notebook; it goes to the log file instead.
KERNEL_ARGUMENTS = ["--IPKernelApp.capture_fd_output=False"]
# The notebooks (by number) whose run folders or caches a notebook reads: with ``jobs > 1`` it starts
# only after them. 06 fuses the runs of 02-04 (and sets 03's MFCC runs beside 04's spectrogram run), and
# 07 reuses the face crops 02 caches (run together, both would cut the same faces).
NEEDS = {"06": ("02", "03", "04"), "07": ("02",)}
# MIME type of the key numbers a notebook records (:func:`record_results`); tests read them back.
RESULTS_MIME = "application/vnd.mer.results+json"


class NoNotebooksError(FileNotFoundError):
    """No numbered notebooks where they should be (e.g. the package is installed outside a checkout)."""


def mode_name(smoke: bool) -> str:
    """``"smoke"`` or ``"full"``: the folder name of a notebook run's mode."""
    return "smoke" if smoke else "full"


def notebook_runs_dir(smoke: bool, runs_root: Path = RUNS_DIR) -> Path:
    """The folder of one mode's notebook runs: ``runs/notebooks/<smoke|full>``."""
    return Path(runs_root) / "notebooks" / mode_name(smoke)


def list_notebooks(only: Sequence[str] | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks in order, optionally only those whose names start with a prefix in ``only``.

    Raises :class:`NoNotebooksError` when ``notebook_dir`` holds none (an installed package has no
    notebooks: run ``mer notebooks`` in a checkout, or set MER_HOME to one) and ``ValueError``
    when no notebook matches ``only``.
    """
    notebook_dir = Path(notebook_dir)
    notebooks = sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise NoNotebooksError(
            f"no notebooks (NN_name.ipynb) in {notebook_dir}: they come with a checkout of the "
            "repository; run `mer notebooks` inside one (or set MER_HOME to it)"
        )
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(prefix) for prefix in only)]
        if not notebooks:
            raise ValueError(f"no notebook in {notebook_dir} starts with {list(only)}")
    return notebooks


def kernel_environment(
    smoke: bool,
    runs_dir: Path,
    cache_dir: Path,
    figures_dir: Path = FIGURES_DIR,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a notebook kernel: mode, its own runs and cache folders, quiet libraries."""
    env = dict(os.environ if base is None else base)
    for name, value in QUIET_KERNEL_ENV.items():
        env.setdefault(name, value)
    env.update(
        {
            "MER_SMOKE_TEST": "1" if smoke else "0",
            "MER_RUNS_DIR": str(runs_dir),
            "MER_CACHE_DIR": str(cache_dir),
            "MER_FIGURES_DIR": str(figures_dir),
            # The kernel starts in notebooks/: without this an installed package would resolve there.
            "MER_HOME": str(PROJECT_ROOT),
        }
    )
    return env


def _quiet_kernel_manager(env: dict[str, str], log_path: Path):
    """A kernel manager class whose kernels get ``env``, IPC sockets and stderr into ``log_path``."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            # Local sockets: no TCP ports (and no "running over TCP without encryption" warning), in a
            # short private folder (socket paths are limited to about 100 characters; the default
            # would put them into the notebooks' folder).
            self._mer_socket_dir = tempfile.mkdtemp(prefix="mer-kernel-")
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", os.path.join(self._mer_socket_dir, "ipc"))
            super().__init__(**kwargs)

        async def start_kernel(self, **kwargs):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._mer_log = open(log_path, "ab")  # noqa: SIM115 (closed in cleanup_resources)
            kwargs.update(env=env, stdout=self._mer_log, stderr=self._mer_log)
            return await super().start_kernel(**kwargs)

        async def cleanup_resources(self, restart: bool = False) -> None:
            await super().cleanup_resources(restart=restart)
            log = getattr(self, "_mer_log", None)
            if log is not None:
                log.close()
            if not restart:
                shutil.rmtree(self._mer_socket_dir, ignore_errors=True)

    return QuietKernelManager


def execute_notebook(
    path: Path,
    smoke: bool,
    timeout: int = 1800,
    output_dir: Path | None = None,
    runs_dir: Path | None = None,
    cache_dir: Path | None = None,
    figures_dir: Path | None = None,
    progress: bool = False,
) -> Path:
    """Execute one notebook with papermill (cwd = notebooks/), writing the executed copy to ``output_dir``.

    ``runs_dir`` / ``cache_dir`` (default: this mode's ``runs/notebooks/<mode>`` and its ``cache``)
    reach the kernel as MER_RUNS_DIR / MER_CACHE_DIR; the executed copy goes to ``output_dir``
    (default ``runs_dir/executed``) and the kernel's stderr to ``output_dir/logs/<name>.log``.
    """
    import papermill

    runs_dir = Path(runs_dir) if runs_dir is not None else notebook_runs_dir(smoke)
    cache_dir = Path(cache_dir) if cache_dir is not None else runs_dir / "cache"
    output_dir = Path(output_dir) if output_dir is not None else runs_dir / "executed"
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / path.name
    env = kernel_environment(
        smoke, runs_dir, cache_dir, Path(figures_dir) if figures_dir is not None else FIGURES_DIR
    )
    papermill.execute_notebook(
        str(path),
        str(output),
        cwd=str(path.parent),
        kernel_name="python3",
        progress_bar={"leave": False, "desc": path.stem[:24]} if progress else False,
        execution_timeout=timeout,
        kernel_manager_class=_quiet_kernel_manager(env, output_dir / "logs" / f"{path.stem}.log"),
        extra_arguments=KERNEL_ARGUMENTS,
    )
    return output


# Colour codes in tracebacks (IPython colours them even for a headless kernel).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_line(error: BaseException) -> str:
    """The one line that says what went wrong: ``Name: message`` of a notebook cell, else the last line."""
    ename, evalue = getattr(error, "ename", None), getattr(error, "evalue", None)
    if ename:
        text = f"{ename}: {evalue}" if evalue else str(ename)
    else:
        text = str(error)
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return (lines[-1] if lines else repr(error))[:300]


def run_notebooks(
    smoke: bool = False,
    only: Sequence[str] | None = None,
    timeout: int = 1800,
    runs_dir: Path | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    jobs: int = 1,
) -> list[dict]:
    """Execute the notebooks; print one line per notebook (name, status, seconds, error) and a summary.

    ``jobs=1`` runs them one after the other in order. ``jobs=N`` runs up to N kernels at once, a
    notebook starting only once the notebooks it reads (:data:`NEEDS`) have ended; lines come in the
    order notebooks end. The kernels are not capped to a share of the cores: one kernel's
    single-threaded stretches (decoding, features, plots) leave the other the spare core, and the
    last notebook running gets them all.
    A failing notebook is reported and the others still run (later notebooks train what they need
    themselves when an earlier run folder is missing). Runs, caches and the executed copies go to
    ``runs_dir`` (default ``runs/notebooks/<smoke|full>``). Returns the results in notebook order.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    notebooks = list_notebooks(only, notebook_dir)
    runs_dir = Path(runs_dir) if runs_dir is not None else notebook_runs_dir(smoke)
    parallel = jobs > 1 and len(notebooks) > 1
    print(
        f"executing {len(notebooks)} notebooks in {mode_name(smoke)} mode"
        + (f", {jobs} at a time" if parallel else "")
        + f"; runs, caches and executed copies in {runs_dir}",
        flush=True,
    )

    def execute(path: Path) -> dict:
        start = time.perf_counter()
        status, error = "ok", ""
        try:
            execute_notebook(
                path,
                smoke=smoke,
                timeout=timeout,
                runs_dir=runs_dir,
                progress=sys.stderr.isatty() and not parallel,
            )
        except Exception as exc:  # report every failure, then go on with the other notebooks
            status, error = "failed", error_line(exc)
        seconds = time.perf_counter() - start
        print(f"{path.name:42s} {status:6s} {seconds:7.1f} s  {error}".rstrip(), flush=True)
        return {"notebook": path.name, "status": status, "seconds": round(seconds, 1), "error": error}

    started = time.perf_counter()
    results: dict[str, dict] = {}
    # In parallel, the notebooks others wait for start first (the longest chain decides the total).
    waiting = sorted(notebooks, key=lambda p: -len(_waiting_for(p.name[:2]))) if parallel else list(notebooks)
    running: dict = {}
    with ThreadPoolExecutor(max_workers=jobs if parallel else 1) as pool:
        while waiting or running:
            for path in list(waiting):
                if len(running) >= (jobs if parallel else 1):
                    break
                needs = {p.name for p in waiting} | {p.name for p in running.values()}
                if any(name[:2] in NEEDS.get(path.name[:2], ()) for name in needs):
                    continue
                waiting.remove(path)
                running[pool.submit(execute, path)] = path
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                results[running.pop(future).name] = future.result()
    ordered = [results[path.name] for path in notebooks]
    failed = sum(r["status"] != "ok" for r in ordered)
    print(
        f"{len(ordered) - failed} passed, {failed} failed in {time.perf_counter() - started:.0f} s "
        f"(executed copies and kernel logs in {runs_dir / 'executed'})",
        flush=True,
    )
    return ordered


def _waiting_for(number: str) -> set[str]:
    """The notebooks (by number) that wait, directly or through others, for notebook ``number`` (:data:`NEEDS`)."""
    waiting = {later for later, needs in NEEDS.items() if number in needs}
    return waiting.union(*(_waiting_for(later) for later in waiting))


def _plain(value):
    """JSON form of the numpy scalars, arrays and paths a notebook's results hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot record a {type(value).__name__} as JSON: {value!r}")


def record_results(values: Mapping[str, object]) -> dict:
    """Show a notebook's key numbers as one JSON output that :func:`read_results` finds again.

    Call it in the last cell; the numbers travel in the executed notebook (a display output of
    type :data:`RESULTS_MIME`, with the same JSON as text), so no extra package is needed.
    """
    from IPython.display import display

    plain = json.loads(json.dumps(dict(values), default=_plain))
    display({RESULTS_MIME: plain, "text/plain": json.dumps(plain, indent=1)}, raw=True)
    return plain


def read_results(executed: Path) -> dict:
    """The key numbers an executed notebook recorded with :func:`record_results` (merged, later wins).

    Raises ``ValueError`` naming the notebook when it recorded none.
    """
    notebook = json.loads(Path(executed).read_text())
    results: dict = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RESULTS_MIME in data:
                value = data[RESULTS_MIME]
                results.update(json.loads(value) if isinstance(value, str) else value)
    if not results:
        raise ValueError(f"{executed}: no recorded results (a cell calling record_results)")
    return results
