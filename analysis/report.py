"""One call for `make figures` and the end of `make ablations`: every table and figure plus an index.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.figures import FIGURES, write_figures
from analysis.store import load_results
from analysis.tables import all_tables, write_tables
from hificl.files import atomic_write_text


def build_report(results_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write tables to `<out_dir>/tables`, figures to `<out_dir>/figures` and `<out_dir>/index.md`
    (out_dir defaults to `<results_dir>/report`). Returns {"tables", "figures": written paths, "skipped":
    names without data, "index": the index path}."""
    results = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results / "report"
    rows = load_results(results)
    tables = write_tables(results, out / "tables")
    figures = write_figures(results, out / "figures")
    written = {p.stem for p in tables} | {f"figure:{p.stem}" for p in figures}
    skipped = [f"table {n}" for n in all_tables(rows) if n not in written]
    skipped += [f"figure {n}" for n in FIGURES if f"figure:{n}" not in written]
    index = out / "index.md"
    atomic_write_text(index, _index_text(f"{len(rows)} cell(s) in `{results}`", out, tables, figures, skipped))
    return {"tables": tables, "figures": figures, "skipped": skipped, "index": index}


def _index_text(source: str, out: Path, tables: list[Path], figures: list[Path], skipped: list[str]) -> str:
    lines = [
        "# Results report",
        "",
        f"Built from {source} (nothing re-run).",
        "",
        "## Tables",
    ]
    for stem in dict.fromkeys(p.stem for p in tables):
        links = ", ".join(f"[{p.suffix[1:]}]({p.relative_to(out)})" for p in tables if p.stem == stem)
        lines.append(f"- {stem}: {links}")
    lines += ["", "## Figures"]
    for stem in dict.fromkeys(p.stem for p in figures):
        links = ", ".join(f"[{p.suffix[1:]}]({p.relative_to(out)})" for p in figures if p.stem == stem)
        lines.append(f"- {stem}: {links}")
    if skipped:
        lines += ["", "## Skipped (no data in the store)", *(f"- {name}" for name in skipped)]
    return "\n".join(lines) + "\n"
