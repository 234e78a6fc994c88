"""How the CLI prints: tables with headers (rich), or the same documents as JSON or YAML, chosen
with `-o table|wide|json|yaml`; `--watch` prints again on every change."""

import io
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from ruamel.yaml import YAML

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "wide", "json", "yaml")


def output_option(default: str) -> Callable[[F], F]:
    return click.option("-o", "--output", "output", type=click.Choice(FORMATS),
                        default=default, show_default=True,
                        help="table (with headers), wide (more columns), json or yaml")


watch_option = click.option("--watch", "watch_", is_flag=True,
                            help="keep printing on every change, until Ctrl-C")


def _render(t: Table) -> str:
    # not a terminal (a pipe, a file): never wrap or cut a row
    width = None if sys.stdout.isatty() else 1000
    console = Console(file=io.StringIO(), width=width, highlight=False, color_system=None)
    with console.capture() as captured:
        console.print(t)
    return "".join(line.rstrip() + "\n" for line in captured.get().splitlines())


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """kubectl-like columns: upper-case headers, no borders; '-' for an empty cell."""
    t = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False)
    for h in headers:
        t.add_column(h, no_wrap=True, overflow="ignore")
    for row in rows:
        t.add_row(*("-" if cell in (None, "") else str(cell) for cell in row))
    sys.stdout.write(_render(t))
    sys.stdout.flush()


def dump(document: Any, fmt: str) -> None:
    """A document (or a list of them) as indented JSON or as YAML."""
    if fmt == "yaml":
        stream = io.StringIO()
        yaml = YAML()  # round-trip mode: keys in the document's order, as the JSON
        yaml.default_flow_style = False
        yaml.dump(document, stream)
        sys.stdout.write(stream.getvalue())
    else:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def watch_line(document: Any, fmt: str) -> None:
    """One change under --watch: a JSON line, or a YAML document after `---`."""
    if fmt == "yaml":
        sys.stdout.write("---\n")
        dump(document, "yaml")
    else:
        sys.stdout.write(json.dumps(document) + "\n")
        sys.stdout.flush()
