"""``rewind s3 ...``: the local S3 server (S3Proxy) for development, tests and ``make run``."""

from __future__ import annotations

import click

from rewind.commands.context import echo_json, json_option, settings_from
from rewind.s3_local import S3PROXY_VERSION, LocalS3, fetch


def _server(ctx: click.Context) -> LocalS3:
    return LocalS3(settings_from(ctx))


@click.group()
def s3() -> None:
    """Run a local S3-compatible object store (S3Proxy on the JDK), the remote snapshot store."""


@s3.command("fetch")
@click.option("--quiet", is_flag=True, help="Print nothing when the jar is already cached.")
def fetch_cmd(quiet: bool) -> None:
    """Fetch the S3Proxy jar from Maven Central into the cache (no-op when cached)."""
    jar = fetch(quiet=quiet)
    if not quiet:
        click.echo(f"S3Proxy {S3PROXY_VERSION}: {jar}")


@s3.command()
@click.option("--port", type=click.IntRange(0, 65535), help="Listen on this port (default: s3.port).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait until it answers.")
@json_option
@click.pass_context
def start(ctx: click.Context, port: int | None, timeout: float, as_json: bool) -> None:
    """Start the server on 127.0.0.1 and create the bucket snapshots.remote.bucket names. No-op when it
    already runs."""
    server = _server(ctx)
    was_running = server.pid() is not None
    status = server.start(port=port, timeout=timeout)
    if as_json:
        echo_json(status.as_dict() | {"already_running": was_running})
        return
    verb = "already running" if was_running else "started"
    click.echo(f"S3Proxy {status.version} {verb} at {status.endpoint} (pid {status.pid})")


@s3.command()
@click.option(
    "--timeout", default=20.0, show_default=True, help="Seconds to wait after SIGTERM before SIGKILL."
)
@click.pass_context
def stop(ctx: click.Context, timeout: float) -> None:
    """Stop the server (SIGTERM, wait, then SIGKILL). Its objects stay in $REWIND_HOME/s3/data."""
    click.echo("stopped" if _server(ctx).stop(timeout=timeout) else "not running")


@s3.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show pid, endpoint and data directory. Exits 1 when the server is not running."""
    report = _server(ctx).status()
    if as_json:
        echo_json(report.as_dict())
    else:
        state = f"running, pid {report.pid}, at {report.endpoint}" if report.running else "not running"
        click.echo(f"S3Proxy {report.version}: {state}")
        click.echo(f"data: {report.data_dir}")
    ctx.exit(0 if report.running else 1)
