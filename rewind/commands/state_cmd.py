"""``rewind state ...``: read projected state from any state directory (live, recovered or replayed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from projector import queries, views
from projector.risk_view import risk_rows
from projector.state_directory import StateDirectory
from rewind.commands.context import echo_json, json_option, settings_from


def _open(ctx: click.Context, state_dir: str | None) -> StateDirectory:
    settings = settings_from(ctx, **{"state.dir": state_dir})
    return StateDirectory.open_readonly(Path(settings.state_dir))


def state_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--state", "state_dir", metavar="DIR", help="State directory to read (default: live state)."
    )(func)


def _print_rows(rows: list[dict[str, Any]], as_json: bool, columns: list[str]) -> None:
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


@click.group()
def state() -> None:
    """Read the projected state: positions, orders, balances, risk, config, anomalies, digest."""


@state.command()
@click.option("--account", help="Only this account.")
@click.option("--symbol", help="Only this symbol.")
@state_option
@json_option
@click.pass_context
def positions(
    ctx: click.Context, account: str | None, symbol: str | None, state_dir: str | None, as_json: bool
) -> None:
    """Positions per (account, symbol): quantity, average cost, realized P&L, fees."""
    with _open(ctx, state_dir) as directory:
        rows = [views.to_dict(p) for p in queries.positions(directory, account, symbol)]
    _print_rows(rows, as_json, ["account_id", "symbol", "quantity", "average_cost", "realized_pnl", "fees"])


@state.command()
@click.option("--account", help="Only this account.")
@click.option("--symbol", help="Only this symbol.")
@state_option
@json_option
@click.pass_context
def orders(
    ctx: click.Context, account: str | None, symbol: str | None, state_dir: str | None, as_json: bool
) -> None:
    """Orders with status, filled and leaves quantity, average fill price."""
    with _open(ctx, state_dir) as directory:
        rows = [views.to_dict(o) for o in queries.orders(directory, account, symbol)]
    _print_rows(
        rows, as_json, ["order_id", "account_id", "symbol", "side", "status", "quantity", "filled", "leaves"]
    )


@state.command()
@click.option("--account", help="Only this account.")
@state_option
@json_option
@click.pass_context
def balances(ctx: click.Context, account: str | None, state_dir: str | None, as_json: bool) -> None:
    """Balances per (account, currency)."""
    with _open(ctx, state_dir) as directory:
        rows = [views.to_dict(b) for b in queries.balances(directory, account)]
    _print_rows(rows, as_json, ["account_id", "currency", "amount"])


@state.command()
@click.option("--account", help="Only this account.")
@state_option
@json_option
@click.pass_context
def risk(ctx: click.Context, account: str | None, state_dir: str | None, as_json: bool) -> None:
    """Risk per account: exposures, realized P&L, open-order notional, and limit usage from config."""
    with _open(ctx, state_dir) as directory:
        rows = risk_rows(directory, account)
    _print_rows(
        rows,
        as_json,
        [
            "account_id",
            "gross_exposure",
            "net_exposure",
            "realized_pnl",
            "open_order_notional",
            "gross_limit_usage_percent",
        ],
    )


@state.command("config")
@state_option
@json_option
@click.pass_context
def config_cmd(ctx: click.Context, state_dir: str | None, as_json: bool) -> None:
    """Desk-wide configuration: current value and version per key."""
    with _open(ctx, state_dir) as directory:
        rows = [views.to_dict(c) for c in queries.config_entries(directory)]
    _print_rows(rows, as_json, ["key", "value_type", "value", "version", "changed_by"])


@state.command()
@state_option
@json_option
@click.pass_context
def anomalies(ctx: click.Context, state_dir: str | None, as_json: bool) -> None:
    """Events that could not apply, with partition, offset, kind and detail."""
    with _open(ctx, state_dir) as directory:
        rows = [views.to_dict(a) for _store, a in queries.anomalies(directory)]
    _print_rows(rows, as_json, ["partition", "offset", "event_type", "kind", "detail"])


@state.command()
@click.argument("entity", type=click.Choice(["order"]))
@click.argument("entity_id")
@state_option
@json_option
@click.pass_context
def get(ctx: click.Context, entity: str, entity_id: str, state_dir: str | None, as_json: bool) -> None:
    """One entity by id, e.g. `rewind state get order O-123`. Exits 1 when it does not exist."""
    with _open(ctx, state_dir) as directory:
        found = queries.order(directory, entity_id)
    if found is None:
        click.echo(f"error: no {entity} {entity_id} in the state", err=True)
        ctx.exit(1)
    assert found is not None
    row = views.to_dict(found)
    if as_json:
        echo_json(row)
    else:
        for key, value in row.items():
            click.echo(f"{key}: {value}")


@state.command()
@click.option("--partition", type=click.IntRange(0), help="Only this events partition.")
@state_option
@json_option
@click.pass_context
def digest(ctx: click.Context, partition: int | None, state_dir: str | None, as_json: bool) -> None:
    """A canonical xxh3-128 of the logical state: equal state, equal digest, however it was built."""
    with _open(ctx, state_dir) as directory:
        if partition is not None:
            store = directory.partition(partition)
            document: dict[str, Any] = {
                "digest": store.digest(),
                "partition": partition,
                "offset": store.offset(),
                "events_applied": store.events_applied(),
            }
        else:
            stores = {}
            for name, store_digest in directory.digests().items():
                store = directory.store(name)
                stores[name] = {
                    "digest": store_digest,
                    "offset": store.offset(),
                    "events_applied": store.events_applied(),
                }
            document = {"digest": directory.digest(), "stores": stores}
    if as_json:
        echo_json(document)
    else:
        click.echo(document["digest"])
