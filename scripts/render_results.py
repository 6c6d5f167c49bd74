"""Regenerate the README's results tables from results/*.json (or check that they agree).

    python scripts/render_results.py           # rewrite the blocks between <!-- results:NAME --> markers
    python scripts/render_results.py --check   # exit 1 and name the blocks that differ

Every results file must appear in one block, and every block must have a results file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mer_utils.results import readme_blocks, render_readme, result_names, results_dir

# The README of the checkout this script lives in.
README = Path(__file__).resolve().parent.parent / "README.md"


def main(argv: list[str] | None = None) -> int:
    """Rewrite or check the README's generated results blocks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results-dir", type=Path, help="results folder (default: results/ of the checkout)")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a block is stale")
    args = parser.parse_args(argv)

    text = args.readme.read_text(encoding="utf-8")
    names = result_names(args.results_dir)
    unused = sorted(set(names) - set(readme_blocks(text)))
    if unused:
        folder = args.results_dir or results_dir()
        print(f"{args.readme}: no block for {unused} (add <!-- results:NAME --> markers); files in {folder}")
        return 1
    rendered = render_readme(text, args.results_dir)
    if rendered == text:
        print(f"{args.readme}: results tables agree with the results files")
        return 0
    if args.check:
        old, new = readme_blocks(text), readme_blocks(rendered)
        stale = sorted(name for name in new if old.get(name) != new[name])
        print(f"{args.readme}: stale results blocks {stale}; run python scripts/render_results.py")
        return 1
    args.readme.write_text(rendered, encoding="utf-8")
    print(f"{args.readme}: results tables rewritten from {len(names)} results files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
