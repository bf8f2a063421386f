"""``rewind recovery history``: every recovery and rebuild of this home, newest first.

A group of its own rather than a subcommand of ``rewind recover``, which is a command taking options:
``rewind recover`` stays exactly as it is.
"""

from __future__ import annotations

import click

from replayer.recovery_history import MAX_RECORDS, format_table
from replayer.recovery_history_file import history_path, read_history
from rewind.commands.context import echo_json, json_option, settings_from


@click.group()
def recovery() -> None:
    """What past recoveries did: why each ran, how long, what it rejected, how it ended."""


@recovery.command("history")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_RECORDS),
    default=MAX_RECORDS,
    show_default=True,
    help="Show at most this many records.",
)
@json_option
@click.pass_context
def history(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Recoveries and rebuilds, newest first (the last 100 are kept in $REWIND_HOME/recovery-history.jsonl).

    Reasons: operator_request (POST /rebuild or `rewind recover`), corruption (a damaged row or a
    snapshot that failed verification), unclean_shutdown (no clean stop before), clean_restart.
    """
    settings = settings_from(ctx)
    path = history_path(settings)
    records, warnings = read_history(path, limit)
    for warning in warnings:
        click.secho(f"warning: {warning} ({path})", fg="yellow", err=True)
    if as_json:
        echo_json({"history": records, "damaged_lines": len(warnings), "path": str(path)})
        return
    click.echo(format_table(records))
