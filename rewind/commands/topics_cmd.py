"""``rewind topics ...`` and ``rewind config show``: topics and the effective configuration."""

from __future__ import annotations

import click
from confluent_kafka.admin import AdminClient

from rewind.commands.context import echo_json, json_option, settings_from
from rewind.commands.lazy_group import LazyGroup
from rewind.ground.topics import desired_topics, ensure_topics


@click.group()
def topics() -> None:
    """Create and inspect rewind's Kafka topics."""


@topics.command()
@click.option("--partitions", type=click.IntRange(1, 10_000), help="Partitions of the events topic.")
@click.option("--replication-factor", type=click.IntRange(1, 100), help="Replication factor of every topic.")
@json_option
@click.pass_context
def create(ctx: click.Context, partitions: int | None, replication_factor: int | None, as_json: bool) -> None:
    """Create the events, config and dead-letter topics (idempotent; never alters an existing topic)."""
    settings = settings_from(
        ctx, **{"topics.partitions": partitions, "topics.replication_factor": replication_factor}
    )
    admin = AdminClient(settings.client_config())
    outcomes = ensure_topics(admin, desired_topics(settings), timeout=float(settings["broker.wait_seconds"]))
    if as_json:
        echo_json([{"topic": o.name, "action": o.action, "differences": o.differences} for o in outcomes])
        return
    for outcome in outcomes:
        click.echo(f"{outcome.name}: {outcome.action}")
        for difference in outcome.differences:
            click.secho(f"  warning: {difference} (left unchanged)", fg="yellow", err=True)


@topics.command("list")
@json_option
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the topics on the cluster with their partition counts."""
    settings = settings_from(ctx)
    wait = float(settings["broker.wait_seconds"])
    metadata = AdminClient(settings.client_config()).list_topics(timeout=wait)
    rows = {
        name: len(t.partitions) for name, t in sorted(metadata.topics.items()) if not name.startswith("__")
    }
    if as_json:
        echo_json(rows)
    else:
        for name, count in rows.items():
            click.echo(f"{name}\t{count}")


@click.group(cls=LazyGroup, lazy={"set": "rewind.commands.events_cmd:config_set"})
def config() -> None:
    """Show the effective configuration, or change a desk-wide config value."""


@config.command()
@json_option
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective configuration and where each value came from (secrets masked)."""
    settings = settings_from(ctx)
    shown = settings.masked()
    if as_json:
        echo_json(shown)
        return
    click.echo(f"# config file: {settings.config_file or '(none)'}")
    for key, entry in shown.items():
        assert isinstance(entry, dict)
        click.echo(f"{key} = {entry['value']!r}    # {entry['source']}")
