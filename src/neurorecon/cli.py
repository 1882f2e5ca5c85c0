"""The ``neurorecon`` command line: parse, call the API, print.

Heavy modules (numpy, scipy, matplotlib) are imported inside the commands so that the CLI
starts fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="neurorecon: check, fix and review neuron reconstructions.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"neurorecon: error: {message}", err=True)
    raise typer.Exit(code)


def _config(config: Optional[Path], sets: List[str], disable: List[str], only: List[str]):
    from .qc.config import ConfigError, load_config, parse_set_options

    try:
        return load_config(config, parse_set_options(sets), disable, only)
    except ConfigError as e:
        _fail(str(e))


SetOpt = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a threshold (see docs/checks.md); repeatable.")
ConfigOpt = typer.Option(None, "--config", help="TOML file with [thresholds], [severity] and disable = [...].")
DisableOpt = typer.Option([], "--disable", help="Check id to skip; repeatable.")
OnlyOpt = typer.Option([], "--only", help="Run only this check id; repeatable.")


@app.command()
def check(
    paths: List[str] = typer.Argument(..., help="SWC/ESWC files, folders or glob patterns."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report here."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write an HTML report per neuron into this folder."),
    fail_on: str = typer.Option("error", "--fail-on", help="Exit 1 if anything at or above this severity is found: error, warning or info."),
    jobs: int = typer.Option(1, "-j", "--jobs", min=1, help="Files checked in parallel."),
    config: Optional[Path] = ConfigOpt,
    sets: List[str] = SetOpt,
    disable: List[str] = DisableOpt,
    only: List[str] = OnlyOpt,
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the summary table."),
    max_rows: int = typer.Option(15, "--max-rows", help="Findings shown per file in the terminal."),
) -> None:
    """Check reconstructions for structural, geometric, type and radius errors.

    Exit code 0: nothing at or above --fail-on; 1: something was found (or a file was unreadable);
    2: usage error.
    """
    from .qc.findings import Severity
    from .qc.run import PathError, expand_paths

    try:
        level = Severity.parse(fail_on)
    except ValueError as e:
        _fail(str(e))
    cfg = _config(config, sets, disable, only)
    try:
        files = expand_paths(paths)
    except PathError as e:
        _fail(str(e))
    reports = _run_checks(files, cfg, jobs)

    from rich.console import Console

    from .qc.report import exit_code, print_reports, write_json

    console = Console(soft_wrap=False)
    print_reports(reports, console, max_rows=max_rows, details=not quiet)
    if json_out:
        write_json(reports, json_out)
        console.print(f"JSON report: {json_out}")
    if html_out:
        from .qc.html import write_html

        console.print(f"HTML report: {write_html(reports, html_out)}")
    raise typer.Exit(exit_code(reports, level))


def _run_checks(files, cfg, jobs):
    from .qc.run import check_paths

    if len(files) == 1:
        return check_paths(files, cfg)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True, console=_stderr_console()) as bar:
        task = bar.add_task("check", total=len(files))
        return check_paths(files, cfg, jobs=jobs, on_done=lambda _: bar.advance(task))


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@app.command()
def fix(
    src: Path = typer.Argument(..., help="SWC/ESWC file to fix."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Fixed SWC; the edit log and .apo markers go beside it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; write nothing."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow replacing existing outputs (or the input, if -o names it)."),
    config: Optional[Path] = ConfigOpt,
    sets: List[str] = SetOpt,
    disable: List[str] = DisableOpt,
) -> None:
    """Apply conservative fixes and log every edit (JSON log + Vaa3D .apo markers)."""
    from .io.swc import SwcParseError
    from .qc.fixes import FixError, fix_file

    if out is None and not dry_run:
        _fail("give -o/--out FILE (or --dry-run)")
    if not src.is_file():
        _fail(f"{src}: no such file")
    cfg = _config(config, sets, disable, [])
    try:
        result, paths = fix_file(src, out or src, cfg, dry_run=dry_run, overwrite=overwrite)
    except (FixError, SwcParseError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or src}: {e.strerror or e}", 1)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"{'planned' if dry_run else 'applied'} edits: {src}", title_justify="left")
    for col in ("#", "action", "check", "nodes", "why"):
        t.add_column(col, overflow="fold")
    for k, e in enumerate(result.edits, start=1):
        t.add_row(str(k), e.action, e.check, ", ".join(map(str, e.node_ids[:4])), e.why)
    console.print(t if result.edits else "nothing to fix")
    if not result.converged:
        console.print("[yellow]stopped after the maximum number of passes; re-check the output[/]")
    if not dry_run:
        console.print(f"fixed SWC: {paths.swc}\nedit log: {paths.log}\nreview markers: {paths.apo}")


@app.command("checks")
def list_checks() -> None:
    """List the check ids with their default severity."""
    from .qc.checks import CHECKS

    for spec in CHECKS.values():
        typer.echo(f"{spec.id:22s} {str(spec.severity):8s} {'fix ' if spec.fixable else '    '}{spec.summary}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
