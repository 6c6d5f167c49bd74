"""Where a first `make demo` spends its time: install, demo data, each notebook and its slowest cells.

A first run on a fresh machine is what a student meets, so the script measures one: it clones the
checkout's HEAD into a new folder, gives every process a new empty home (no pip download cache, no
~/.keras, no matplotlib font cache, no numba cache: the clone's own venv is new too), then times

* ``make setup`` (the install, with the once-per-machine warm-up it ends with),
* ``make demo-data`` (the synthetic clips),
* ``make notebooks`` (every notebook in full mode, as ``make demo`` runs them: two at a time, so
  the notebooks' own times overlap and their total is the wall clock), and inside each notebook
  every cell (the durations papermill writes into the executed copies),

and with ``--warm`` the same ``make demo`` once more in the same clone (what a second run costs).
The machine's load average before and after is recorded, and the share of CPU time other work took
in the 5 s before the clone's install starts (``/proc/stat``): a figure measured while other jobs ran
says so. The load average alone cannot tell: it is a 1-minute mean that still counts work which has
just ended.

    .venv/bin/python scripts/benchmark_demo.py --fresh [--warm] [--keep DIR] [--results demo_time]
    .venv/bin/python scripts/benchmark_demo.py --executed runs/notebooks/full/executed   # cells of a run

``--executed DIR`` only prints the per-cell breakdown of notebooks already executed there.
``--results demo_time`` writes results/demo_time.json; then ``python scripts/render_results.py``.
``--record OUT --results demo_time`` writes it from the output of an earlier ``--fresh`` run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The checkout this script belongs to (cloned by --fresh).
ROOT = Path(__file__).resolve().parents[1]
# Cells listed per notebook, slowest first.
TOP_CELLS = 4
# A cell shorter than this is not listed (import cells of a warm run, plots).
MIN_CELL_SECONDS = 2.0
# One line of `mer notebooks`: name, status, seconds.
NOTEBOOK_LINE = re.compile(r"^(\d\d_\S+\.ipynb)\s+(ok|failed)\s+([\d.]+) s")


def cell_times(executed: Path) -> list[dict]:
    """Each code cell of an executed notebook: its number (1-based, code cells only), seconds and first line."""
    notebook = json.loads(Path(executed).read_text())
    cells = []
    number = 0
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        number += 1
        seconds = (cell.get("metadata", {}).get("papermill") or {}).get("duration")
        source = "".join(cell.get("source", ""))
        first = next((line.strip() for line in source.splitlines() if line.strip()), "")
        if seconds is not None:
            cells.append({"cell": number, "seconds": round(float(seconds), 1), "first_line": first[:90]})
    return cells


def slowest_cells(executed: Path, top: int = TOP_CELLS) -> list[dict]:
    """The ``top`` slowest cells of an executed notebook (at least :data:`MIN_CELL_SECONDS` each)."""
    cells = sorted(cell_times(executed), key=lambda cell: -cell["seconds"])
    return [cell for cell in cells[:top] if cell["seconds"] >= MIN_CELL_SECONDS]


def print_breakdown(executed_dir: Path) -> None:
    """Print every executed notebook's total of cell time and its slowest cells."""
    for path in sorted(Path(executed_dir).glob("[0-9][0-9]_*.ipynb")):
        cells = cell_times(path)
        print(f"{path.name}: {sum(cell['seconds'] for cell in cells):.0f} s in {len(cells)} cells")
        for cell in slowest_cells(path):
            print(f"  cell {cell['cell']:3d} {cell['seconds']:7.1f} s  {cell['first_line']}")


def timed(command: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, str]:
    """Run ``command`` (output appended to ``log``); return (seconds, its stdout). Raises on failure."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}  ({seconds:.0f} s, exit {result.returncode})\n")
        handle.write(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise RuntimeError(
            f"{' '.join(command)} failed (exit {result.returncode}; log {log}):\n" + "\n".join(tail)
        )
    return seconds, result.stdout


def cpu_busy_share(seconds: float = 5.0) -> float | None:
    """Share of all cores' time spent busy (not idle or waiting on I/O) over ``seconds``; None off Linux."""

    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    first = sample()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None or second[0] == first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return 1.0 - idle / total


def fresh_environment(home: Path) -> dict:
    """This process's environment with a new empty home: no download, model, font or compile cache."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MER_", "KERAS_", "NUMBA_", "PIP_CACHE", "XDG_", "MPLCONFIG", "VIRTUAL_ENV"))
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update({"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")})
    return env


def notebook_seconds(output: str) -> dict[str, float]:
    """Seconds per notebook from `mer notebooks`' lines; raises naming a notebook that failed."""
    seconds = {}
    for line in output.splitlines():
        match = NOTEBOOK_LINE.match(line.strip())
        if match:
            name, status, value = match.groups()
            if status != "ok":
                raise RuntimeError(f"{name} failed: {line.strip()}")
            seconds[name] = float(value)
    if not seconds:
        raise RuntimeError("`mer notebooks` printed no notebook lines")
    return seconds


def demo_pass(clone: Path, env: dict, log: Path) -> dict:
    """One `make demo`, split: demo data, then each notebook; with the slowest cells of each."""
    data_seconds, _ = timed(["make", "demo-data"], clone, env, log)
    total, output = timed(["make", "--no-print-directory", "notebooks"], clone, env, log)
    executed = clone / "runs" / "notebooks" / "full" / "executed"
    return {
        "demo_data": round(data_seconds, 1),
        "notebooks": notebook_seconds(output),
        "notebooks_total": round(total, 1),
        "cells": {path.name: slowest_cells(path) for path in sorted(executed.glob("[0-9][0-9]_*.ipynb"))},
    }


def measure_fresh(keep: Path | None, warm: bool) -> dict:
    """Clone HEAD, install and run the demo with a new empty home; optionally a second (warm) run."""
    scratch = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="mer-demo-bench-"))
    clone, home, log = scratch / "clone", scratch / "home", scratch / "benchmark.log"
    if clone.exists():
        raise FileExistsError(f"{clone} exists: give --keep a new folder")
    scratch.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = fresh_environment(home)
    load_before = os.getloadavg()[0]
    record: dict = {"cpus": os.cpu_count(), "load_before": round(load_before, 2)}
    busy = cpu_busy_share()
    if busy is not None:
        record["busy_before"] = round(busy, 3)
    install, _ = timed(["make", "setup", f"PYTHON={os.environ.get('PYTHON', 'python3.11')}"], clone, env, log)
    record["install"] = round(install, 1)
    print(f"install {install:.0f} s", flush=True)
    record["first"] = demo_pass(clone, env, log)
    print(
        f"first demo: data {record['first']['demo_data']:.0f} s, notebooks {record['first']['notebooks_total']:.0f} s",
        flush=True,
    )
    if warm:
        record["warm"] = demo_pass(clone, env, log)
        print(
            f"warm demo: data {record['warm']['demo_data']:.0f} s, notebooks {record['warm']['notebooks_total']:.0f} s",
            flush=True,
        )
    record["load_after"] = round(os.getloadavg()[0], 2)
    record["log"] = str(log)
    if not keep:
        shutil.rmtree(clone, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    return record


def result_rows(record: dict) -> list[dict]:
    """The results rows: install, demo data, each notebook, the notebooks' total (first and warm seconds)."""
    first, warm = record["first"], record.get("warm")

    def row(name: str, key: str, first_value: float, warm_value: float | None, details=None) -> dict:
        values = {"first run, s": round(first_value)}
        if warm_value is not None:
            values["warm run, s"] = round(warm_value)
        entry = {"name": name, "key": key, "values": values}
        if details:
            entry["details"] = {"slowest cells": details}
        return entry

    rows = [
        {
            "name": "install (`make setup`, with the once-per-machine warm-up)",
            "key": "install",
            "values": {"first run, s": round(record["install"])},
        },
        row("demo data (`make demo-data`)", "demo_data", first["demo_data"], warm and warm["demo_data"]),
    ]
    for name, seconds in sorted(first["notebooks"].items()):
        rows.append(
            row(
                f"notebook {name.removesuffix('.ipynb')}",
                f"notebook_{name[:2]}",
                seconds,
                warm and warm["notebooks"].get(name),
                [
                    f"cell {c['cell']}: {c['seconds']} s ({c['first_line']})"
                    for c in first["cells"].get(name, [])
                ],
            )
        )
    rows.append(
        row(
            "the notebooks (`make notebooks`, wall clock)",
            "notebooks_total",
            first["notebooks_total"],
            warm and warm["notebooks_total"],
        )
    )
    rows.append(
        row(
            "`make demo` after the install (demo data + notebooks, wall clock)",
            "demo_total",
            round(first["demo_data"] + first["notebooks_total"], 1),
            warm and round(warm["demo_data"] + warm["notebooks_total"], 1),
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--fresh", action="store_true", help="clone HEAD, install and run `make demo` with a new home"
    )
    mode.add_argument(
        "--executed", type=Path, help="only print the cell breakdown of executed notebooks in DIR"
    )
    mode.add_argument(
        "--record",
        type=Path,
        help="a record --fresh printed (JSON, e.g. measured with a Python outside the venv): only write --results",
    )
    parser.add_argument("--warm", action="store_true", help="with --fresh: run `make demo` a second time too")
    parser.add_argument("--keep", type=Path, help="with --fresh: work in this new folder and keep it")
    parser.add_argument("--results", help="write results/NAME.json (e.g. demo_time)")
    args = parser.parse_args(argv)
    if args.executed:
        print_breakdown(args.executed)
        return 0
    if args.record:
        text = args.record.read_text()
        record = json.loads(text[text.index("{") :])
        command = "python scripts/benchmark_demo.py --fresh" + (" --warm" if "warm" in record else "")
    else:
        record = measure_fresh(args.keep, args.warm)
        print(json.dumps(record, indent=1))
        command = None
    if args.results:
        # Imported here: --fresh alone runs with any Python 3.11, the package need not be installed.
        from mer_utils.results import command_line, update_results

        command = command or command_line(__file__, argv)
        busy = record.get("busy_before")
        if busy is None:  # a record from before the CPU sample: the load average says nothing sure
            machine = " (a 1-minute average: it also counts work that had just ended)"
        elif busy > 0.2:
            machine = f"; other jobs were running ({busy:.0%} of the CPU busy in the 5 s before)"
        else:
            machine = f"; the machine was otherwise idle ({busy:.0%} of the CPU busy in the 5 s before)"
        update_results(
            args.results,
            result_rows(record),
            command,
            {
                "title": "Time of a first `make demo` on a fresh clone",
                "data": {"path": "data/demo", "description": "the synthetic demo set (`mer demo-data`)"},
                "protocol": {
                    "split": (
                        f"a fresh clone of HEAD with a new empty home (no pip, Keras, matplotlib or numba cache) and no "
                        f"real data beside it (notebook 07 trains on the demo clips' faces, as on a student's laptop) on "
                        f"{record['cpus']} CPU cores without a GPU; load average {record['load_before']} before, "
                        f"{record['load_after']} after{machine}"
                    ),
                    "test": "wall-clock seconds of `make setup`, `make demo-data` and each notebook of `make notebooks` "
                    "(two at a time, as `make demo` runs them: the notebooks' own times overlap, the total is the "
                    "wall clock)"
                    + ("; the warm run repeats `make demo` in the same clone" if "warm" in record else ""),
                },
                "row_label": "step",
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
