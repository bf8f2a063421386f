"""The ``rewind`` command line: ``rewind <noun> <verb>``.

Global options (before the noun) configure every command; each command adds its own. Exit codes:
0 success, 1 failure (a :class:`RewindError`, printed as what happened and the fix), 2 bad usage.
Command groups live in ``rewind/commands/``; this module only names them (each is imported when used).
"""

from __future__ import annotations

import sys

import click
import lmdb
from confluent_kafka import KafkaException

from rewind.commands.lazy_group import LazyGroup
from rewind.foreseeable_faults import explain
from rewind.ground.errors import RewindError
from rewind.ground.native_build import check_native_build

_COMMANDS = {
    "kafka": "rewind.commands.kafka_cmd:kafka",
    "topics": "rewind.commands.topics_cmd:topics",
    "config": "rewind.commands.topics_cmd:config",
    "project": "rewind.commands.project_cmd:project",
    "state": "rewind.commands.state_cmd:state",
    "recover": "rewind.commands.recover_cmd:recover_cmd",
    "replay": "rewind.commands.recover_cmd:replay",
    "recovery": "rewind.commands.recovery_cmd:recovery",
    "snapshot": "rewind.commands.snapshot_cmd:snapshot",
    "snapshots": "rewind.commands.snapshot_cmd:snapshots",
    "history": "rewind.commands.history_cmd:history",
    "diff": "rewind.commands.diff_cmd:diff",
    "serve": "rewind.commands.serve_cmd:serve",
    "simulate": "rewind.commands.events_cmd:simulate",
    "position": "rewind.commands.events_cmd:position",
    "lag": "rewind.commands.lag_cmd:lag",
    "reconcile": "rewind.commands.reconcile_cmd:reconcile",
    "s3": "rewind.commands.s3_cmd:s3",
    "cluster": "rewind.commands.cluster_cmd:cluster",
}


@click.group(
    cls=LazyGroup,
    lazy=_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--config", "config_file", metavar="FILE", help="rewind.toml to read (default: ./rewind.toml).")
@click.option("--home", metavar="DIR", help="REWIND_HOME: where rewind keeps its files (default ./.rewind).")
@click.option("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (default: the local broker).")
@click.option(
    "-X",
    "kafka_props",
    multiple=True,
    metavar="NAME=VALUE",
    help="A librdkafka property for every Kafka client (repeatable), e.g. -X security.protocol=SSL.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_file: str | None,
    home: str | None,
    bootstrap: str | None,
    kafka_props: tuple[str, ...],
) -> None:
    """rewind: event-sourced trading state on Kafka.

    Materializes orders, positions, P&L, balances, risk and config from the event log into LMDB,
    snapshots it, recovers after a crash, rebuilds state as of any point, and measures consumer lag.
    Settings come from rewind.toml, REWIND_* variables and these options (options win).
    """
    ctx.obj = {
        "config_file": config_file,
        "flags": {"home": home, "kafka.bootstrap": bootstrap},
        "kafka_props": kafka_props,
    }


def main() -> None:
    """Entry point of the ``rewind`` console script."""
    try:
        check_native_build()
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except RewindError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (KafkaException, OSError, lmdb.Error) as exc:
        explained = explain(exc)
        if explained is None:
            raise
        click.echo(f"error: {explained}", err=True)
        sys.exit(explained.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
