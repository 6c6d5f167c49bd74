"""Clips per second of `mer predict` one process per clip, as a serial batch, and on Dask with 1 and 2 workers.

    python scripts/benchmark_batch.py --data ../shared/data/ravdess_speech_16k --models RUN \\
        --clips 480 --single 8 --work /tmp/mer_batch_bench --results batch

Every mode predicts the same first ``--clips`` clips of ``--data`` (sorted, so whole actor folders:
give a multiple of 60 for RAVDESS) in one run of this script, each as its own ``mer`` process with
its own empty feature cache (``MER_CACHE_DIR``), so no mode reads features another one computed;
one process per clip runs on ``--single`` of those clips with the serial batch's warm cache (its
best case; 0 skips it). For each mode: end-to-end clips/s (start-up, model loading and cluster start
included), steady clips/s (between the first and the last row written), the peak resident memory of
the process that predicts (a Dask worker in Dask mode, sampled every 0.1 s) and, in
WORK/measured.json, the CPU seconds of the mode's processes.

The modes (``--modes``, default all): ``serial`` (this process, every core's math threads),
``dask1`` (1 worker, 1 math thread: the base of the parallel efficiency), ``dask1all`` (1 worker
with every core's math threads, what ``--workers 1`` does), ``dask2`` (2 workers, 1 thread each,
what ``--workers 2`` does); ``--chunk-size`` clips per Dask task (default mer predict's). On a
2-core machine serial, dask1all and dask2 all use both cores: the protocol's ``selection`` line
names the fastest of them, steady and end to end (the setting the docs should recommend), and the
2-worker / 1-worker ratio. The protocol also says how busy the CPU was before the run (/proc/stat):
only an idle machine gives ratios worth recording.

Run time: each batch mode costs about ``--clips`` x its CPU seconds per clip plus a fixed start
(the cluster, TensorFlow and the models in each worker); one process per clip several seconds a
clip. A 120-clip run on a loaded machine with an audio logreg run used about 0.4 CPU s a clip and
15-30 CPU s of start per mode, so the four modes on N clips need roughly 1.35 N + 150 s on an idle
2-core machine (2 workers halve their part): about 13 min for ``--clips 480`` (8 RAVDESS actors,
the proposed idle run, in which every mode meets the speaker-statistics cost of 8 folders) and
25 min for 1,000 clips. WORK/measured.json keeps each mode's CPU seconds to check this.

``--results batch`` writes the measured rows into results/batch.json and a table on paper
(results/batch_projection.json): wall time for 10^4, 10^6 and 10^7 clips on 1, 16, 64 and 256
workers from the 1-worker steady rate, the measured 2-worker parallel efficiency and the measured
task rate of the Dask scheduler on this machine. Then ``python scripts/render_results.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

# How often the memory of the process tree is sampled (seconds).
SAMPLE_SECONDS = 0.1
# Clip counts and worker counts of the table on paper.
PROJECTED_CLIPS = (10_000, 1_000_000, 10_000_000)
PROJECTED_WORKERS = (1, 16, 64, 256)
# No-op tasks timed to measure the scheduler's task rate.
SCHEDULER_TASKS = 2000
# The batch modes: (name, slug, Dask workers or None for serial, math threads per worker or None for
# all cores). Serial and "1 worker, all cores" use both cores of a 2-core machine as "2 workers" does,
# so the three show the best setting; "1 worker" (one thread) is the base of the parallel efficiency.
MODES = (
    ("batch, serial", "serial", None, None),
    ("Dask, 1 worker", "dask1", 1, 1),
    ("Dask, 1 worker, all cores", "dask1all", 1, None),
    ("Dask, 2 workers", "dask2", 2, 1),
)
MODE_SLUGS = tuple(slug for _, slug, _, _ in MODES)
# The rows of the table, in order.
MODE_NAMES = ("one process per clip", *(name for name, _, _, _ in MODES))
# The modes that use both cores of a 2-core machine: the fastest of them is the best setting there.
ALL_CORE_MODES = ("batch, serial", "Dask, 1 worker, all cores", "Dask, 2 workers")
# Below this share of the CPU busy before the run, the machine counts as idle.
IDLE_BUSY_SHARE = 0.1


def clip_list(data: Path, count: int) -> list[Path]:
    """The first ``count`` clips of ``data`` in sorted order."""
    from mer_utils.batch import collect_clips

    clips, _ = collect_clips([data])
    if len(clips) < count:
        raise ValueError(f"{data}: {len(clips)} clips, fewer than --clips {count}")
    return [Path(c) for c in clips[:count]]


def run_measured(command: list[str], env: dict) -> tuple[float, dict]:
    """Run ``command``: (wall seconds, {"memory": {"root": peak RSS MB of the process, "children": peak of
    any child}, "cpu_seconds": CPU time of the process and its descendants, "stdout": its output}).
    """
    import resource

    import psutil

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    cpu_before = cpu()
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(process.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                for member in [root, *root.children(recursive=True)]:
                    with_memory = member.memory_info().rss / 2**20
                    peaks[member.pid] = max(peaks.get(member.pid, 0.0), with_memory)
            except psutil.Error:
                pass
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {err.strip()[-2000:]}")
    children = [v for pid, v in peaks.items() if pid != process.pid]
    memory = {"root": peaks.get(process.pid, 0.0), "children": max(children) if children else 0.0}
    return seconds, {"memory": memory, "cpu_seconds": cpu() - cpu_before, "stdout": out}


def mer(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "mer_utils.cli", *arguments]


def steady_rate(out: Path) -> float:
    """Clips/s between the first and the last row of a batch output (start-up excluded)."""
    from mer_utils.batch import read_output

    finished = read_output(out)["finished"].sort_values().to_numpy()
    return (len(finished) - 1) / (finished[-1] - finished[0])


def scheduler_task_rate(workers: int = 2) -> float:
    """No-op tasks per second that a local Dask scheduler completes (the per-task overhead bound)."""
    from distributed import Client, LocalCluster, wait

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            wait(client.map(int, range(50), pure=False))  # start-up
            start = time.perf_counter()
            wait(client.map(int, range(SCHEDULER_TASKS), pure=False))
            return SCHEDULER_TASKS / (time.perf_counter() - start)


def measure(args: argparse.Namespace) -> dict:
    """Every mode on the same clips; returns the measurements."""
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    clips = clip_list(args.data, args.clips)
    listing = work / "clips.txt"
    listing.write_text("\n".join(str(c) for c in clips) + "\n")
    base_env = {k: v for k, v in os.environ.items() if k != "MER_CACHE_DIR"}
    models = [str(m) for m in args.models]
    from benchmark_demo import cpu_busy_share  # the sibling script (scripts/ is on the path)

    measured: dict = {"busy before": cpu_busy_share(), "chunk size": args.chunk_size}
    for name, slug, workers, threads in MODES:
        if slug not in args.modes:
            continue
        options = []
        if workers:
            threads = threads or os.cpu_count() or 1
            options = [
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--chunk-size",
                str(args.chunk_size),
            ]
        out = work / f"{slug}.parquet"
        cache = work / f"cache_{slug}"
        for folder in (out, cache):
            if folder.exists():
                shutil.rmtree(folder)
        env = dict(base_env, MER_CACHE_DIR=str(cache))
        command = mer("predict", str(listing), "--models", *models, "--out", str(out), "--json", *options)
        seconds, details = run_measured(command, env)
        summary = json.loads(details["stdout"])
        memory = details["memory"]["children"] if options else details["memory"]["root"]
        measured[name] = {
            "clips": summary["rows"] + summary["failures"],
            "failures": summary["failures"],
            "seconds": seconds,
            "clips_per_second": (summary["rows"] + summary["failures"]) / seconds,
            "steady_clips_per_second": steady_rate(out),
            "peak_memory_mb": memory,
            # CPU time of the mode (workers included): wall time on an idle machine is about this / cores used.
            "cpu_seconds": details["cpu_seconds"],
        }
        measured[name]["load_average"] = os.getloadavg()[0]
        print(name, json.dumps(measured[name]), flush=True)
    # One process per clip, with the serial batch's (warm) cache: the best case of the old way.
    env = dict(base_env, MER_CACHE_DIR=str(work / "cache_serial"))
    start = time.perf_counter()
    peak = 0.0
    for clip in clips[: args.single]:
        _, details = run_measured(mer("predict", str(clip), "--models", *models, "--json"), env)
        peak = max(peak, details["memory"]["root"])
    seconds = time.perf_counter() - start
    if args.single:
        measured["one process per clip"] = {
            "clips": args.single,
            "failures": 0,
            "seconds": seconds,
            "clips_per_second": args.single / seconds,
            "steady_clips_per_second": args.single / seconds,
            "peak_memory_mb": peak,
        }
        print("one process per clip", json.dumps(measured["one process per clip"]), flush=True)
    measured["scheduler tasks per second"] = scheduler_task_rate()
    print("scheduler tasks/s", round(measured["scheduler tasks per second"]), flush=True)
    return measured


def worker_label(workers: int) -> str:
    return f"{workers} worker" + ("s" if workers > 1 else "")


def projection(measured: dict, chunk_size: int) -> list[dict]:
    """Wall hours for PROJECTED_CLIPS x PROJECTED_WORKERS from the measured rates (see the docstring)."""
    one = measured["Dask, 1 worker"]["steady_clips_per_second"]
    # Above 1 on a shared CPU only means the load changed between modes: never project super-linear.
    efficiency = min(1.0, measured["Dask, 2 workers"]["steady_clips_per_second"] / (2 * one))
    scheduler_clips = measured["scheduler tasks per second"] * chunk_size
    rows = []
    for clips in PROJECTED_CLIPS:
        values = {}
        for workers in PROJECTED_WORKERS:
            rate = one * workers * (efficiency if workers > 1 else 1.0)
            values[worker_label(workers)] = clips / min(rate, scheduler_clips) / 3600
        rows.append({"name": f"{clips:,} clips", "key": f"{clips} clips", "values": values})
    return rows, efficiency, scheduler_clips


def machine_state(measured: dict) -> str:
    """How busy the CPU was: the share busy before the run (/proc/stat) and the load after each mode."""
    loads = [
        entry["load_average"]
        for entry in measured.values()
        if isinstance(entry, dict) and "load_average" in entry
    ]
    seen = f", load average {min(loads):.1f} to {max(loads):.1f} after the modes" if loads else ""
    busy = measured.get("busy before")
    if busy is None:  # a run recorded before this was measured: it was on a shared CPU
        return (
            f"{os.cpu_count()} CPU cores shared with other jobs while measured{seen}, so the load changed "
            "between modes and the ratios are rough; an idle CPU gives higher and steadier figures"
        )
    state = "idle" if busy < IDLE_BUSY_SHARE else "shared with other jobs, so the ratios are rough"
    return (
        f"{os.cpu_count()} CPU cores, {state} ({busy:.0%} busy in the 5 s before the run, /proc/stat{seen})"
    )


def best_setting(measured: dict) -> str:
    """Which way of using every core predicted the most clips per second, steady and end to end.

    Both are named: the steady window starts at the first row, so it leaves out each worker's first
    clip (a speaker's statistics, see docs/batch.md) as well as the start-up; end to end counts both.
    """
    parts = []
    for key, what in (("steady_clips_per_second", "steady"), ("clips_per_second", "end to end")):
        rates = {name: measured[name][key] for name in ALL_CORE_MODES if name in measured}
        if rates:
            best = max(rates, key=rates.get)
            listed = ", ".join(f"{name} {rate:.2f}" for name, rate in rates.items())
            parts.append(f"fastest on all {os.cpu_count()} cores {what}: {best} (clips/s: {listed})")
    if "Dask, 1 worker" in measured and "Dask, 2 workers" in measured:
        ratio = (
            measured["Dask, 2 workers"]["steady_clips_per_second"]
            / measured["Dask, 1 worker"]["steady_clips_per_second"]
        )
        parts.append(
            f"2 workers / 1 worker at one thread each, steady: {ratio:.2f}x (parallel efficiency {ratio / 2:.2f})"
        )
    return "; ".join(parts)


def record(args: argparse.Namespace, measured: dict) -> None:
    from mer_utils.results import command_line, write_results

    chunk_size = measured.get("chunk size", args.chunk_size)
    machine = machine_state(measured)
    single = measured.get("one process per clip")
    rows = []
    for name in MODE_NAMES:
        if name not in measured:
            continue
        entry = measured[name]
        values = {
            "clips": entry["clips"],
            "clips/s end to end": round(entry["clips_per_second"], 2),
            "clips/s steady": round(entry["steady_clips_per_second"], 2),
        }
        if single:
            values["x one process per clip"] = round(
                entry["steady_clips_per_second"] / single["clips_per_second"], 1
            )
        values["peak MB per worker"] = round(entry["peak_memory_mb"])
        rows.append({"name": name, "key": name, "values": values})
    data = {"path": str(args.data), "description": f"the first {args.clips} clips (sorted) of the folder"}
    command = measured.get("command") or command_line(__file__)
    write_results(
        args.results,
        {
            "title": "Batch prediction, speed",
            "row_label": "mode",
            "data": data,
            "protocol": {
                "split": machine,
                "test": f"runs {', '.join(map(str, args.models))}; each mode a fresh `mer` process with an empty "
                f"feature cache, {chunk_size} clips per Dask task, Dask workers with one math thread each "
                "unless 'all cores'; one process per clip on "
                f"{args.single} clips with a warm cache; steady = between the first and last row written",
                "selection": best_setting(measured),
            },
            "command": command,
            "value_decimals": {"clips": 0, "peak MB per worker": 0, "x one process per clip": 1},
            "metrics": rows,
        },
    )
    if "Dask, 1 worker" not in measured or "Dask, 2 workers" not in measured:
        print(f"no results/{args.results}_projection.json: it needs the modes dask1 and dask2")
        return
    table, efficiency, scheduler_clips = projection(measured, chunk_size)
    measured_efficiency = measured["Dask, 2 workers"]["steady_clips_per_second"] / (
        2 * measured["Dask, 1 worker"]["steady_clips_per_second"]
    )
    write_results(
        f"{args.results}_projection",
        {
            "title": "Batch prediction, on paper",
            "row_label": "clips",
            "data": data,
            "protocol": {
                "split": machine,
                "test": (
                    f"wall hours = clips / min(workers x {measured['Dask, 1 worker']['steady_clips_per_second']:.2f} "
                    f"clips/s (one worker's steady rate) x {efficiency:.2f} (the 2-worker parallel "
                    f"efficiency, measured {measured_efficiency:.2f}, capped at 1, assumed to hold), {scheduler_clips:,.0f} clips/s (the measured scheduler "
                    f"rate of {measured['scheduler tasks per second']:,.0f} tasks/s x {chunk_size} clips "
                    "per task)); reading the clips from shared storage is not modelled"
                ),
            },
            "command": command,
            "value_decimals": {worker_label(w): 2 for w in PROJECTED_WORKERS},
            "metrics": table,
        },
    )


def main(argv: list[str] | None = None) -> int:
    from mer_utils.batch import DEFAULT_CHUNK_SIZE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="a folder of clips (e.g. ravdess_speech_16k)"
    )
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="run folders")
    parser.add_argument("--clips", type=int, default=120, help="clips per mode (default 120)")
    parser.add_argument(
        "--single", type=int, default=8, help="clips for one process per clip (default 8; 0 skips it)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODE_SLUGS,
        default=list(MODE_SLUGS),
        help="batch modes to measure (default all): " + ", ".join(MODE_SLUGS),
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"clips per Dask task (default mer predict's, {DEFAULT_CHUNK_SIZE})",
    )
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for outputs and caches")
    parser.add_argument("--results", help="write results/RESULTS.json and results/RESULTS_projection.json")
    parser.add_argument(
        "--measured", type=Path, help="record from WORK/measured.json of an earlier run instead of measuring"
    )
    args = parser.parse_args(argv)
    if args.measured:
        measured = json.loads(args.measured.read_text())
    else:
        from mer_utils.results import command_line

        measured = measure(args)
        measured["command"] = command_line(__file__, argv)
        (args.work / "measured.json").write_text(json.dumps(measured, indent=2))
    print(json.dumps(measured, indent=2))
    if args.results:
        record(args, measured)
        print(f"wrote results/{args.results}.json and results/{args.results}_projection.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
