"""Fail when a notebook is committed with outputs or execution counts (they belong to runs, not git)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def dirty_cells(path: Path) -> list[int]:
    """Indices of code cells that carry outputs or an execution count."""
    notebook = json.loads(path.read_text())
    return [
        i
        for i, cell in enumerate(notebook.get("cells", []))
        if cell.get("cell_type") == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]


def main() -> int:
    bad = {path.name: cells for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")) if (cells := dirty_cells(path))}
    for name, cells in bad.items():
        print(f"{name}: cells {cells} have outputs; strip them (jupyter nbconvert --clear-output --inplace)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
