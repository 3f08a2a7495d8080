"""A small table model (rows x columns of mean ± std over seeds) and its CSV, Markdown and LaTeX renderings.

Hand-built rather than pandas' Styler so that the three formats bold exactly the same cells: the best mean of a
column as it is DISPLAYED (ties at the shown precision are all bold), the way papers mark a winner.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hificl.files import atomic_write_text

Best = Literal["max", "min"] | None


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof = 1) over n seeds, in display units (percent, CIDEr x 100).

    The one mean/std of tables and figures. The std of a single seed is undefined and stays NaN: a table prints
    the mean alone, a figure draws no error bar (a 0 would claim a spread was measured)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float], scale: float = 1.0) -> Stat:
        xs = [scale * v for v in values if not math.isnan(v)]
        if not xs:
            return cls(math.nan, math.nan, 0)
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
        return cls(mean, std, len(xs))


Cell = Stat | float | str | None


@dataclass
class Column:
    """One column: "stat" cells hold Stat, "delta" cells a Stat of paired differences (shown signed), "text"
    cells a string."""

    header: str
    cells: list[Cell]
    kind: Literal["stat", "delta", "text"] = "stat"
    best: Best = "max"


@dataclass
class Table:
    name: str  # file stem
    title: str
    index_header: str
    labels: list[str]
    columns: list[Column] = field(default_factory=list)
    digits: int = 1


def _mean_text(mean: float, digits: int) -> str:
    return f"{mean:.{digits}f}"


def _bold_rows(table: Table, column: Column) -> set[int]:
    if column.kind != "stat" or column.best is None:
        return set()
    shown = {
        i: round(c.mean, table.digits)
        for i, c in enumerate(column.cells)
        if isinstance(c, Stat) and not math.isnan(c.mean)
    }
    if len(shown) < 2:
        return set()
    target = max(shown.values()) if column.best == "max" else min(shown.values())
    return {i for i, v in shown.items() if v == target}


def cell_text(cell: Cell, kind: str, digits: int, pm: str) -> str:
    """The displayed text of one cell; `pm` is the format's plus-minus sign."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return "–"
    if isinstance(cell, Stat):
        if math.isnan(cell.mean):
            return "–"
        # + 0.0 turns a rounded -0.0 into 0.0
        text = f"{round(cell.mean, digits) + 0.0:+.{digits}f}" if kind == "delta" else _mean_text(cell.mean, digits)
        return text if math.isnan(cell.std) else f"{text}{pm}{cell.std:.{digits}f}"
    return str(cell)


def _grid(table: Table, pm: str, bold: str) -> list[list[str]]:
    """Displayed cells, row by row, with `bold` a format string such as "**{}**"."""
    bolds = [_bold_rows(table, c) for c in table.columns]
    grid = []
    for i, label in enumerate(table.labels):
        row = [label]
        for column, bold_rows in zip(table.columns, bolds, strict=True):
            text = cell_text(column.cells[i], column.kind, table.digits, pm)
            row.append(bold.format(text) if i in bold_rows else text)
        grid.append(row)
    return grid


def to_markdown(table: Table) -> str:
    header = [table.index_header, *(c.header for c in table.columns)]
    lines = [f"**{table.title}**", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in _grid(table, " ± ", "**{}**")]
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}
_LATEX_SPECIALS |= {"{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SPECIALS |= {
    "±": r"$\pm$",
    "–": "--",
    "Δ": r"$\Delta$",
    "α": r"$\alpha$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs tabular inside a table float; needs \\usepackage{booktabs}."""
    header = [table.index_header, *(c.header for c in table.columns)]
    rows = [[latex_escape(cell) for cell in row] for row in _grid(table, " ± ", "\x00{}\x01")]
    rows = [[cell.replace("\x00", r"\textbf{").replace("\x01", "}") for cell in row] for row in rows]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}}}",
        rf"\label{{tab:{table.name.replace('_', '-')}}}",
        r"\begin{tabular}{l" + "c" * len(table.columns) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
        *(" & ".join(row) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Numbers, not text: a stat or delta column becomes `<header> mean`, `<header> std`, `<header> n`."""
    header = [table.index_header]
    for c in table.columns:
        header += [f"{c.header} mean", f"{c.header} std", f"{c.header} n"] if c.kind != "text" else [c.header]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    for i, label in enumerate(table.labels):
        row: list[object] = [label]
        for c in table.columns:
            cell = c.cells[i]
            if c.kind != "text":
                stat = cell if isinstance(cell, Stat) else Stat(math.nan, math.nan, 0)
                row += [_csv_number(stat.mean), _csv_number(stat.std), stat.n]
            else:
                row.append(_csv_number(cell) if isinstance(cell, float) else ("" if cell is None else cell))
        writer.writerow(row)
    return buffer.getvalue()


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else repr(round(value, 6))


def write_table(table: Table, out_dir: Path) -> list[Path]:
    """`<name>.csv`, `<name>.md` and `<name>.tex` under out_dir, each written atomically."""
    renderings = (("csv", to_csv), ("md", to_markdown), ("tex", to_latex))
    return [atomic_write_text(out_dir / f"{table.name}.{ext}", render(table)) for ext, render in renderings]
