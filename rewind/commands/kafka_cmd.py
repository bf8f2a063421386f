"""``rewind kafka ...``: the local single-node broker for development, tests and ``make run``."""

from __future__ import annotations

import subprocess
import sys

import click

from rewind.commands.context import echo_json, json_option, settings_from
from rewind.kafka_local import KAFKA_VERSION, LocalKafka, fetch


def _broker(ctx: click.Context) -> LocalKafka:
    return LocalKafka(settings_from(ctx).home)


@click.group()
def kafka() -> None:
    """Run a local Apache Kafka broker (KRaft, one node) on the JDK."""


@kafka.command("fetch")
@click.option("--quiet", is_flag=True, help="Print nothing when the artifacts are already cached.")
def fetch_cmd(quiet: bool) -> None:
    """Fetch the Kafka broker jars from Maven Central into the cache (no-op when cached)."""
    libs = fetch(quiet=quiet)
    if not quiet:
        click.echo(f"Apache Kafka {KAFKA_VERSION}: {libs}")


@kafka.command()
@click.option("--port", type=click.IntRange(0, 65535), help="Listen on this port (default: a free one).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait until the broker answers.")
@json_option
@click.pass_context
def start(ctx: click.Context, port: int | None, timeout: float, as_json: bool) -> None:
    """Start the broker; returns once it answers a metadata request. No-op when it already runs."""
    broker = _broker(ctx)
    was_running = broker.pid() is not None
    status = broker.start(port=port, timeout=timeout)
    if as_json:
        echo_json(status.as_dict() | {"already_running": was_running})
        return
    verb = "already running" if was_running else "started"
    click.echo(f"Kafka {status.version} {verb} at {status.address} (pid {status.pid})")


@kafka.command()
@click.option(
    "--timeout", default=30.0, show_default=True, help="Seconds to wait after SIGTERM before SIGKILL."
)
@click.pass_context
def stop(ctx: click.Context, timeout: float) -> None:
    """Stop the broker gracefully (SIGTERM, wait, then SIGKILL)."""
    click.echo("stopped" if _broker(ctx).stop(timeout=timeout) else "not running")


@kafka.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show pid, address, Kafka version and data size. Exits 1 when the broker is not running."""
    report = _broker(ctx).status()
    if as_json:
        echo_json(report.as_dict())
    else:
        state = f"running, pid {report.pid}, at {report.address}" if report.running else "not running"
        click.echo(f"Kafka {report.version}: {state}")
        click.echo(f"data: {report.data_dir} ({report.data_bytes / 1e6:.1f} MB)")
    ctx.exit(0 if report.running else 1)


@kafka.command()
@click.option("-n", "--lines", default=50, show_default=True, help="How many lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.pass_context
def logs(ctx: click.Context, lines: int, follow: bool) -> None:
    """Print the broker's log."""
    broker = _broker(ctx)
    if follow:
        subprocess.run(["tail", "-n", str(lines), "-F", str(broker.log_file)], stdout=sys.stdout)
    else:
        click.echo(broker.tail(lines))


@kafka.command()
@click.option("--yes", is_flag=True, help="Really erase the broker's data.")
@click.pass_context
def reset(ctx: click.Context, yes: bool) -> None:
    """Erase the local broker's data (every topic and message). The broker must be stopped."""
    broker = _broker(ctx)
    if not yes:
        raise click.UsageError(f"this erases {broker.data}; add --yes to confirm")
    broker.reset()
    click.echo(f"erased {broker.data}")
