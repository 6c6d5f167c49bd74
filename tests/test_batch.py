"""Batch prediction (mer_utils.batch, `mer predict PATH... --out`): serial and on a real local Dask cluster.

A tiny scikit-learn audio run (as in tests/test_predict.py) predicts a folder of demo clips and one
broken file. The Dask tests start real worker processes; a test hook kills a worker with SIGKILL or
hangs on a clip, and the output must still hold every other clip exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from mer_utils import cli  # noqa: E402
from mer_utils.batch import (  # noqa: E402
    MANIFEST_FILE,
    BatchError,
    collect_clips,
    folder_chunks,
    predict_batch,
    predict_with_models,
    read_output,
)
from mer_utils.predict import predict_clip  # noqa: E402

# Demo clips in the batch folder (actor 1: fewer than 16, so each is normalised as a lone clip).
CLIPS = 8


@pytest.fixture(scope="module")
def audio_run(demo_dir, tmp_path_factory) -> Path:
    """A small logistic-regression audio run on utterance statistics of the demo set."""
    from mer_utils.pipelines import base

    out = tmp_path_factory.mktemp("batch_audio") / "audio"
    base.train("audio", demo_dir, out, seed=3, model="logreg", smoke=True, progress=False)
    return out


@pytest.fixture(scope="module")
def clip_folder(demo_dir, tmp_path_factory) -> Path:
    """CLIPS demo clips in two sub-folders, a broken .mp4 and a file that is not a clip."""
    folder = tmp_path_factory.mktemp("batch_clips")
    clips = sorted(demo_dir.rglob("*.mp4"))[:CLIPS]
    for number, clip in enumerate(clips):
        target = folder / f"part{number % 2}" / clip.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(clip, target)
    (folder / "part0" / "broken.mp4").write_bytes(b"not a video at all" * 10)
    (folder / "notes.csv").write_text("not a clip\n")
    return folder


@pytest.fixture(scope="module")
def serial_output(audio_run, clip_folder, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("batch_serial") / "p.parquet"
    return out, predict_batch([clip_folder], [audio_run], out, progress=False)


def sorted_rows(out: Path):
    return read_output(out).sort_values("path").reset_index(drop=True)


def probability_columns(table) -> list[str]:
    return [c for c in table.columns if "prob_" in c]


# --- inputs -----------------------------------------------------------------------------------------------


def test_collect_clips_walks_folders_reads_lists_and_names_what_is_missing(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.wav").write_bytes(b"x")
    (tmp_path / "a" / "b" / "two.MP4").write_bytes(b"x")
    (tmp_path / "a" / ".hidden").mkdir()
    (tmp_path / "a" / ".hidden" / "three.wav").write_bytes(b"x")
    (tmp_path / "a" / "readme.txt").write_text("x")
    listing = tmp_path / "clips.txt"
    listing.write_text("# my clips\na/one.wav\n\nnowhere.wav\n")
    clips, missing = collect_clips([tmp_path / "a", listing, tmp_path / "a" / "one.wav"])
    assert clips == [str(tmp_path / "a" / "b" / "two.MP4"), str(tmp_path / "a" / "one.wav")]
    assert [m["path"] for m in missing] == [str(tmp_path / "nowhere.wav")]
    assert "clips.txt line 4" in missing[0]["reason"] and missing[0]["stage"] == "list"
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        collect_clips([tmp_path / "absent"])
    (tmp_path / "table.csv").write_text("x")
    with pytest.raises(BatchError, match=r"table\.csv: not a clip"):
        collect_clips([tmp_path / "table.csv"])


# --- serial ------------------------------------------------------------------------------------------------


def test_serial_batch_writes_one_row_per_clip_equal_to_predict_clip(serial_output, audio_run, clip_folder):
    out, summary = serial_output
    assert summary["rows"] == CLIPS and summary["failures"] == 1 and summary["skipped"] == 0
    rows = sorted_rows(out)
    assert len(rows) == CLIPS and rows["path"].is_unique
    assert not rows["path"].str.endswith("notes.csv").any()
    one = predict_clip(rows["path"][0], [audio_run])
    assert rows["label"][0] == one["label"]
    np.testing.assert_allclose(
        rows.filter(regex="^prob_").iloc[0].to_numpy(float), one["fused_probabilities"], atol=1e-9
    )
    np.testing.assert_allclose(
        rows.filter(regex="^audio_prob_").iloc[0].to_numpy(float),
        one["modalities"]["audio"]["probabilities"],
        atol=1e-9,
    )
    assert rows["audio_available"].all() and (rows["audio_weight"] > 0).all()
    np.testing.assert_allclose(rows.filter(regex="^prob_").sum(axis=1), 1.0, atol=1e-6)
    assert (rows["seconds"] > 0).all() and (rows["audio_seconds"] > 0).all()
    assert rows["true_label"].notna().all()  # RAVDESS names carry the truth
    failures = read_output(out, failures=True)
    assert failures["path"].tolist() == [str(clip_folder / "part0" / "broken.mp4")]
    assert "no modality could be used" in failures["reason"][0]
    # The dataset folder is one table for pyarrow's dataset reader too (it skips _failures).
    import pyarrow.dataset as ds

    assert ds.dataset(out, format="parquet").count_rows() == CLIPS
    assert json.loads((out / MANIFEST_FILE).read_text())["modalities"] == ["audio"]


def test_the_same_command_again_skips_every_clip(serial_output, audio_run, clip_folder):
    out, _ = serial_output
    before = sorted_rows(out)
    summary = predict_batch([clip_folder], [audio_run], out, progress=False)
    assert summary["skipped"] == CLIPS + 1 and summary["rows"] == 0 and summary["failures"] == 0
    assert sorted_rows(out).equals(before)


def test_an_interrupted_job_resumes_without_losing_or_repeating_a_clip(audio_run, clip_folder, tmp_path):
    out = tmp_path / "p.parquet"
    calls = []

    def interrupted(clip: str, loaded: dict) -> dict:
        calls.append(clip)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C on the fourth clip
        return predict_with_models(clip, loaded)

    with pytest.raises(KeyboardInterrupt):
        predict_batch([clip_folder], [audio_run], out, progress=False, predict=interrupted, flush_rows=100)
    assert len(read_output(out)) + len(read_output(out, failures=True)) == 3  # flushed on the way out
    summary = predict_batch([clip_folder], [audio_run], out, progress=False)
    assert summary["skipped"] == 3
    rows = read_output(out)
    assert len(rows) == CLIPS and rows["path"].is_unique
    assert len(read_output(out, failures=True)) == 1


def test_an_output_written_with_other_models_is_refused(serial_output, audio_run, clip_folder, tmp_path):
    out, _ = serial_output
    copy = tmp_path / "copy.parquet"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["fingerprints"] = {"audio": "another model"}
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BatchError, match="written with other models"):
        predict_batch([clip_folder], [audio_run], copy, progress=False)


def test_cli_batch_and_its_errors(audio_run, clip_folder, tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    listing = tmp_path / "list.txt"
    clips = sorted(str(p) for p in clip_folder.rglob("*.mp4") if p.name != "broken.mp4")[:3]
    listing.write_text("\n".join(clips) + "\n")
    assert cli.main(["predict", str(listing), "--models", str(audio_run), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 3 and summary["mode"] == "serial"
    assert sorted(read_output(out)["path"]) == clips
    assert cli.main(["predict", str(clip_folder), "--models", str(audio_run)]) == 2
    assert "need --out" in capsys.readouterr().err
    assert cli.main(["predict", clips[0], "--models", str(audio_run), "--workers", "2"]) == 2
    assert "--workers need --out" in capsys.readouterr().err


# --- Dask ----------------------------------------------------------------------------------------------------


def test_a_running_dask_cluster_gives_the_serial_results(serial_output, audio_run, clip_folder, tmp_path):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "dask.parquet"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        summary = predict_batch(
            [clip_folder], [audio_run], out, scheduler=cluster.scheduler_address, chunk_size=3, progress=False
        )
    assert summary["rows"] == CLIPS and summary["failures"] == 1 and summary["mode"].startswith("dask")
    serial, parallel = sorted_rows(serial_output[0]), sorted_rows(out)
    assert parallel["path"].tolist() == serial["path"].tolist()
    assert parallel["label"].tolist() == serial["label"].tolist()
    columns = probability_columns(serial)
    # Features are float32 and the workers run other thread counts: equal up to rounding.
    np.testing.assert_allclose(parallel[columns].to_numpy(float), serial[columns].to_numpy(float), atol=1e-5)
    assert parallel["worker"].nunique() >= 1
    assert read_output(out, failures=True)["path"].str.endswith("broken.mp4").tolist() == [True]


# Names the fault hook below acts on (set in the test; read in the worker processes via the hook's args).
KILL_ONCE_NAME = "01-01-01-01-01-01-01"


def faulty_predict(marker_dir: str, poison: str, hang: str):
    """A per-clip function for the workers: SIGKILL itself on the first clip it sees once, always
    on ``poison``, and hang on ``hang`` (the timeout must stop it)."""

    def predict(clip: str, loaded: dict) -> dict:
        name = Path(clip).name
        if name == poison:
            os.kill(os.getpid(), signal.SIGKILL)
        if name == hang:
            time.sleep(600)
        try:
            # The first clip of the job kills its worker, once (like a kill -9 from outside).
            descriptor = os.open(Path(marker_dir) / "killed-once", os.O_CREAT | os.O_EXCL)
            os.close(descriptor)
            os.kill(os.getpid(), signal.SIGKILL)
        except FileExistsError:
            pass
        return predict_with_models(clip, loaded)

    return predict


def test_killed_workers_and_a_hanging_clip_lose_nothing_and_repeat_nothing(
    serial_output, audio_run, clip_folder, tmp_path
):
    pytest.importorskip("distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook runs in fresh processes
    names = sorted(p.name for p in clip_folder.rglob("*.mp4") if p.name != "broken.mp4")
    poison, hang = names[2], names[5]
    out = tmp_path / "faults.parquet"
    summary = predict_batch(
        [clip_folder],
        [audio_run],
        out,
        workers=2,
        chunk_size=2,
        timeout=10,
        progress=False,
        predict=faulty_predict(str(tmp_path), poison, hang),
    )
    assert (tmp_path / "killed-once").is_file()
    rows, failures = sorted_rows(out), read_output(out, failures=True)
    assert rows["path"].is_unique and failures["path"].is_unique
    assert sorted(Path(p).name for p in rows["path"]) == sorted(set(names) - {poison, hang})
    reasons = {Path(p).name: r for p, r in zip(failures["path"], failures["reason"], strict=True)}
    assert set(reasons) == {poison, hang, "broken.mp4"}
    assert "worker process died" in reasons[poison]
    assert "timed out after 10 s" in reasons[hang]
    assert summary["rows"] == CLIPS - 2 and summary["failures"] == 3
    serial = sorted_rows(serial_output[0]).set_index("path").loc[rows["path"]]
    np.testing.assert_allclose(
        rows.filter(regex="^prob_").to_numpy(float), serial.filter(regex="^prob_").to_numpy(float), atol=1e-5
    )


def test_folder_chunks_deal_every_folders_first_chunk_first():
    clips = [f"a/{i}.wav" for i in range(5)] + [f"b/{i}.wav" for i in range(2)] + ["c/0.wav"]
    assert folder_chunks(clips, 2) == [
        ["a/0.wav", "a/1.wav"],
        ["b/0.wav", "b/1.wav"],
        ["c/0.wav"],
        ["a/2.wav", "a/3.wav"],
        ["a/4.wav"],
    ]
    assert folder_chunks([], 4) == []
    with pytest.raises(ValueError, match="at least 1"):
        folder_chunks(clips, 0)


# --- the benchmark script ---------------------------------------------------------------------------------


def _benchmark_script():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "benchmark_batch.py"
    spec = importlib.util.spec_from_file_location("benchmark_batch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_projection_scales_with_clips_and_workers_and_stops_at_the_scheduler(tmp_path, monkeypatch):
    script = _benchmark_script()
    mode = {"clips": 10, "failures": 0, "seconds": 5.0, "clips_per_second": 2.0, "peak_memory_mb": 300.0}
    measured = {
        "one process per clip": dict(mode, clips_per_second=0.2, steady_clips_per_second=0.2),
        "batch, serial": dict(mode, steady_clips_per_second=4.0),
        "Dask, 1 worker": dict(mode, steady_clips_per_second=4.0),
        "Dask, 2 workers": dict(mode, steady_clips_per_second=7.2),
        "scheduler tasks per second": 500.0,
    }
    rows, efficiency, scheduler_clips = script.projection(measured, chunk_size=4)
    assert efficiency == pytest.approx(0.9) and scheduler_clips == 2000
    hours = {row["key"]: row["values"] for row in rows}
    assert hours["10000 clips"]["1 worker"] == pytest.approx(10_000 / 4.0 / 3600)
    assert hours["1000000 clips"]["16 workers"] == pytest.approx(1e6 / (4.0 * 16 * 0.9) / 3600)
    # 256 workers would do 921.6 clips/s: under the scheduler's 2,000, so still compute-bound ...
    assert hours["10000000 clips"]["256 workers"] == pytest.approx(1e7 / (4.0 * 256 * 0.9) / 3600)
    # ... and with a slower scheduler the task rate is the limit.
    rows, _, _ = script.projection(dict(measured, **{"scheduler tasks per second": 100.0}), chunk_size=4)
    assert rows[0]["values"]["256 workers"] == pytest.approx(10_000 / 400 / 3600)
    monkeypatch.setenv("MER_RESULTS_DIR", str(tmp_path))
    args = script.argparse.Namespace(
        data=Path("data/x"), models=[Path("runs/a")], clips=10, single=2, results="b", chunk_size=4
    )
    script.record(args, measured)
    from mer_utils.results import load_results, render_table

    speed = load_results("b", tmp_path)
    assert [row["name"] for row in speed["metrics"]][0] == "one process per clip"
    assert speed["metrics"][2]["values"]["x one process per clip"] == 20.0
    assert "shared" in speed["protocol"]["split"]
    assert "10,000 clips" in render_table(load_results("b_projection", tmp_path))
    # A run that measured how busy the CPU was says so, and names the fastest way to use every core.
    idle = dict(measured, **{"busy before": 0.03, "chunk size": 16})
    idle["Dask, 1 worker, all cores"] = dict(mode, steady_clips_per_second=5.0)
    script.record(args, idle)
    speed = load_results("b", tmp_path)
    assert "idle (3% busy" in speed["protocol"]["split"]
    assert "16 clips per Dask task" in speed["protocol"]["test"]
    cores = os.cpu_count()
    assert (
        f"fastest on all {cores} cores steady: Dask, 2 workers (clips/s: batch, serial 4.00"
        in speed["protocol"]["selection"]
    )
    # End to end (2.0 clips/s for every mode here), the first of the equals is named.
    assert f"fastest on all {cores} cores end to end: batch, serial" in speed["protocol"]["selection"]
    assert "1.80x (parallel efficiency 0.90)" in speed["protocol"]["selection"]
    assert [row["name"] for row in speed["metrics"]][3] == "Dask, 1 worker, all cores"
    assert "x 16 clips per task" in load_results("b_projection", tmp_path)["protocol"]["test"]
