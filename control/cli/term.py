"""Terminal output for meshctl's live views: rich tables and colours on a terminal, plain text elsewhere.

On a TTY, `rich` draws the table (and `LiveTable` redraws it in place for `--watch`); when stdout is a pipe or a
file, the same rows are printed in istioctl's tabwriter layout (control.cli.proxy.table) with no ANSI codes, so
scripts and tests read them as they read `meshctl proxy-status`.
"""
from __future__ import annotations

from typing import Any, Sequence, TextIO

from control.cli.proxy import table


def is_tty(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def _console(out: TextIO, min_width: int = 0) -> Any:
    """A rich console on `out`, at least `min_width` wide: a table wider than the terminal wraps rather than
    losing its cells to rich's ellipsis."""
    from rich.console import Console

    console = Console(file=out, force_terminal=True, highlight=False, soft_wrap=True)
    if console.width < min_width:
        console = Console(file=out, force_terminal=True, highlight=False, soft_wrap=True, width=min_width)
    return console


def table_width(header: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    return sum(widths) + 2 * (len(widths) - 1)


def rich_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> Any:
    from rich.table import Table

    t = Table(title=title or None, box=None, header_style="bold", pad_edge=False)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i < 2 else "right", no_wrap=True)
    for r in rows:
        t.add_row(*r)
    return t


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO, title: str = "") -> None:
    if is_tty(out):
        _console(out, table_width(header, rows)).print(rich_table(header, rows, title))
        return
    if title:
        print(title, file=out)
    print(table(header, rows), end="", file=out, flush=True)


WATCH_WIDTH = 140  # a stat table's usual width (its cells change between frames)


class LiveTable:
    """`--watch`: a table redrawn in place on a terminal (rich.live.Live); elsewhere each frame is printed
    after the last, separated by a blank line."""

    def __init__(self, out: TextIO):
        self.out = out
        self.live: Any = None
        self.frames = 0

    def __enter__(self) -> "LiveTable":
        if is_tty(self.out):
            from rich.live import Live

            self.live = Live(console=_console(self.out, WATCH_WIDTH), auto_refresh=False)
            self.live.__enter__()
        return self

    def update(self, header: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> None:
        if self.live is not None:
            self.live.update(rich_table(header, rows, title), refresh=True)
        else:
            if self.frames:
                print(file=self.out)
            print_table(header, rows, self.out, title)
        self.frames += 1

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)


def status_style(status: int) -> str:
    if status == 0 or status >= 500:
        return "red"
    if status >= 400:
        return "yellow"
    return "green"


def print_styled(parts: Sequence[tuple[str, str]], out: TextIO) -> None:
    """One line from (text, rich style) pieces: coloured on a terminal, plain text otherwise (no markup is
    interpreted: a path with brackets prints as it is)."""
    if not is_tty(out):
        print("".join(text for text, _ in parts), file=out, flush=True)
        return
    from rich.text import Text

    line = Text()
    for text, style in parts:
        line.append(text, style=style or None)
    _console(out).print(line)
