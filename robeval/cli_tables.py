"""The tables the command line prints: accuracy pivots (``run``, ``transfer``) and the
registry listings of ``robeval ls``, each readable at 80 columns.

A pivot's key cells (model, attack) never wrap: where the table would not fit the
terminal, long keys are shown by their base name and a number, spelt out in full, one per
line, under the table.
"""

from __future__ import annotations

import math
import textwrap

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from robeval.listing import Entry

#: columns of a heavy-box table cost their content plus 3 (padding, border), plus 1 overall
_COLUMN_COST = 3


def _fit_keys(keys: list[tuple[str, ...]], headers: list[str], value_widths: list[int],
              width: int) -> tuple[list[tuple[str, ...]], list[str]]:
    """Shorten the longest values of the widest key column, one by one, until the table
    fits ``width``; returns the keys to show and the legend lines (``[1] full name``)."""
    def column_width(i: int, shown: list[tuple[str, ...]]) -> int:
        return max([cell_len(headers[i]), *(cell_len(k[i]) for k in shown)])

    fixed = sum(value_widths) + _COLUMN_COST * (len(headers) + len(value_widths)) + 1
    if not keys or fixed + sum(column_width(i, keys) for i in range(len(headers))) <= width:
        return keys, []
    column = max(range(len(headers)), key=lambda i: column_width(i, keys))
    labels: dict[str, str] = {}
    shown = keys
    for value in sorted({k[column] for k in keys}, key=cell_len, reverse=True):
        if cell_len(value) <= cell_len(f"{value.split(':', 1)[0]} [{len(labels) + 1}]"):
            break  # a label would be no shorter than the name itself
        labels[value] = f"{value.split(':', 1)[0]} [{len(labels) + 1}]"
        shown = [(*k[:column], labels.get(k[column], k[column]), *k[column + 1:]) for k in keys]
        if fixed + sum(column_width(i, shown) for i in range(len(headers))) <= width:
            break
    order = {value: i for i, value in enumerate(dict.fromkeys(k[column] for k in keys))}
    numbered = {value: n for n, value in enumerate(sorted(labels, key=order.__getitem__), start=1)}
    shown = [(*k[:column], f"{k[column].split(':', 1)[0]} [{numbered[k[column]]}]" if k[column] in numbered
              else k[column], *k[column + 1:]) for k in keys]
    return shown, [f"[{n}] {value}" for value, n in numbered.items()]


def print_pivot(console: Console, frame, *, title: str) -> None:  # noqa: ANN001 (a pandas DataFrame)
    """A pivot of accuracies (index: keys such as model and attack, columns: eps or
    models) in percent, NaN as an empty cell."""
    headers = [str(n) for n in frame.index.names]
    columns = [str(c) for c in frame.columns]
    keys = [tuple(map(str, k if isinstance(k, tuple) else (k,))) for k in frame.index]
    rows = [["" if math.isnan(v) else f"{100 * v:.1f}" for v in row.to_numpy(dtype=float)]
            for _, row in frame.iterrows()]
    value_widths = [max([cell_len(c), *(len(r[j]) for r in rows)]) for j, c in enumerate(columns)]
    keys, legend = _fit_keys(keys, headers, value_widths, console.width)
    table = Table(title=title)
    for name in headers:
        table.add_column(escape(name), justify="left", no_wrap=True)
    for name in columns:
        table.add_column(escape(name), justify="right", no_wrap=True)
    for key, row in zip(keys, rows, strict=True):
        table.add_row(*map(escape, key), *row)
    console.print(table)
    for line in legend:
        console.print(escape(line), highlight=False, soft_wrap=True)


def print_entries(console: Console, kind: str, entries: list[Entry]) -> None:
    """``robeval ls KIND``: name, then the summary and, on the next line, the parameters
    with their defaults (or how to write the entry)."""
    table = Table(title=kind, box=box.SIMPLE_HEAD, show_lines=False, pad_edge=False)
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("summary", overflow="fold")
    for item in entries:
        text = (f"[{', '.join(item.tags)}] " if item.tags else "") + item.summary
        extra = f"defaults: {' '.join(map(str, item.params))}" if item.params else (
            f"usage: {item.usage}" if item.usage else "")
        table.add_row(escape(item.name), escape(text) + (f"\n[dim]{escape(extra)}[/]" if extra else ""))
        table.add_section()
    console.print(table)
    singular = kind.rstrip("s")
    console.print(f"`robeval ls {kind} NAME` shows one {singular}'s whole description", highlight=False)


def _wrap(paragraph: str, width: int) -> str:
    """A docstring paragraph re-wrapped to ``width``: bullet items (``*``, ``-``) with a
    hanging indent; an indented literal block as written."""
    lines = paragraph.splitlines()
    if all(line.startswith((" ", "\t")) for line in lines):
        return textwrap.indent(textwrap.dedent(paragraph), "  ")
    items: list[tuple[str, list[str]]] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(("* ", "- ")) or not items:
            bullet = stripped[:2] if stripped.startswith(("* ", "- ")) else ""
            items.append((bullet, [stripped[len(bullet):]]))
        else:
            items[-1][1].append(stripped)
    return "\n".join(textwrap.fill(" ".join(" ".join(words).split()), width=width, initial_indent=bullet,
                                   subsequent_indent=" " * len(bullet), break_on_hyphens=False)
                     for bullet, words in items)


def print_entry(console: Console, item: Entry) -> None:
    """``robeval ls KIND NAME``: the whole description and a table of parameters."""
    width = max(40, min(console.width, 100))
    tags = f"  [{', '.join(item.tags)}]" if item.tags else ""
    console.print(f"[bold]{escape(item.name)}[/]{escape(tags)}", highlight=False)
    if item.usage:
        console.print(f"usage: {escape(item.usage)}", highlight=False, soft_wrap=True)
    for paragraph in item.details or (item.summary,):
        console.print()
        console.print(escape(_wrap(paragraph, width)), highlight=False, soft_wrap=True)
    if item.params:
        console.print()
        table = Table(title=None, box=box.SIMPLE_HEAD, pad_edge=False)
        for name in ("parameter", "default", "values"):
            table.add_column(name, no_wrap=name != "values")
        for param in item.params:
            table.add_row(escape(param.name), escape(param.default), escape(param.kind))
        console.print(table)
