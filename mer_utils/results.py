"""Measured results, one small JSON file each under ``results/``, and the tables generated from them.

A results file records one measurement and how it was made::

    {
      "title": "Text",
      "data": {"path": "../shared/data/text/emotion_dataset_raw.csv", "description": "..."},
      "protocol": {"split": "...", "test": "...", "n": 3105},
      "command": "mer train text --data ... --out ... --seed 42",
      "metrics": [{"name": "linear SVM", "accuracy": 0.638, "macro_f1": 0.646, ...}, ...]
    }

Each entry of ``metrics`` is one table row: ``name``, then any of ``accuracy``, ``macro_f1``,
``n`` (overrides the protocol's), ``ci95`` (``{"accuracy": [low, high]}``, a bootstrap interval
recorded by the run), ``other_seeds`` (``{"1": {"accuracy": ..., "macro_f1": ...}}``),
``per_class_recall`` (``{label: recall}``), ``values`` (more columns: a number, a string or
``{"mean": m, "sd": s}``), ``command`` (when the row was made by another command than the file's),
``source`` (where a number comes from when no command made it, or a caveat), ``reference`` (true
for a number from elsewhere, made by no command of this project), ``key`` (the model id a script
matches rows by), ``bold``, ``decimals`` and ``details`` (kept, not shown). Optional
top-level keys: ``title``, ``source``, ``row_label`` and ``accuracy_label`` (column headers),
``value_decimals`` (``{column: decimals}`` for ``values`` columns), ``notes`` (sentences about the
numbers, with any measured figure they quote, shown under the table), ``headline`` (``{"task",
"data", "key", "section", "order"}``: the row of the README's headline table) and ``details``.

The scripts that measure results write them with :func:`write_results`, which writes paths in
commands and in ``data.path`` as placeholders (``DATA_DIR/...`` for the real data sets,
``runs/<name>`` for a temporary folder), never a folder of one machine. The tables between
``<!-- results:NAME -->`` markers in the README and ``docs/results.md``, and the headline table
between ``<!-- results-headline -->`` markers, are rendered from the files by
:func:`render_document` (``scripts/render_results.py``); a test fails when the two disagree.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mer_utils.config import CHECKOUT_ROOT, PROJECT_ROOT

# Keys every results file must have: what was measured, how, with which command, and the numbers.
REQUIRED_KEYS: tuple[str, ...] = ("data", "protocol", "command", "metrics")
# A results name is a file stem: lower-case letters, digits and underscores.
NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")
# Markers around a generated table: <!-- results:NAME --> ... <!-- /results:NAME -->.
MARKER_PATTERN = re.compile(r"<!-- results:([a-z0-9_]+) -->\n(.*?)<!-- /results:\1 -->", re.DOTALL)
# Markers around the headline table (one row per results file with a "headline" entry).
HEADLINE_PATTERN = re.compile(r"<!-- results-headline -->\n(.*?)<!-- /results-headline -->", re.DOTALL)
# Documents of the checkout that hold generated blocks (paths relative to the checkout).
DOCUMENTS: tuple[str, ...] = ("README.md", "docs/results.md")
# Where the headline table links to: the document with the full results blocks.
FULL_RESULTS_DOCUMENT = "docs/results.md"
# What counts as a measured figure typed into prose (see typed_figures): a score with two or more
# decimals (not a threshold after < or >), a difference in points, and a time something took.
FIGURE_PATTERNS: tuple[re.Pattern, ...] = (
    re.compile(r"(?<![<>] )(?<![<>\d.])\b[01]\.\d{2,}\b(?!\.\d)"),
    re.compile(r"\b\d+(?:\.\d+)?\s+points?\b"),
    re.compile(
        r"\b(?:takes?|took|taking|in|after)\s+(?:about\s+|~)?\d+(?:\.\d+)?\s*"
        r"(?:s|sec|seconds?|min|minutes?|h|hours?)\b"
    ),
)
# Placeholder of the folder holding the real data sets (MER_REAL_DATA; beside the checkout by default).
DATA_PLACEHOLDER = "DATA_DIR"
# A path in a command or data entry: absolute, or climbing out of the checkout ("../").
# The look-behind keeps "a/b" and "runs/x" (relative, inside the checkout) out of it.
MACHINE_PATH_PATTERN = re.compile(r"(?<![\w.~/:-])(?:/|\.\./|~/)[^\s`'\"),;]+")
# z of a two-sided 95% interval (the Wilson interval shown when no bootstrap interval was recorded).
Z_95 = 1.959964


def results_dir() -> Path:
    """The results folder: ``MER_RESULTS_DIR``, else ``results/`` of the checkout (or project folder)."""
    if os.environ.get("MER_RESULTS_DIR"):
        return Path(os.environ["MER_RESULTS_DIR"]).expanduser()
    return (CHECKOUT_ROOT or PROJECT_ROOT) / "results"


def real_data_root() -> Path:
    """The folder of the real data sets that ``DATA_DIR`` stands for: ``MER_REAL_DATA``, else ``../shared/data``."""
    if os.environ.get("MER_REAL_DATA"):
        return Path(os.environ["MER_REAL_DATA"]).expanduser()
    return (CHECKOUT_ROOT or PROJECT_ROOT).parent / "shared" / "data"


def placeholder_path(path: str) -> str:
    """``path`` as a results file names it: ``DATA_DIR/...``, ``runs/<name>`` or relative to the checkout.

    A path inside the real-data folder becomes ``DATA_DIR/<rest>``; a path in a temporary folder
    (an output folder of one machine) becomes ``runs/<its name>``; a path inside the checkout
    becomes relative to it; any other absolute path keeps only its name, under ``DIR/``.
    """
    root = CHECKOUT_ROOT or PROJECT_ROOT
    candidate = Path(path).expanduser()
    resolved = (candidate if candidate.is_absolute() else Path.cwd() / candidate).resolve()
    data_root = real_data_root().resolve()
    if resolved == data_root or resolved.is_relative_to(data_root):
        rest = resolved.relative_to(data_root).as_posix()
        return DATA_PLACEHOLDER if rest == "." else f"{DATA_PLACEHOLDER}/{rest}"
    for temporary in {Path(tempfile.gettempdir()).resolve(), Path("/tmp").resolve()}:
        if resolved.is_relative_to(temporary):
            return f"runs/{resolved.name}"
    if resolved.is_relative_to(root.resolve()):
        return resolved.relative_to(root.resolve()).as_posix()
    return f"DIR/{resolved.name}"


def with_placeholders(text: str) -> str:
    """``text`` (a command line) with every machine-specific path replaced by :func:`placeholder_path`."""
    return MACHINE_PATH_PATTERN.sub(lambda match: placeholder_path(match.group(0)), text)


def machine_paths(text: str) -> list[str]:
    """The machine-specific paths in ``text``: absolute, home-relative or leaving the checkout."""
    return MACHINE_PATH_PATTERN.findall(text)


def results_path(name: str, folder: str | Path | None = None) -> Path:
    """The file of results ``name`` (``results/<name>.json``)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"results name {name!r}: use lower-case letters, digits and underscores only")
    return Path(folder if folder is not None else results_dir()) / f"{name}.json"


def validate_record(record: Any, source: str = "results") -> dict:
    """Return ``record`` if it has data, protocol, command and metric rows, else raise ValueError."""
    if not isinstance(record, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in REQUIRED_KEYS if not record.get(key)]
    if missing:
        raise ValueError(f"{source}: missing or empty {missing}; every result needs {list(REQUIRED_KEYS)}")
    if not isinstance(record["data"], dict) or not record["data"].get("path"):
        raise ValueError(f"{source}: 'data' must be an object with a 'path'")
    if not isinstance(record["protocol"], dict):
        raise ValueError(f"{source}: 'protocol' must be an object (split, test part, n)")
    if not isinstance(record["command"], str):
        raise ValueError(f"{source}: 'command' must be the command line that made the numbers")
    rows = record["metrics"]
    if not isinstance(rows, list):
        raise ValueError(f"{source}: 'metrics' must be a list of rows")
    for position, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise ValueError(f"{source}: metrics row {position} needs a 'name'")
        if not any(key in row for key in ("accuracy", "macro_f1", "values", "per_class_recall")):
            raise ValueError(f"{source}: metrics row {row['name']!r} has no metric values")
        for key in ("accuracy", "macro_f1"):
            if key in row and not _is_number(row[key]):
                raise ValueError(f"{source}: metrics row {row['name']!r}: {key} must be a number")
    shown = {"command": record["command"], "data path": record["data"]["path"]}
    shown |= {f"command of row {row['name']!r}": row["command"] for row in rows if row.get("command")}
    for what, text in shown.items():
        found = machine_paths(str(text))
        if found:
            raise ValueError(
                f"{source}: the {what} names a folder of one machine ({', '.join(found)}); write "
                f"{DATA_PLACEHOLDER}/... for the real data and runs/NAME or RUN for run folders "
                "(write_results does it for you)"
            )
    notes = record.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(note, str) for note in notes):
        raise ValueError(f"{source}: 'notes' must be a list of sentences")
    headline = record.get("headline")
    if headline is not None:
        if not isinstance(headline, dict):
            raise ValueError(f"{source}: 'headline' must be an object (task, data, key, section)")
        missing = [key for key in ("task", "data", "key", "section") if not headline.get(key)]
        if missing:
            raise ValueError(f"{source}: 'headline' needs task, data, key and section; missing {missing}")
        row = next((row for row in rows if row.get("key") == headline["key"]), None)
        if row is None or not _is_number(row.get("accuracy")):
            raise ValueError(f"{source}: headline key {headline['key']!r} is not a row with an accuracy")
    return record


def load_results(name: str, folder: str | Path | None = None) -> dict:
    """Read and check results file ``name``."""
    path = results_path(name, folder)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results file; the script that measures it writes it")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    return validate_record(record, str(path))


def write_results(name: str, record: dict, folder: str | Path | None = None) -> Path:
    """Check ``record`` and write it as results file ``name`` atomically; returns the path."""
    from mer_utils.runs import atomic_write_bytes

    path = results_path(name, folder)
    record = _placeholders_of(record)
    validate_record(record, str(path))
    text = json.dumps(record, indent=2, ensure_ascii=False, default=_plain) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def _placeholders_of(record: dict) -> dict:
    """A copy of ``record`` whose command, data path and row commands use placeholders for paths."""
    if not isinstance(record, dict):
        return record
    record = dict(record)
    if isinstance(record.get("command"), str):
        record["command"] = with_placeholders(record["command"])
    if isinstance(record.get("data"), dict) and record["data"].get("path"):
        data = dict(record["data"])
        data["path"] = with_placeholders(str(data["path"]))
        record["data"] = data
    if isinstance(record.get("metrics"), list):
        record["metrics"] = [
            row | {"command": with_placeholders(row["command"])}
            if isinstance(row, dict) and isinstance(row.get("command"), str)
            else row
            for row in record["metrics"]
        ]
    return record


def result_names(folder: str | Path | None = None) -> list[str]:
    """Names of the results files in ``folder`` (sorted)."""
    folder = Path(folder if folder is not None else results_dir())
    return sorted(path.stem for path in folder.glob("*.json")) if folder.is_dir() else []


def command_line(script: str | Path, argv: Sequence[str] | None = None) -> str:
    """The command that ran ``script`` with ``argv`` (default: this process's arguments), for a results file."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    path = Path(script).resolve()
    root = CHECKOUT_ROOT or PROJECT_ROOT
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    return with_placeholders(shlex.join(["python", str(shown), *arguments]))


def update_results(
    name: str, rows: list[dict], command: str, defaults: dict, folder: str | Path | None = None
) -> Path:
    """Write ``rows`` into results file ``name``: rows with the same ``key`` replaced, other rows kept.

    ``defaults`` gives data, protocol (and any other top-level key, e.g. ``row_label``) for a new
    file; an existing file keeps its own, with the keys of ``defaults["protocol_update"]`` applied.
    ``command`` becomes the file's command.
    """
    path = results_path(name, folder)
    if path.is_file():
        record = load_results(name, folder)
        record["protocol"] = {**record["protocol"], **defaults.get("protocol_update", {})}
    else:
        record = {key: value for key, value in defaults.items() if key != "protocol_update"}
        record["protocol"] = {**defaults["protocol"], **defaults.get("protocol_update", {})}
        record["metrics"] = []
    old_command, fresh = record.get("command"), {row.get("key") for row in rows}
    record["command"] = command
    for row in record["metrics"]:
        # Rows this run did not re-measure keep the command that made them (references have none).
        kept = row.get("key") not in fresh and not row.get("reference") and not row.get("command")
        if kept and old_command != command:
            row["command"] = old_command
    record["metrics"] = merge_rows(record["metrics"], rows)
    return write_results(name, record, folder)


def merge_rows(
    old_rows: Iterable[dict],
    new_rows: Iterable[dict],
    key: str = "key",
    keep: Sequence[str] = ("name", "bold", "decimals"),
) -> list[dict]:
    """Rows of ``old_rows`` with the ones ``new_rows`` re-measured (same ``key``) replaced, new ones appended.

    A script that measures some of a file's rows keeps the others (references, other models).
    Fields the script does not measure (``keep``: the row's display ``name``, ``bold``) stay as they were.
    """
    new_rows = list(new_rows)
    fresh = {row[key]: row for row in new_rows if key in row}
    merged, used = [], set()
    for row in old_rows:
        if row.get(key) in fresh:
            kept = {field: row[field] for field in keep if field in row}
            merged.append(fresh[row[key]] | kept)
            used.add(row[key])
        else:
            merged.append(row)
    return merged + [row for row in new_rows if row.get(key) not in used]


def wilson_interval(accuracy: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``accuracy`` measured on ``n`` items."""
    if n <= 0:
        raise ValueError(f"need at least one item for an interval, got n = {n}")
    centre = accuracy + Z_95**2 / (2 * n)
    spread = Z_95 * math.sqrt(accuracy * (1 - accuracy) / n + Z_95**2 / (4 * n * n))
    denominator = 1 + Z_95**2 / n
    return (centre - spread) / denominator, (centre + spread) / denominator


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays as plain JSON values (scripts pass metrics straight from NumPy)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to a results file")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, decimals: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, dict) and {"mean", "sd"} <= set(value):
        return f"{value['mean']:.{decimals}f} ± {value['sd']:.{decimals}f}"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{decimals}f}"


def _row_n(row: dict, record: dict) -> int | None:
    return row["n"] if "n" in row else record["protocol"].get("n")


def _interval(row: dict, record: dict) -> tuple[str, bool]:
    """The accuracy interval cell and whether it is a recorded bootstrap interval."""
    recorded = (row.get("ci95") or {}).get("accuracy")
    if recorded:
        return f"[{recorded[0]:.3f}, {recorded[1]:.3f}]", True
    n = _row_n(row, record)
    if not _is_number(row.get("accuracy")) or not n:
        return "", False
    low, high = wilson_interval(row["accuracy"], n)
    return f"[{low:.3f}, {high:.3f}]", False


def _footnote(row: dict, record: dict) -> str:
    """How a row was made when that differs from the file's command: its command and / or source."""
    command = row.get("command") if row.get("command") != record["command"] else None
    parts = ([f"`{command}`"] if command else []) + ([row["source"]] if row.get("source") else [])
    return ": ".join(parts)


def _columns(rows: list[dict], field: str) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [name for name in row.get(field) or {} if name not in names]
    return names


def render_table(record: dict) -> str:
    """The generated block of one results file: data, protocol and command lines, the metrics table, notes."""
    rows = record["metrics"]
    has = {key: any(key in row for row in rows) for key in ("accuracy", "macro_f1")}
    seeds = _columns(rows, "other_seeds")
    values = _columns(rows, "values")
    classes = _columns(rows, "per_class_recall")
    commands: list[str] = []
    header = [record.get("row_label", "model")]
    header += [record.get("accuracy_label", "accuracy"), "95% CI"] if has["accuracy"] else []
    header += ["macro-F1"] if has["macro_f1"] else []
    header += [f"seed {seed} acc / F1" for seed in seeds] + values
    header += [f"recall {label}" for label in classes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    bootstrap = wilson = False
    for row in rows:
        decimals = row.get("decimals", 3)
        name = f"**{row['name']}**" if row.get("bold") else row["name"]
        footnote = _footnote(row, record)
        if footnote:
            if footnote not in commands:
                commands.append(footnote)
            name += f" ({commands.index(footnote) + 1})"
        cells = [name]
        if has["accuracy"]:
            accuracy = _number(row.get("accuracy"), decimals)
            interval, recorded = _interval(row, record)
            bootstrap, wilson = bootstrap or recorded, wilson or (bool(interval) and not recorded)
            cells += [f"**{accuracy}**" if row.get("bold") and accuracy else accuracy]
            cells += [interval + ("*" if recorded else "")]
        if has["macro_f1"]:
            cells.append(_number(row.get("macro_f1"), decimals))
        for seed in seeds:
            other = (row.get("other_seeds") or {}).get(seed)
            cells.append(f"{other['accuracy']:.3f} / {other['macro_f1']:.3f}" if other else "")
        places = record.get("value_decimals") or {}
        cells += [
            _number((row.get("values") or {}).get(column), places.get(column, decimals)) for column in values
        ]
        cells += [_number((row.get("per_class_recall") or {}).get(label), decimals) for label in classes]
        lines.append("| " + " | ".join(cells) + " |")
    data, protocol = record["data"], record["protocol"]
    text = [f"**Data:** `{data['path']}`" + (f": {data['description']}" if data.get("description") else "")]
    parts = [protocol[key] for key in ("split", "test", "selection") if protocol.get(key)]
    if protocol.get("n"):
        parts.append(f"n = {protocol['n']:,}")
    text.append("**Protocol:** " + "; ".join(parts) + ".")
    source = f" ({record['source']})" if record.get("source") else ""
    text.append(f"**Command:** `{record['command']}`{source}")
    text = ["  \n".join(text), "", *lines]
    notes = []
    if bootstrap or wilson:
        kinds = ["* bootstrap over the test items, recorded by the run"] if bootstrap else []
        kinds += (
            ["Wilson score interval from accuracy and n" + (", otherwise" if bootstrap else "")]
            if wilson
            else []
        )
        notes.append("95% CI of accuracy: " + "; ".join(kinds) + ".")
    notes += [f"({number}) {footnote}" for number, footnote in enumerate(commands, start=1)]
    if notes:
        text += ["", "  \n".join(notes)]
    for note in record.get("notes", []):
        text += ["", note]
    return "\n".join(text) + "\n"


def render_headline(folder: str | Path | None = None, link_prefix: str = "") -> str:
    """The headline table: one row per results file with a ``headline`` entry, in its ``order``.

    Each row links to its section of :data:`FULL_RESULTS_DOCUMENT` (``link_prefix`` + the
    document's path, so a document elsewhere can link to it), where the full block says how the
    number was measured.
    """
    entries = []
    for name in result_names(folder):
        record = load_results(name, folder)
        if record.get("headline"):
            entries.append((record["headline"].get("order", 99), name, record))
    entries.sort(key=lambda entry: entry[:2])
    lines = ["| task | data | model | accuracy | 95% CI | macro-F1 | n |", "|---|---|---|---|---|---|---|"]
    bootstrap = wilson = False
    for _, _, record in entries:
        headline = record["headline"]
        row = next(row for row in record["metrics"] if row.get("key") == headline["key"])
        interval, recorded = _interval(row, record)
        bootstrap, wilson = bootstrap or recorded, wilson or (bool(interval) and not recorded)
        n = _row_n(row, record)
        link = f"[{headline['task']}]({link_prefix}{FULL_RESULTS_DOCUMENT}#{headline['section']})"
        cells = [
            link,
            headline["data"],
            row["name"],
            f"**{_number(row['accuracy'], row.get('decimals', 3))}**",
            interval + ("*" if recorded else ""),
            _number(row.get("macro_f1"), row.get("decimals", 3)),
            f"{n:,}" if n else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    kinds = ["* bootstrap over the test items, recorded by the run"] if bootstrap else []
    kinds += (
        ["Wilson score interval from accuracy and n" + (", otherwise" if bootstrap else "")] if wilson else []
    )
    note = ["", "95% CI of accuracy: " + "; ".join(kinds) + "."] if kinds else []
    return "\n".join(lines + note) + "\n"


def readme_blocks(text: str) -> dict[str, str]:
    """The generated results blocks of a document: results name -> the text between its markers."""
    return {match.group(1): match.group(2) for match in MARKER_PATTERN.finditer(text)}


def headline_blocks(text: str) -> list[str]:
    """The headline blocks of a document (the text between each pair of headline markers)."""
    return [match.group(1) for match in HEADLINE_PATTERN.finditer(text)]


def generated_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of a document's generated blocks (results and headline), markers included."""
    matches = [*MARKER_PATTERN.finditer(text), *HEADLINE_PATTERN.finditer(text)]
    return sorted(match.span() for match in matches)


def typed_figures(text: str) -> list[str]:
    """Measured figures typed into ``text`` outside its generated blocks (see :data:`FIGURE_PATTERNS`).

    Such a figure goes stale silently when the result is measured again: it belongs in the
    results file (a row, or a sentence of its ``notes``), which renders it into a block.
    """
    spans = generated_spans(text)
    found = []
    for pattern in FIGURE_PATTERNS:
        for match in pattern.finditer(text):
            if not any(start <= match.start() < end for start, end in spans):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"line {line}: {match.group(0)!r}")
    return sorted(found, key=lambda entry: int(entry.split(":")[0].removeprefix("line ")))


def render_document(text: str, folder: str | Path | None = None, link_prefix: str = "") -> str:
    """``text`` with every results block and headline block re-rendered from the results files.

    ``link_prefix`` leads the headline's links from the document to :data:`FULL_RESULTS_DOCUMENT`.
    """

    def replace(match: re.Match) -> str:
        name = match.group(1)
        table = render_table(load_results(name, folder))
        return f"<!-- results:{name} -->\n{table}<!-- /results:{name} -->"

    text = MARKER_PATTERN.sub(replace, text)
    if HEADLINE_PATTERN.search(text):
        headline = render_headline(folder, link_prefix)
        text = HEADLINE_PATTERN.sub(
            lambda _: f"<!-- results-headline -->\n{headline}<!-- /results-headline -->", text
        )
    return text


# The name the scripts and tests have used for it.
render_readme = render_document
