"""Regenerate the results tables of the README and docs/results.md from results/*.json (or check them).

    python scripts/render_results.py           # rewrite the generated blocks of every document
    python scripts/render_results.py --check   # exit 1 and name the blocks that differ

A results block sits between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``; the
headline table between ``<!-- results-headline -->`` and ``<!-- /results-headline -->``. Every
results file must appear in exactly one block over all the documents, and every block must have
a results file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mer_utils.results import (
    DOCUMENTS,
    FULL_RESULTS_DOCUMENT,
    headline_blocks,
    readme_blocks,
    render_document,
    result_names,
    results_dir,
)

# The checkout this script lives in.
ROOT = Path(__file__).resolve().parent.parent


def link_prefix(document: Path, root: Path) -> str:
    """The relative path from ``document``'s folder to the checkout (for links to the full results)."""
    try:
        depth = len(document.resolve().relative_to(root.resolve()).parent.parts)
    except ValueError:
        depth = 0
    return "../" * depth


def main(argv: list[str] | None = None) -> int:
    """Rewrite or check the generated results blocks of the documents."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--file",
        "--readme",
        dest="files",
        type=Path,
        action="append",
        help=f"a document with generated blocks (repeatable; default: {', '.join(DOCUMENTS)})",
    )
    parser.add_argument("--results-dir", type=Path, help="results folder (default: results/ of the checkout)")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a block is stale")
    args = parser.parse_args(argv)

    files = args.files or [ROOT / name for name in DOCUMENTS]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        print(f"no such document {missing}; give existing files with --file")
        return 1
    texts = {path: path.read_text(encoding="utf-8") for path in files}
    names = result_names(args.results_dir)
    placed: dict[str, list[str]] = {}
    for path, text in texts.items():
        for name in readme_blocks(text):
            placed.setdefault(name, []).append(os.path.relpath(path))
    folder = args.results_dir or results_dir()
    unused = sorted(set(names) - set(placed))
    if unused:
        print(
            f"no block for {unused} (add <!-- results:NAME --> markers to {FULL_RESULTS_DOCUMENT}); files in {folder}"
        )
        return 1
    twice = {name: where for name, where in placed.items() if len(where) > 1}
    if twice:
        print(f"results shown in more than one block: {twice}; keep one block per results file")
        return 1

    stale_files = []
    for path, text in texts.items():
        rendered = render_document(text, args.results_dir, link_prefix(path, ROOT))
        if rendered == text:
            continue
        if args.check:
            old, new = readme_blocks(text), readme_blocks(rendered)
            stale = sorted(name for name in new if old.get(name) != new[name])
            if headline_blocks(text) != headline_blocks(rendered):
                stale.append("headline")
            print(f"{path}: stale results blocks {stale}; run python scripts/render_results.py")
        else:
            path.write_text(rendered, encoding="utf-8")
            print(f"{path}: results tables rewritten from the results files")
        stale_files.append(path)
    if not stale_files:
        print(f"{len(texts)} documents: results tables agree with the {len(names)} results files")
    return 1 if args.check and stale_files else 0


if __name__ == "__main__":
    sys.exit(main())
