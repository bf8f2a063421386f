"""Commands that put events on Kafka: ``rewind simulate``, ``rewind config set``, ``rewind position adjust``.

Every event goes through its builder (so a refused value is named) and the idempotent
:class:`EventProducer`. ``config set`` and ``position adjust`` use ``emit``: when they print the offset,
the event is durable. A value the contract refuses exits 1 with the field named; missing or
conflicting options exit 2 (click's usage errors).

``rewind/cli.py`` names ``simulate`` and ``position``; ``config set`` is named by the ``config`` group
in ``topics_cmd``.
"""

from __future__ import annotations

import datetime
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from producers import builders
from producers.builders import now_micros
from producers.config_versions import read_config_topic
from producers.event_producer import EventProducer
from producers.fixed_point import format_decimal, parse_decimal
from producers.simulator import SimulationParams, run_simulation
from rewind.commands.context import echo_json, json_option, settings_from
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_ONE_MICROSECOND = datetime.timedelta(microseconds=1)
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _operator() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return "operator:" + ("".join(user.split()) or "unknown")


def _producer(settings: Settings) -> EventProducer:
    return EventProducer(
        settings.client_config(), events_topic=settings.events_topic, config_topic=settings.config_topic
    )


@contextmanager
def _refusals(fix: str) -> Iterator[None]:
    """Turn a contract violation (``ValueError`` naming the field) into a clean exit 1."""
    try:
        yield
    except ValueError as exc:
        raise RewindError(str(exc), fix) from exc


def parse_start_time(text: str) -> int:
    """Microseconds since the epoch from an integer or an ISO 8601 time with a zone (``...Z``)."""
    cleaned = text.strip().replace("_", "")
    if cleaned.lstrip("-").isdigit():
        return int(cleaned)
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--start-time must be microseconds since the epoch or an ISO 8601 time like "
            f"2026-01-02T14:30:00Z, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"--start-time {text!r} has no time zone; add Z (UTC) or an offset like +01:00")
    return (moment - _EPOCH) // _ONE_MICROSECOND


def parse_config_value(text: str, value_type: str) -> bool | int | str:
    """The typed value of ``rewind config set KEY VALUE``; ValueError names VALUE and the type."""
    if value_type == "BOOLEAN":
        lowered = text.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ValueError(f"VALUE must be true or false for a boolean, got {text!r}")
    if value_type == "INTEGER":
        cleaned = text.strip().replace("_", "")
        if not cleaned.lstrip("+-").isdigit():
            raise ValueError(f"VALUE must be a whole number for an integer, got {text!r}")
        return int(cleaned)
    if value_type == "DECIMAL":
        return parse_decimal(text, field="VALUE")
    return text


def _show_value(value_type: str, value: bool | int | str) -> str:
    if value_type == "DECIMAL" and isinstance(value, int):
        return format_decimal(value)
    if value_type == "BOOLEAN":
        return "true" if value else "false"
    return str(value)


@click.command()
@click.option("--events", "events", type=click.IntRange(1), required=True, help="How many events to produce.")
@click.option("--accounts", type=click.IntRange(1, 100_000), default=10, show_default=True, help="Accounts.")
@click.option("--symbols", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Symbols.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Events per second (default: max).")
@click.option(
    "--start-time",
    metavar="T",
    help="Simulated clock start: microseconds since the epoch or ISO 8601 (default: now).",
)
@click.option(
    "--anomaly-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of deliberate anomalies (duplicate fills/orders, unknown-order fills, overfills).",
)
@json_option
@click.pass_context
def simulate(
    ctx: click.Context,
    events: int,
    accounts: int,
    symbols: int,
    seed: int,
    rate: float | None,
    start_time: str | None,
    anomaly_rate: float,
    as_json: bool,
) -> None:
    """Produce a simulated trading day: orders, fills, cancels, balances, config changes.

    The same --seed and --start-time always produce the same events (event ids included), so a run
    can be reproduced exactly; --rate only paces the sending.
    """
    settings = settings_from(ctx)
    with _refusals("pass --start-time as microseconds since the epoch or e.g. 2026-01-02T14:30:00Z"):
        start = parse_start_time(start_time) if start_time is not None else now_micros()
        params = SimulationParams(
            events=events,
            accounts=accounts,
            symbols=symbols,
            seed=seed,
            start_time=start,
            anomaly_rate=anomaly_rate,
        )
    versions = read_config_topic(settings.client_config(), settings.config_topic)
    producer = _producer(settings)
    bar_stream = sys.stderr
    with click.progressbar(
        length=events, label="simulating", file=bar_stream, show_pos=True, hidden=as_json
    ) as bar:
        summary = run_simulation(
            params,
            producer,
            rate=rate,
            progress=lambda sent: bar.update(sent - bar.pos),
            progress_every=max(1, min(1000, events // 100)),
            config_versions={key: entry.version for key, entry in versions.entries.items()},
        )
    document: dict[str, Any] = summary.as_dict() | {
        "seed": seed,
        "start_time": start,
        "accounts": accounts,
        "symbols": symbols,
        "anomaly_rate": anomaly_rate,
    }
    if as_json:
        echo_json(document)
        return
    per_second = document["events_per_second"]
    click.echo(
        f"produced {summary.events} events in {summary.seconds:.1f} s"
        + (f" ({per_second:,} events/s)" if per_second else "")
    )
    for name, count in document["by_type"].items():
        click.echo(f"  {name:<18} {count:>9,}")
    for topic, partitions in document["last_offsets"].items():
        shown = ", ".join(f"{p}:{o}" for p, o in partitions.items())
        click.echo(f"last offsets {topic}: {shown}")
    click.echo(f"reproduce with: rewind simulate --events {events} --seed {seed} --start-time {start}")


@click.command("set")
@click.argument("key")
@click.argument("value")
@click.option(
    "--type",
    "value_type",
    type=click.Choice(["boolean", "integer", "decimal", "string"], case_sensitive=False),
    help="Type of VALUE (default: the key's current type, or string for a new key).",
)
@click.option("--by", "changed_by", metavar="WHO", help="Who makes the change (default: operator:$USER).")
@json_option
@click.pass_context
def config_set(
    ctx: click.Context, key: str, value: str, value_type: str | None, changed_by: str | None, as_json: bool
) -> None:
    """Set a desk-wide config KEY to VALUE (emits ConfigChanged; durable when it returns).

    The version is the highest version of KEY on the config topic plus one. For a negative VALUE put
    ``--`` before it: ``rewind config set risk.offset -- -5 --type integer``.
    """
    settings = settings_from(ctx)
    snapshot = read_config_topic(settings.client_config(), settings.config_topic)
    existing = snapshot.entries.get(key)
    kind = value_type.upper() if value_type else (existing.value_type if existing else "STRING")
    who = changed_by or _operator()
    with _refusals("check KEY, VALUE and --type, then run the command again"):
        typed = parse_config_value(value, kind)
        event = builders.config_changed(
            key=key,
            value_type=kind,
            value=typed,
            version=snapshot.next_version(key),
            changed_by=who,
            source=who,
        )
    partition, offset = _producer(settings).emit(event)
    result = {
        "key": key,
        "value": _show_value(kind, event["value"]),
        "value_type": kind,
        "version": event["version"],
        "previous": None if existing is None else _show_value(existing.value_type, existing.value),
        "event_id": event["event_id"],
        "topic": settings.config_topic,
        "partition": partition,
        "offset": offset,
    }
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"{key} = {result['value']} ({kind}, version {event['version']}) "
        f"-> {settings.config_topic}[{partition}] offset {offset}"
    )


@click.group()
def position() -> None:
    """Operator changes to positions (reconciliation, transfers, corporate actions)."""


@position.command()
@click.option("--account", required=True, help="The account, e.g. ACC-0001.")
@click.option("--symbol", required=True, help="The instrument, e.g. AAPL.")
@click.option("--qty", metavar="Q", help="SET the position to Q (signed decimal; 0 = flat).")
@click.option("--delta", metavar="D", help="Trade D (signed decimal) at --price, like a fill without fee.")
@click.option("--price", required=True, metavar="P", help="Average cost for --qty, trade price for --delta.")
@click.option(
    "--reason",
    required=True,
    type=click.Choice(builders.ADJUST_REASONS, case_sensitive=False),
    help="Why the position changes.",
)
@click.option("--by", "changed_by", metavar="WHO", help="Who makes the change (default: operator:$USER).")
@json_option
@click.pass_context
def adjust(
    ctx: click.Context,
    account: str,
    symbol: str,
    qty: str | None,
    delta: str | None,
    price: str,
    reason: str,
    changed_by: str | None,
    as_json: bool,
) -> None:
    """Set (--qty) or shift (--delta) a position (emits PositionAdjusted; durable when it returns)."""
    if (qty is None) == (delta is None):
        raise click.UsageError("give exactly one of --qty (set the position) or --delta (change it)")
    settings = settings_from(ctx)
    mode, amount, option = ("SET", qty, "--qty") if qty is not None else ("DELTA", delta, "--delta")
    assert amount is not None
    with _refusals("correct the value named above and run the command again"):
        event = builders.position_adjusted(
            account_id=account,
            symbol=symbol,
            mode=mode,
            quantity=parse_decimal(amount, field=option),
            price=parse_decimal(price, field="--price"),
            reason=reason.upper(),
            source=changed_by or _operator(),
        )
    partition, offset = _producer(settings).emit(event)
    result = {
        "account_id": account,
        "symbol": symbol,
        "mode": mode,
        "quantity": format_decimal(event["quantity"]),
        "price": format_decimal(event["price"]),
        "reason": event["reason"],
        "event_id": event["event_id"],
        "topic": settings.events_topic,
        "partition": partition,
        "offset": offset,
    }
    if as_json:
        echo_json(result)
        return
    verb = "set to" if mode == "SET" else "changed by"
    click.echo(
        f"{account} {symbol} position {verb} {result['quantity']} @ {result['price']} ({event['reason']}) "
        f"-> {settings.events_topic}[{partition}] offset {offset}"
    )
