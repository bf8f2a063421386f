"""``rewind project``: run the projector in the foreground."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

import click
from confluent_kafka.admin import AdminClient

from projector.broker_watch import BrokerWatch
from projector.gc_tuning import tune_gc_for_projection
from projector.runner import ProjectionProgress, Projector, parse_partitions, store_label
from rewind.commands import stop_deadline
from rewind.commands.context import echo_json, json_option, settings_from
from rewind.ground.topics import events_partition_count


@click.command()
@click.option(
    "--until-caught-up", is_flag=True, help="Stop once every partition reaches the log end seen at start."
)
@click.option("--partitions", metavar="LIST", help="Partitions to own, e.g. 0-5,8 (default: all).")
@click.option("--state", "state_dir", metavar="DIR", help="State directory (default: $REWIND_HOME/state).")
@click.option(
    "--anomaly-policy",
    type=click.Choice(["quarantine", "halt"]),
    help="quarantine: record anomalies and continue; halt: stop before one.",
)
@click.option("--batch-events", type=click.IntRange(1), help="Most events per LMDB transaction.")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
@json_option
@click.pass_context
def project(
    ctx: click.Context,
    until_caught_up: bool,
    partitions: str | None,
    state_dir: str | None,
    anomaly_policy: str | None,
    batch_events: int | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Materialize the event log into LMDB state, exactly once. Ctrl-C or SIGTERM stops it cleanly.

    Brokers that do not answer for broker.lost_after_seconds are reported once on stderr (and once
    when they answer again); projecting goes on by itself. A stop takes at most a few seconds,
    whatever the brokers do.
    """
    settings = settings_from(
        ctx,
        **{
            "state.dir": state_dir,
            "projector.anomaly_policy": anomaly_policy,
            "projector.batch_events": batch_events,
        },
    )
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    count = events_partition_count(AdminClient(settings.client_config()), settings.events_topic)
    tune_gc_for_projection()
    stop = threading.Event()
    doing = ["starting"]

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
        stop_deadline.arm("rewind project", lambda: doing[0])

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    projector = Projector(settings, parse_partitions(partitions, count))
    watch = BrokerWatch(settings).start()
    show_bar = until_caught_up and not no_progress and not as_json
    try:
        doing[0] = "projecting"
        progress = _run(projector, stop, until_caught_up, show_bar)
    finally:
        doing[0] = "closing the projector"
        watch.stop()
        projector.close()
    summary = {
        "applied": progress.applied,
        "anomalies": progress.anomalies,
        "dead_letters": progress.dead_letters,
        "batches": progress.batches,
        "offsets": {store_label(store): o for store, o in sorted(progress.offsets.items())},
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo(
            f"applied {progress.applied} events in {progress.batches} batches "
            f"({progress.anomalies} anomalies, {progress.dead_letters} dead letters)"
        )


def _run(
    projector: Projector, stop: threading.Event, until_caught_up: bool, show_bar: bool
) -> ProjectionProgress:
    if not show_bar:
        return projector.run(stop=stop, until_caught_up=until_caught_up)
    with click.progressbar(
        length=1, label="projecting", show_pos=True, file=click.get_text_stream("stderr")
    ) as bar:
        seen = {"total": 0}

        def on_batch(progress: ProjectionProgress) -> None:
            if not seen["total"]:
                seen["total"] = progress.applied + progress.dead_letters + progress.remaining()
                bar.length = seen["total"]
            bar.update(progress.applied + progress.dead_letters - bar.pos)

        return projector.run(stop=stop, until_caught_up=until_caught_up, on_batch=on_batch)
