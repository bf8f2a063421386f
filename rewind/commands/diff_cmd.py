"""``rewind diff DIR_A DIR_B``: what differs between two state directories, row by row.

Exit codes follow ``diff(1)``: 0 identical, 1 different (a finding, not a failure), 2 trouble (bad
usage, not a state directory, different topics, damaged data).

Register in ``rewind/cli.py`` with ``cli.add_command(diff_cmd.diff)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import click

from replayer.diff import ADDED, CHANGED, REMOVED, RowChange, StateDiff, StoreDiff, diff_states
from rewind.commands.context import echo_json, json_option

_COUNT_ONLY: Final = frozenset({"fills", "anomalies"})
"""Tables shown as counts in text (their rows repeat what orders and `state anomalies` show)."""
_MARK: Final = {ADDED: "+", REMOVED: "-", CHANGED: "~"}


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _row_text(row: dict[str, Any] | None) -> str:
    return "" if row is None else " ".join(f"{name}={_text(value)}" for name, value in row.items())


def _change_line(change: RowChange) -> str:
    mark = _MARK[change.kind]
    if change.kind == CHANGED:
        fields = "; ".join(
            f"{name}: {_text(old)} -> {_text(new)}" for name, (old, new) in change.fields.items()
        )
        return f"    {mark} {change.key}  {fields}"
    return f"    {mark} {change.key}  {_row_text(change.new if change.kind == ADDED else change.old)}"


def _print_store(store: StoreDiff) -> None:
    if store.identical:
        click.echo(f"{store.name}: identical")
        return
    if store.digest_a is None:
        click.echo(f"{store.name}: only in B (offset {store.offset_b})")
    elif store.digest_b is None:
        click.echo(f"{store.name}: only in A (offset {store.offset_a})")
    else:
        click.echo(f"{store.name}: offset {store.offset_a} -> {store.offset_b}")
    for table in store.tables:
        if not table.differs:
            continue
        counts = f"{table.added} added, {table.removed} removed, {table.changed} changed"
        click.echo(f"  {table.table}: {table.rows_a} -> {table.rows_b} rows ({counts})")
        if table.table in _COUNT_ONLY:
            continue
        for change in table.changes:
            click.echo(_change_line(change))
        if table.truncated:
            more = table.added + table.removed + table.changed - len(table.changes)
            click.echo(f"    ... and {more} more (raise --max-rows, or 0 for all)")


def _print(result: StateDiff) -> None:
    if result.identical:
        click.echo(f"identical: digest {result.digest_a}")
        return
    for store in result.stores:
        _print_store(store)
    differing = sum(1 for store in result.stores if not store.identical)
    click.echo(
        f"differ: {differing} of {len(result.stores)} stores "
        f"(digest A {result.digest_a}, digest B {result.digest_b})"
    )


@click.command()
@click.argument("dir_a", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dir_b", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--max-rows",
    type=click.IntRange(0),
    default=100,
    show_default=True,
    help="Most changed rows listed per table (counts stay exact); 0 lists all.",
)
@json_option
@click.pass_context
def diff(ctx: click.Context, dir_a: Path, dir_b: Path, max_rows: int, as_json: bool) -> None:
    """Compare two state directories (live, recovered, replayed): per partition and table, the rows
    added, removed and changed (old -> new, exact decimals).

    Exits 0 when identical, 1 when they differ, 2 on trouble (like diff(1)).
    """
    result = diff_states(dir_a, dir_b, limit=max_rows or None)
    if as_json:
        echo_json(result.as_dict())
    else:
        _print(result)
    ctx.exit(0 if result.identical else 1)
