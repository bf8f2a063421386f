"""``rewind history``: every event that touched an order or an account, with its state after each one.

Register in ``rewind/cli.py`` with ``cli.add_command(history_cmd.history)``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from replayer.history import History, HistoryRow, Target
from replayer.history import history as build_history
from replayer.timetravel import parse_time
from rewind.commands.context import echo_json, json_option, settings_from
from rewind.ground.errors import RewindError
from snapshotter.snapshot_store import rejection_line


class TimeParam(click.ParamType):
    """An ISO-8601 time (UTC when it has no zone); a malformed one is a usage error (exit 2)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value))
        except RewindError:
            self.fail(f"'{value}' is not an ISO-8601 time (e.g. 2026-11-21T14:03:00Z)", param, ctx)


def _order_line(order: dict[str, Any]) -> str:
    average = order["average_fill_price"] or "-"
    return (
        f"order {order['status']} filled {order['filled']}/{order['quantity']} leaves {order['leaves']} "
        f"avg {average} limit {order['limit_price'] or 'MARKET'}"
    )


def _account_lines(state: dict[str, Any]) -> list[str]:
    lines = []
    position = state.get("position")
    if "position" in state:
        if position is None:
            lines.append("position none")
        else:
            lines.append(
                f"position {position['quantity']} @ avg {position['average_cost'] or '-'} "
                f"realized {position['realized_pnl']} fees {position['fees']} last {position['last_price']}"
            )
    risk = state["risk"]
    if risk is not None:
        lines.append(
            f"risk gross {risk['gross_exposure']} net {risk['net_exposure']} realized {risk['realized_pnl']} "
            f"open {risk['open_order_notional']} fees {risk['fees']}"
        )
    if state["balances"]:
        lines.append("balances " + " ".join(f"{b['currency']}={b['amount']}" for b in state["balances"]))
    return lines


def _print_row(row: HistoryRow) -> None:
    data = row.as_dict()
    fields = " ".join(f"{name}={value}" for name, value in row.fields.items())
    click.echo(
        f"p{row.partition}@{row.offset}  logged {data['logged_at']}  occurred {data['occurred_at']}  "
        f"{row.event_type}  {fields}  (source {row.source})"
    )
    if row.anomaly is not None:
        benign = " (benign)" if row.anomaly["benign"] else ""
        click.secho(f"    ! ANOMALY {row.anomaly['kind']}{benign}: {row.anomaly['detail']}", fg="red")
    if "order" in row.state:
        order = row.state["order"]
        click.echo("    -> " + ("order none" if order is None else _order_line(order)))
    else:
        for line in _account_lines(row.state):
            click.echo("    -> " + line)


def _print_history(found: History) -> None:
    start = (
        "the log start" if found.snapshot_offset is None else f"verified snapshot @{found.snapshot_offset}"
    )
    for reason in found.rejected_snapshots:
        click.secho(rejection_line(reason), fg="yellow", err=True)
    click.echo(
        f"history of {found.target.describe()}: partition {found.partition} (found by "
        f"{found.partition_source}); offsets {found.first_offset}-{found.end_offset - 1}; "
        f"replayed {found.replayed} events from {start}"
    )
    if found.undecodable:
        click.echo(f"({found.undecodable} undecodable records skipped: see the dead-letter topic)")
    if not found.rows:
        click.echo("(no events touched it in this window)")
    for row in found.rows:
        _print_row(row)
    anomalies = sum(1 for row in found.rows if row.anomaly is not None)
    click.echo(f"{len(found.rows)} events, {anomalies} anomalies")


@click.command()
@click.option("--order", "order_id", metavar="ID", help="The order's history.")
@click.option("--account", "account_id", metavar="A", help="The account's history.")
@click.option("--symbol", metavar="S", help="With --account: only events on this symbol, with the position.")
@click.option(
    "--from", "since", type=TimeParam(), help="Only events logged at or after TIME (ISO-8601, UTC)."
)
@click.option("--to", "until", type=TimeParam(), help="Only events logged at or before TIME (ISO-8601, UTC).")
@click.option(
    "--state", "state_dir", metavar="DIR", help="State directory to look the order up in (default: live)."
)
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
@json_option
@click.pass_context
def history(
    ctx: click.Context,
    order_id: str | None,
    account_id: str | None,
    symbol: str | None,
    since: datetime | None,
    until: datetime | None,
    state_dir: str | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """The post-mortem view: every event that touched an order or an account, oldest first, with the
    partition, offset, times, fields, anomalies, and the state right after each event.

    Replays the entity's partition with the projector's fold from the newest verified snapshot at or
    before --from (without --from: from the log start). Live state is never changed.
    """
    if (order_id is None) == (account_id is None):
        raise click.UsageError("give exactly one of --order ID or --account A")
    if symbol is not None and account_id is None:
        raise click.UsageError("--symbol narrows an account's history: use it with --account")
    if since is not None and until is not None and since > until:
        raise click.UsageError(f"--from {since.isoformat()} is after --to {until.isoformat()}")
    settings = settings_from(ctx)
    target = Target(order_id=order_id, account_id=account_id, symbol=symbol)
    lookup = None if state_dir is None else Path(state_dir)
    stderr = click.get_text_stream("stderr")
    if no_progress or as_json or not stderr.isatty():
        found = build_history(settings, target, since, until, lookup_dir=lookup)
    else:
        with click.progressbar(length=1, label="replaying", show_pos=True, file=stderr) as bar:

            def progress(phase: str, done: int, total: int) -> None:
                bar.label = "finding the order" if phase == "scan" else "replaying"
                if bar.length != max(1, total) or done < bar.pos:
                    bar.length = max(1, total)
                    bar.pos = 0
                bar.update(done - bar.pos)

            found = build_history(settings, target, since, until, lookup_dir=lookup, progress=progress)
    if as_json:
        echo_json(found.as_dict())
    else:
        _print_history(found)
