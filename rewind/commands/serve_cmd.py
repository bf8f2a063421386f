"""``rewind serve``: the service (recover, follow, snapshot, HTTP API)."""

from __future__ import annotations

import logging
import sys

import click

from projector.gc_tuning import tune_gc_for_projection
from rewind.commands.context import settings_from
from rewind.service import Service


@click.command()
@click.option("--host", help="Address the HTTP API binds to (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="HTTP port (0: a free one).")
@click.option("--state", "state_dir", metavar="DIR", help="State directory (default: $REWIND_HOME/state).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, state_dir: str | None) -> None:
    """Run the service: recover, follow the log, snapshot on schedule, serve the HTTP API.

    SIGTERM or Ctrl-C stops it cleanly (final snapshot) within 10 s, whatever the brokers do; after a
    SIGKILL the next start recovers. A recovery that fails while the brokers do not answer is retried
    until they do (recovery.retry_max_seconds); brokers lost for broker.lost_after_seconds are
    logged once and fail /health.
    """
    settings = settings_from(ctx, **{"http.host": host, "http.port": port, "state.dir": state_dir})
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    tune_gc_for_projection()
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    ctx.exit(Service(settings).run())
