"""The benchmark report on the console: rich tables that fit the terminal (columns dropped by priority)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tdmi.benchmarks.report import GROUP_NAMES, BenchReport
from tdmi.benchmarks.report_markdown import (
    accuracy_cells,
    header_lines,
    latency_cells,
    what_label,
)
from tdmi.benchmarks.task_accuracy import task_cells, task_title


@dataclass(frozen=True)
class ConsoleColumn:
    """A console-table column: ``drop`` orders the columns left out first when the terminal is narrow.

    ``drop=None``: always shown (names, the headline numbers, footnote marks).
    """

    header: str
    right: bool = True
    drop: int | None = None


# (column, index into latency_cells; -1: the footnote mark)
LATENCY_CONSOLE: tuple[tuple[ConsoleColumn, int], ...] = (
    (ConsoleColumn("backend", right=False), 0),
    (ConsoleColumn("prec", right=False), 1),
    (ConsoleColumn("batch"), 2),
    (ConsoleColumn("p50 ms"), 3),
    (ConsoleColumn("p90 ms", drop=1), 4),
    (ConsoleColumn("speed-up (IQR)"), 7),
    (ConsoleColumn("hm rel", drop=2), 9),
    (ConsoleColumn("kp agree", drop=3), 10),
    (ConsoleColumn("", right=False), -1),
)
ACCURACY_CONSOLE: tuple[tuple[ConsoleColumn, int], ...] = (
    (ConsoleColumn("backend", right=False), 0),
    (ConsoleColumn("prec", right=False), 1),
    *((ConsoleColumn(g, drop=None if g == "Total" else 8 - i), 2 + i) for i, g in enumerate(GROUP_NAMES)),
    (ConsoleColumn("Δ Total"), 10),
    (ConsoleColumn("kp agree", drop=0), 11),
    (ConsoleColumn("", right=False), -1),
)
TASK_CONSOLE: tuple[tuple[ConsoleColumn, int], ...] = (
    (ConsoleColumn("backend", right=False), 0),
    (ConsoleColumn("prec", right=False), 1),
    (ConsoleColumn("PCK@0.05 %"), 2),
    (ConsoleColumn("95% CI", drop=2), 3),
    (ConsoleColumn("PCK drop"), 4),
    (ConsoleColumn("drop 95% CI", drop=5), 5),
    (ConsoleColumn("OKS AP %", drop=4), 6),
    (ConsoleColumn("AP drop", drop=3), 7),
    (ConsoleColumn("clips < 0.5", drop=1), 8),
    (ConsoleColumn("speed-up"), 9),
    (ConsoleColumn("", right=False), -1),
)


def fit_table(
    console: Any,
    title: str,
    columns: Sequence[ConsoleColumn],
    rows: Sequence[tuple[Sequence[str], str | None]],
) -> tuple[Any, list[str]]:
    """A rich table that fits ``console.width`` without cutting a value: (table, headers left out).

    Columns are left out in their ``drop`` order until every row fits on one line; should the kept
    columns still be too wide (long engine names), cells are stacked at their spaces (``2.47x`` over
    ``(2.41-2.50)``). Cells overflow by folding, never by an ellipsis, so a number or a name is never
    shown cut.
    """
    from rich import box
    from rich.markup import escape
    from rich.measure import Measurement
    from rich.table import Table

    def build(shown: list[int], stack: bool) -> Any:
        def text(s: str) -> str:
            return escape(s.replace(" ", "\n") if stack else s)

        table = Table(title=escape(title), box=box.SIMPLE_HEAD)
        for i in shown:
            c = columns[i]
            table.add_column(text(c.header), justify="right" if c.right else "left", overflow="fold")
        for cells, style in rows:
            table.add_row(*(text(cells[i]) for i in shown), style=style)
        return table

    wide = console.options.update_width(10_000)

    def fits(table: Any) -> bool:
        return bool(Measurement.get(console, wide, table).maximum <= console.width)

    shown = list(range(len(columns)))
    order = sorted(
        (i for i, c in enumerate(columns) if c.drop is not None), key=lambda i: columns[i].drop or 0
    )
    table = build(shown, stack=False)
    while order and not fits(table):
        shown.remove(order.pop(0))
        table = build(shown, stack=False)
    if not fits(table):
        table = build(shown, stack=True)
    left_out = [columns[i].header for i in range(len(columns)) if i not in shown]
    return table, left_out


def render_console(report: BenchReport, console: Any) -> None:
    """Print the header, the latency table and (with data) the accuracy tables with rich.

    Each table keeps to the columns that fit the terminal (80-120 columns and up; all columns are in
    the JSON / Markdown), never cutting a number or a name; notes, skip reasons and flags are
    numbered and printed below the tables.
    """
    from rich.console import Console

    if not console.is_terminal:  # a pipe or log has no width of its own
        console = Console(file=console.file, width=max(console.width, 120), highlight=False)

    for i, line in enumerate(header_lines(report)):
        header_style = "bold yellow" if report.random_weights and i == 0 else "dim"
        console.print(line, style=header_style, markup=False, highlight=False)
    footnotes: list[str] = []

    def mark(name: str, text: str) -> str:
        if not text:
            return ""
        footnotes.append(f"[{len(footnotes) + 1}] {name}: {text}")
        return f"[{len(footnotes)}]"

    def show(
        title: str, spec: Sequence[tuple[ConsoleColumn, int]], rows: list[tuple[list[str], str | None]]
    ) -> None:
        table, left_out = fit_table(console, title, [c for c, _ in spec], rows)
        console.print(table)
        if left_out:
            console.print(
                f"not shown at {console.width} columns: {', '.join(left_out)} "
                "(all are in --json / --markdown)",
                style="dim",
                markup=False,
                highlight=False,
            )

    def pick(cells: list[str], spec: Sequence[tuple[ConsoleColumn, int]], note: str) -> list[str]:
        return [note if i < 0 else cells[i] for _, i in spec]

    latency: list[tuple[list[str], str | None]] = []
    style: str | None  # a row's colour: red (failed or NaN), dim (skipped), or none
    for row in report.latency:
        style = (
            "red" if row.nonfinite or row.status == "failed" else ("dim" if row.status == "skipped" else None)
        )
        latency.append((pick(latency_cells(row), LATENCY_CONSOLE, mark(row.name, what_label(row))), style))
    show("latency and agreement with the reference (sample clip)", LATENCY_CONSOLE, latency)
    if report.accuracy is not None:
        acc = [
            (
                pick(accuracy_cells(arow), ACCURACY_CONSOLE, mark(arow.name, what_label(arow))),
                "red" if arow.nonfinite or arow.status == "failed" else None,
            )
            for arow in report.accuracy
        ]
        show("PoseTrack mAP per joint group (poseval)", ACCURACY_CONSOLE, acc)
    if report.task_accuracy is not None:
        task: list[tuple[list[str], str | None]] = []
        for trow in report.task_accuracy:
            cells = task_cells(trow)
            style = "red" if trow.status == "failed" else None
            task.append((pick(cells, TASK_CONSOLE, mark(trow.name, cells[-1])), style))
        show(task_title(report.task_dataset or {}), TASK_CONSOLE, task)
    for line in footnotes:
        console.print(line, markup=False, highlight=False)
    for n in report.notes:
        console.print(f"note: {n}", markup=False, highlight=False)
