"""The ``mer`` command: data tools, training, evaluation, fusion and prediction.

Heavy libraries are imported inside each subcommand so ``mer --help`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from mer_utils import feature_map
from mer_utils.batch import DEFAULT_CHUNK_SIZE
from mer_utils.branches import REGISTRY, TRAIN_OPTIONS, branch_names, branches_with_option, get_branch
from mer_utils.config import DEFAULT_SEED
from mer_utils.errors import EXPECTED_ERRORS, error_message
from mer_utils.timeline import HOP_SECONDS as TIMELINE_HOP
from mer_utils.timeline import WINDOW_SECONDS as TIMELINE_WINDOW

# Errors that mean bad input, a missing file or package, or a refused file: one line, exit code 2.
# (OSError covers FileNotFoundError and PermissionError; UnicodeDecodeError and JSON errors are ValueErrors.)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_demo_data(args: argparse.Namespace) -> int:
    from mer_utils.demo import make_demo_dataset

    summary = make_demo_dataset(args.out_dir, actors=args.actors, seed=args.seed, progress=True)
    print(
        f"wrote {summary['clips']} clips of {summary['actors']} actors "
        f"({summary['megabytes']:.1f} MB) and {summary['text_rows']} text rows to {args.out_dir}"
    )
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from mer_utils.ravdess import download_ravdess

    actors = _parse_actors(args.actors) if args.actors else None
    index = download_ravdess(args.dest, actors=actors, kind=args.kind)
    print(f"{len(index)} RAVDESS files indexed in {args.dest}")
    return 0


def _parse_actors(text: str) -> list[int]:
    """'1-4,7' -> [1, 2, 3, 4, 7]."""
    actors: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = part.split("-", 1)
            actors.extend(range(int(low), int(high) + 1))
        elif part:
            actors.append(int(part))
    return actors


def cmd_index(args: argparse.Namespace) -> int:
    from mer_utils import corpora
    from mer_utils.ravdess import actor_disjoint_split, index_dataset, split_table

    sources = args.data_dir
    one_ravdess = len(sources) == 1 and corpora.detect_layout(sources[0]) == "ravdess"
    if one_ravdess:
        index = index_dataset(sources[0], manifest=args.manifest)
    else:
        index = corpora.read_corpora(sources)
        if args.manifest:
            args.manifest.parent.mkdir(parents=True, exist_ok=True)
            rows = [{"path": path, "reason": reason} for path, reason in index.attrs["skipped"]]
            import pandas as pd

            pd.DataFrame(rows, columns=["path", "reason"]).to_csv(args.manifest, index=False)
    if args.out:
        index.to_csv(args.out, index=False)
        print(f"wrote {len(index)} rows to {args.out}")
    skipped = index.attrs.get("skipped", [])
    if one_ravdess:
        print(f"{len(index)} clips, {index['actor'].nunique()} actors, {index['take'].nunique()} takes")
        if len(index):
            print(index.groupby(["modality", "emotion"]).size().unstack(fill_value=0).to_string())
            if index["actor"].nunique() >= 3:
                print(split_table(actor_disjoint_split(index, seed=args.seed)).to_string())
    else:
        print(
            f"{len(index)} clips, {index['speaker'].nunique()} speakers, {index['corpus'].nunique()} corpora"
        )
    if len(index):
        _print_corpus_counts(index, args.seed)
    for _path, reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    return 0


def _print_corpus_counts(index, seed: int) -> None:
    """`mer index`: clips with sound (one per take) per corpus, speaker and label, and the split by speaker."""
    from mer_utils import corpora

    try:
        clips = corpora.audio_index(index)
    except ValueError as error:
        print(f"no clip with sound for the audio branches: {error}")
        return
    print("clips with sound, one per take (what `mer train audio|spectrogram` reads), per corpus and label:")
    print(corpora.count_table(clips, "corpus").to_string())
    print("per speaker and label:")
    print(corpora.count_table(clips, "speaker").to_string())
    if clips.attrs.get("no_speaker_ids"):
        print(f"no speaker ids (every clip is its own speaker): {', '.join(clips.attrs['no_speaker_ids'])}")
    try:
        parts = corpora.speaker_disjoint_split(clips, seed=seed)
    except ValueError as error:
        print(f"no speaker-disjoint split: {error}")
        return
    print("speaker-disjoint split inside each corpus (speakers / clips):")
    grouped = parts.groupby(["corpus", "split"])
    table = grouped["speaker"].nunique().astype(str) + " / " + grouped.size().astype(str)
    print(table.unstack(fill_value="0 / 0")[["train", "val", "test"]].to_string())


def _check_train_data(branch: str, data: Path) -> None:
    """Say what ``--data`` is when it is the wrong kind of thing for the branch (a CSV for video...)."""
    from mer_utils.branches import corpus_branches

    descriptor = get_branch(branch)
    wants_file = descriptor.reads == "text"
    reads_corpora = branch in corpus_branches()
    if reads_corpora and data.is_file() and data.suffix.lower() == ".csv":
        from mer_utils.corpora import is_manifest

        if is_manifest(data):
            return
    if not wants_file and data.is_file():
        kind = f"a {data.suffix.lstrip('.').upper()} file" if data.suffix else "a file"
        text_hint = "; a CSV is for `mer train text`" if data.suffix.lower() == ".csv" else ""
        if text_hint and reads_corpora:
            text_hint += " (a clip manifest has the columns path,label[,speaker][,corpus])"
        raise ValueError(f"{data}: is {kind}; {branch} needs {descriptor.data_help}{text_hint}")
    if wants_file and data.is_dir():
        raise ValueError(
            f"{data}: is a folder; {branch} needs {descriptor.data_help} "
            f"(folders of clips are for `mer train {'|'.join(n for n, b in REGISTRY.items() if b.reads == 'clips')}`)"
        )


def _one_or_several(branch: str, data: list[Path]) -> Path | list[Path]:
    """`--data A B ...`: several sources for the text, audio and spectrogram branches; one path stays a path."""
    from mer_utils.branches import several_source_branches

    if len(data) > 1 and not get_branch(branch).several_sources:
        raise ValueError(
            f"{' '.join(map(str, data))}: {branch} takes one --data; several sources are for "
            f"{', '.join(several_source_branches())}"
        )
    return data[0] if len(data) == 1 else data


def cmd_train(args: argparse.Namespace) -> int:
    from mer_utils.pipelines import base

    for data in args.data:
        _check_train_data(args.branch, data)
    if (args.workers or args.scheduler) and get_branch(args.branch).reads != "clips":
        mapped = "|".join(name for name, branch in REGISTRY.items() if branch.reads == "clips")
        raise ValueError(
            f"--workers / --scheduler share out the features of clips (`mer train {mapped}`); "
            f"the '{args.branch}' branch reads {get_branch(args.branch).reads} and computes none"
        )
    extra = {}
    for option in TRAIN_OPTIONS:
        value = getattr(args, option)
        if value is None:
            continue
        if option not in get_branch(args.branch).options:
            takers = "|".join(branches_with_option(option))
            flag = option.replace("_", "-")
            raise ValueError(f"--{flag} applies to `mer train {takers}`, not to '{args.branch}'")
        extra[option] = value
    # The options land in the branch's settings (epochs) or its train's keywords (init, text_column).
    # --workers / --scheduler: the clips' features are computed on Dask, then training reads the cache.
    with feature_map.cluster(args.workers, args.scheduler):
        metrics = base.train(
            args.branch,
            _one_or_several(args.branch, args.data),
            args.out,
            seed=args.seed,
            smoke=args.smoke,
            model=args.model,
            **extra,
        )
    print(f"run written to {args.out}")
    _print_json({k: metrics[k] for k in ("accuracy", "macro_f1", "n") if k in metrics})
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mer_utils.evaluation import format_metrics
    from mer_utils.pipelines import base

    columns = {k: getattr(args, k) for k in ("text_column", "label_column") if getattr(args, k) is not None}
    branch = base.run_info(args.run_dir)["branch"]
    if columns and get_branch(branch).reads != "text":
        raise ValueError(f"{args.run_dir}: a {branch} run; --text-column / --label-column are for text runs")
    metrics = base.evaluate(
        args.run_dir, _one_or_several(branch, args.data), labels=args.labels, out=args.out, **columns
    )
    if args.json:
        _print_json(metrics)
    else:
        print(format_metrics(metrics, ("accuracy", "macro_precision", "macro_recall", "macro_f1")))
        if "left_out" in metrics:
            counts = ", ".join(
                f"{label or '(none)'} {n}" for label, n in metrics["left_out"]["by_label"].items()
            )
            print(
                f"scored {' '.join(args.labels)} only; {metrics['left_out']['n']} rows left out ({counts or 'none'})"
            )
        _print_per_corpus(metrics.get("per_corpus", {}))
    if args.out is not None:
        print(f"predictions and metrics written to {args.out}")
    return 0


def _print_per_corpus(per_corpus: dict) -> None:
    """`mer evaluate`: one line per corpus when there are several, or when one was scored as lone clips."""
    if len(per_corpus) < 2 and not any("note" in entry for entry in per_corpus.values()):
        return
    for corpus, entry in per_corpus.items():
        note = f"  {entry['note']}" if "note" in entry else ""
        scores = f"accuracy {entry['accuracy']:.3f}  macro_f1 {entry['macro_f1']:.3f}  (n={entry['n']})"
        print(f"  {corpus}: {scores}{note}")


def cmd_fuse(args: argparse.Namespace) -> int:
    from mer_utils.fusion.io import DATA_FOLDER, fuse_runs
    from mer_utils.fusion.parameters import load_fusion_parameters

    predict_data = None
    if args.data is not None:
        from mer_utils.predict import predict_tables

        def predict_data(run_dirs):
            return predict_tables(run_dirs, args.data)

    table = fuse_runs(
        args.run_dirs,
        args.out,
        seed=args.seed,
        trust=args.trust,
        predict_data=predict_data,
        fit_on=args.fit_on,
    )
    print(table.drop(columns=["description"], errors="ignore").round(3).to_string())
    chosen = table.index[table["chosen"]].tolist()
    parameters = load_fusion_parameters(args.out)
    fitted_on = parameters.get("fitted_on", "validation")
    print(f"default method (chosen on {fitted_on} predictions): {chosen[0] if chosen else '?'}")
    print(f"fitted on: {parameters.get('fit_data', {}).get('note', fitted_on)}")
    guard = parameters.get("guard") or {}
    if guard:
        print(
            f"guard: {guard['method']} vs {guard['baseline']}: gain {guard['gain']:+.3f} on {guard['n']} clips, "
            f"{guard['wins']} won / {guard['losses']} lost, one-sided exact McNemar p = {guard['p_value']:.3g} "
            f"({'passed' if guard['passed'] else 'not passed'})"
        )
    print(f"fusion results written to {args.out}")
    if args.data is not None:
        data_table = args.out / DATA_FOLDER / "fusion_table.csv"
        print(f"scores on {args.data} written to {data_table}")
        import pandas as pd

        on_data = pd.read_csv(data_table, index_col="method")
        print(on_data[["accuracy", "macro_f1", "n", "chosen"]].round(3).to_string())
    return 0


def clip_argument(text: str) -> Path:
    """The clip given to `mer predict` as a Path, or a clear error saying what it is instead."""
    fix = "give the path of a video or audio file on this machine (e.g. clip.mp4)"
    if text == "-":
        raise ValueError(f"'-': mer predict does not read standard input; save the clip to a file and {fix}")
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"{text}: is a {scheme} URL; mer never downloads clips: download it first, then {fix}"
        )
    path = Path(text)
    if path.is_dir():
        raise ValueError(
            f"{path}: is a folder, not a clip; {fix}; the clips of a folder need --out OUT.parquet "
            "(a batch job), and `mer evaluate RUN --data DIR` scores a labelled folder"
        )
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; {fix}")
    if not path.is_file():
        raise ValueError(f"{path}: is not a regular file (a device or a pipe); {fix}")
    return path


def cmd_predict(args: argparse.Namespace) -> int:
    from mer_utils.predict import format_prediction, predict_clip

    batch_options = [f"--{n}" for n in ("workers", "scheduler", "timeout") if getattr(args, n) is not None]
    if args.models is None:
        from mer_utils.default_runs import bundled_note, bundled_runs

        args.models = bundled_runs()
        print(f"mer predict: {bundled_note()}", file=sys.stderr)
    if args.timeline:
        return _predict_timeline(args, batch_options)
    if args.window is not None or args.hop is not None:
        raise ValueError("--window and --hop set the windows of --timeline; add --timeline")
    if args.out is not None:
        args.clip = [Path(text) for text in args.clip]
        return _predict_batch(args)
    if len(args.clip) != 1 or batch_options:
        raise ValueError(
            f"{' '.join(args.clip)}: more than one clip, a folder, a list or "
            f"{' '.join(batch_options) or 'batch options'} need --out OUT.parquet (a batch job)"
        )
    clip = clip_argument(args.clip[0])
    result = predict_clip(clip, args.models, verbose=args.verbose, fusion=args.fusion)
    if args.json:
        _print_json(result)
    else:
        print(format_prediction(result, verbose=args.verbose))
    return 0


def _predict_timeline(args: argparse.Namespace, batch_options: list[str]) -> int:
    """`mer predict CLIP --timeline`: the clip's windows into a CSV and a plot (mer_utils.timeline)."""
    from mer_utils import timeline

    if len(args.clip) != 1 or batch_options:
        raise ValueError(
            f"{' '.join(args.clip)}: --timeline reads one clip; {' '.join(batch_options) or 'more clips'} "
            "need a batch job (--out OUT.parquet without --timeline)"
        )
    clip = clip_argument(args.clip[0])
    window = timeline.WINDOW_SECONDS if args.window is None else args.window
    hop = timeline.HOP_SECONDS if args.hop is None else args.hop
    timeline.check_window(window, hop)
    out = args.out if args.out is not None else timeline.default_csv(clip)
    table = timeline.predict_timeline(
        clip, args.models, fusion=args.fusion, window=window, hop=hop, progress=args.verbose
    )
    csv, image = timeline.write_timeline(table, out)
    if args.json:
        _print_json({**table.attrs, "csv": str(csv), "plot": str(image), "windows": len(table)})
    else:
        print(timeline.format_timeline(table, csv, image))
    return 0


def _predict_batch(args: argparse.Namespace) -> int:
    """`mer predict PATH... --out OUT.parquet`: every clip into a Parquet dataset (mer_utils.batch)."""
    from mer_utils.batch import FAILURES_FOLDER, predict_batch

    summary = predict_batch(
        args.clip,
        args.models,
        args.out,
        fusion=args.fusion,
        workers=args.workers,
        scheduler=args.scheduler,
        chunk_size=args.chunk_size,
        timeout=args.timeout,
        threads=args.threads,
        memory_limit=args.memory_limit,
    )
    if args.json:
        _print_json(summary)
    else:
        print(
            f"{summary['rows']} rows and {summary['failures']} failures written to {summary['out']} "
            f"({summary['skipped']} clips already there were skipped; {summary['mode']}, "
            f"{summary['seconds']:.1f} s); failures in {Path(summary['out']) / FAILURES_FOLDER}"
        )
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    """`mer app`: the local page over the runs (mer_utils.app); needs the [app] extra (Gradio)."""
    from mer_utils.app import AppLimits, serve

    limits = AppLimits(max_megabytes=args.max_upload_mb, max_seconds=args.max_clip_seconds)
    serve(args.models, fusion=args.fusion, host=args.host, port=args.port, limits=limits)
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    from mer_utils.notebooks import run_notebooks

    results = run_notebooks(
        smoke=args.smoke, only=args.only, timeout=args.timeout, runs_dir=args.runs_dir, jobs=args.jobs
    )
    return 0 if all(r["status"] == "ok" for r in results) else 1


def _data_help() -> str:
    """--data help of `mer train`: what each registered branch reads."""
    kinds: dict[str, list[str]] = {}
    for branch in REGISTRY.values():
        kinds.setdefault(branch.data_help, []).append(branch.name)
    common = max(kinds, key=lambda kind: len(kinds[kind]))
    others = [
        f"{kind} for {', '.join(repr(n) for n in names)}" for kind, names in kinds.items() if kind != common
    ]
    return ", ".join([common, *others])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mer", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v",
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=LOG_LEVELS,
        help="logging level (default WARNING; DEBUG also prints the traceback of an error)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load an old pickled model.joblib (can run any code: only for runs you made yourself)",
    )
    parser.add_argument(
        "--trust-run",
        action="store_true",
        help="load a run (or fusion file) without the checksums that tie model, labels and fusion "
        "together (only for runs you made yourself)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo-data", help="write the synthetic RAVDESS-format demo data set")
    demo.add_argument("out_dir", type=Path)
    demo.add_argument("--actors", type=int, default=8, help="number of actors (default 8)")
    demo.add_argument("--seed", type=int, default=DEFAULT_SEED)
    demo.set_defaults(func=cmd_demo_data)

    download = commands.add_parser("download", help="download RAVDESS from Zenodo (record 1188976)")
    download.add_argument("dest", type=Path)
    download.add_argument("--actors", help="e.g. '1-24' or '1,2,5' (default: all)")
    download.add_argument("--kind", choices=("video-speech", "audio-speech"), default="video-speech")
    download.set_defaults(func=cmd_download)

    index = commands.add_parser(
        "index",
        help="index RAVDESS or other speech corpora and show counts per corpus, speaker, label and the split",
    )
    index.add_argument(
        "data_dir",
        type=Path,
        nargs="+",
        help="one or more sources: corpus folders (RAVDESS, CREMA-D, EMO-DB, TESS, URDU, TurEV-DB, "
        "DIR/<label>/) or manifest CSVs (path,label[,speaker][,corpus])",
    )
    index.add_argument("--out", type=Path, help="write the index as CSV")
    index.add_argument("--manifest", type=Path, help="write skipped files and reasons as CSV")
    index.add_argument("--seed", type=int, default=DEFAULT_SEED)
    index.set_defaults(func=cmd_index)

    train = commands.add_parser("train", help="train one branch and write a run folder")
    train.add_argument("branch", choices=branch_names())
    train.add_argument("--data", type=Path, nargs="+", required=True, help=_data_help())
    train.add_argument("--out", type=Path, required=True, help="run folder to write")
    train.add_argument(
        "--model",
        default=None,
        help="variant: "
        + "; ".join(f"{b.name} {'|'.join(b.models)}" for b in REGISTRY.values())
        + " (default: the first listed, the branch's best on real data)",
    )
    train.add_argument("--seed", type=int, default=DEFAULT_SEED)
    train.add_argument("--smoke", action="store_true", help="tiny, fast run (CI and checks)")
    train.add_argument(
        "--workers",
        type=int,
        default=None,
        help="the clips' features (Whisper, MFCC, utterance statistics, spectrograms, face crops) on a "
        "local Dask cluster of N processes, then training reads them from the cache (default: serial)",
    )
    train.add_argument(
        "--scheduler", default=None, help="the same on a running Dask cluster (tcp://host:8786)"
    )
    train.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"{'/'.join(branches_with_option('epochs'))} only: training epochs (default: the branch's settings)",
    )
    train.add_argument(
        "--init",
        type=Path,
        default=None,
        help=f"{'/'.join(branches_with_option('init'))} only: start from a `mer train faces` run's weights",
    )
    for flag, what in (("--text-column", "text"), ("--label-column", "label")):
        train.add_argument(
            flag, default=None, help=f"text only: the {what} column of generic CSV / TSV files"
        )
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("evaluate", help="score a saved run on every sample of another data set")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="the data to score: several sources for text, audio and spectrogram runs (corpus folders "
        "or manifest CSVs, see `mer index`)",
    )
    evaluate.add_argument(
        "--labels",
        nargs="+",
        default=None,
        help="score only these classes (e.g. angry happy neutral sad): rows of other labels are left out "
        "and counted, the prediction is the most probable of these",
    )
    evaluate.add_argument(
        "--out", type=Path, default=None, help="write OUT/predictions.csv and OUT/metrics.json"
    )
    evaluate.add_argument("--json", action="store_true", help="print all metrics as JSON")
    for flag, what in (("--text-column", "text"), ("--label-column", "label")):
        evaluate.add_argument(flag, default=None, help=f"text runs only: the {what} column of generic files")
    evaluate.set_defaults(func=cmd_evaluate)

    fuse = commands.add_parser("fuse", help="late fusion of run folders' predictions")
    fuse.add_argument("run_dirs", type=Path, nargs="+")
    fuse.add_argument("--out", type=Path, required=True)
    fuse.add_argument("--trust", choices=("accuracy", "macro_f1"), default="macro_f1")
    fuse.add_argument("--seed", type=int, default=DEFAULT_SEED)
    fuse.add_argument(
        "--data",
        type=Path,
        help="also score the fitted fusion and every baseline on this labelled folder or manifest CSV "
        "(audio runs: any layout `mer index` reads; video runs: RAVDESS names; each run predicts it; "
        "results in OUT/data/fusion_table.csv)",
    )
    fuse.add_argument(
        "--fit-on",
        choices=("auto", "validation"),
        default="auto",
        help="auto (default): fit on the runs' out-of-fold predictions of every training and validation "
        "actor when every run has predictions_oof.csv, else on validation; validation: always on validation",
    )
    fuse.set_defaults(func=cmd_fuse)

    predict = commands.add_parser(
        "predict", help="predict the emotion of one new clip, or of many into a Parquet dataset (--out)"
    )
    # Plain strings: Path() would collapse the // of a URL before clip_argument can name it.
    predict.add_argument(
        "clip", nargs="+", help="a clip; with --out also folders (walked) and text files of paths"
    )
    predict.add_argument(
        "--models", type=Path, nargs="+", help="run folders (default: the runs bundled with the package)"
    )
    predict.add_argument(
        "--fusion", type=Path, help="a `mer fuse` folder (fusion.json); default: fit on the runs' validation"
    )
    predict.add_argument("--json", action="store_true")
    predict.add_argument("--verbose", action="store_true", help="print the timing breakdown")
    predict.add_argument(
        "--out",
        type=Path,
        help="batch job: write one row per clip into this Parquet dataset folder (resumable); "
        "with --timeline: the CSV to write (default CLIP-STEM_timeline.csv here), its plot beside it (.png)",
    )
    predict.add_argument(
        "--timeline",
        action="store_true",
        help="emotion over time: every window's per-modality and fused probabilities into a CSV and a plot",
    )
    predict.add_argument(
        "--window",
        type=float,
        help=f"--timeline: window length in seconds (default {TIMELINE_WINDOW:g})",
    )
    predict.add_argument(
        "--hop",
        type=float,
        help=f"--timeline: seconds between window starts (default {TIMELINE_HOP:g})",
    )
    predict.add_argument(
        "--workers", type=int, help="batch: a local Dask cluster of N processes (default serial)"
    )
    predict.add_argument(
        "--scheduler", help="batch: the address of a running Dask scheduler (tcp://host:8786)"
    )
    predict.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"batch: clips per Dask task (default {DEFAULT_CHUNK_SIZE})",
    )
    predict.add_argument(
        "--timeout", type=float, help="batch with Dask: seconds a clip may take before its worker is replaced"
    )
    predict.add_argument(
        "--threads", type=int, help="batch with Dask: math threads per worker (default: cores / workers)"
    )
    predict.add_argument(
        "--memory-limit", help="batch with --workers: memory per worker, e.g. 4GB (default: share)"
    )
    predict.set_defaults(func=cmd_predict)

    from mer_utils import app as page  # constants only: Gradio loads inside serve()

    app = commands.add_parser(
        "app",
        help="a local web page: upload or record a clip (or type a text) and see each modality's answer",
    )
    app.add_argument(
        "--models", type=Path, nargs="+", help="run folders (default: the runs bundled with the package)"
    )
    app.add_argument("--fusion", type=Path, help="a `mer fuse` folder (fusion.json)")
    app.add_argument(
        "--host",
        default=page.DEFAULT_HOST,
        help=f"address to listen on (default {page.DEFAULT_HOST}: this machine only)",
    )
    app.add_argument(
        "--port", type=int, default=page.DEFAULT_PORT, help=f"port (default {page.DEFAULT_PORT})"
    )
    app.add_argument(
        "--max-upload-mb",
        type=float,
        default=page.MAX_UPLOAD_MEGABYTES,
        help=f"largest upload in MB (default {page.MAX_UPLOAD_MEGABYTES:g})",
    )
    app.add_argument(
        "--max-clip-seconds",
        type=float,
        default=page.MAX_CLIP_SECONDS,
        help=f"longest clip in seconds (default {page.MAX_CLIP_SECONDS:g})",
    )
    app.set_defaults(func=cmd_app)

    notebooks = commands.add_parser("notebooks", help="execute all notebooks in order, headless")
    notebooks.add_argument("--smoke", action="store_true", help="MER_SMOKE_TEST=1: small and fast")
    notebooks.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 05")
    notebooks.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")
    notebooks.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="notebooks run at once, each with its share of the cores (a notebook waits for those it reads)",
    )
    notebooks.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="folder for the runs, caches and executed copies (default runs/notebooks/<smoke|full>)",
    )
    notebooks.set_defaults(func=cmd_notebooks)
    return parser


def _traceback_if_debug(args: argparse.Namespace) -> None:
    """With ``-v DEBUG`` print the traceback of the error being handled (for bug reports)."""
    if args.log_level == "DEBUG":
        import traceback

        traceback.print_exc(file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mer`` console script.

    Expected errors (bad input, missing files or packages, a refused model file, a broken archive,
    out of memory) print one line ``mer <command>: error: <message>`` and return 2; Ctrl-C returns
    130; anything else is a bug: one line and 1 (``-v DEBUG`` prints the traceback).
    """
    from mer_utils.runs import TRUST_PICKLE_ENV, TRUST_RUN_ENV

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    # The trust flags last one command: the environment is restored afterwards.
    flags = {TRUST_PICKLE_ENV: args.trust_pickle, TRUST_RUN_ENV: args.trust_run}
    previous = {name: os.environ.get(name) for name, given in flags.items() if given}
    for name in previous:
        os.environ[name] = "1"
    prefix = f"mer {args.command}:"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{prefix} interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        # An expected error (bad input; ImportError: an optional package is missing, the message names
        # the install command) or out of memory returns 2; anything else is a bug and returns 1.
        _traceback_if_debug(args)
        print(f"{prefix} {error_message(error)}", file=sys.stderr)
        return 2 if isinstance(error, EXPECTED_ERRORS + (MemoryError,)) else 1
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


if __name__ == "__main__":
    sys.exit(main())
