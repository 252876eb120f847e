"""The ``casegraph`` command line. Each area registers its commands from its own module."""

from __future__ import annotations

import os
import sys

import typer

from casegraph import __version__
from casegraph.cli import (
    attach_cmds,
    demo_cmds,
    graph_cmds,
    query_cmds,
    simulate_cmds,
    store_cmds,
    train_cmds,
    version_cmds,
)

app = typer.Typer(
    name="casegraph",
    help="Patient similarity for cancer research: ingest cohorts, train multimodal survival "
    "models, explore the case graph, query with a WSI alone.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"casegraph {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    if debug:
        os.environ["CASEGRAPH_DEBUG"] = "1"


for _module in (store_cmds, simulate_cmds, demo_cmds, train_cmds, graph_cmds, query_cmds,
                attach_cmds, version_cmds):
    _module.register(app)


def main() -> None:
    """Entry point: user-facing errors become one readable line and a non-zero exit."""
    from casegraph.errors import CasegraphError

    debug = "--debug" in sys.argv or bool(os.environ.get("CASEGRAPH_DEBUG"))
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (CasegraphError, OSError, ValueError) as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors (typer ships its own click) and the rest
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if exc.__class__.__name__ == "Abort":
            sys.exit(1)
        if debug:
            raise
        typer.echo(f"error: {exc.__class__.__name__}: {exc} (run with --debug for the trace)",
                   err=True)
        sys.exit(1)
