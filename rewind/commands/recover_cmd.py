"""``rewind recover`` and ``rewind replay``: crash recovery and time travel."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from projector.gc_tuning import tune_gc_for_projection
from projector.runner import ProjectionProgress, parse_partitions
from replayer.recovery import RecoveryReport, recover
from replayer.recovery_history import classify
from replayer.recovery_history_file import RecoveryRecorder, noted_damage
from replayer.recovery_tracker import RecoveryTracker
from replayer.timetravel import build_state_at, parse_points, parse_time, points_at, stores_with_config
from rewind.commands.context import echo_json, json_option, settings_from
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings
from snapshotter.snapshot_store import rejection_line


def _partition_count(settings: Settings) -> int:
    from confluent_kafka.admin import AdminClient

    from rewind.ground.topics import events_partition_count

    return events_partition_count(AdminClient(settings.client_config()), settings.events_topic)


@click.command("recover")
@click.option("--partitions", metavar="LIST", help="Only these partitions, e.g. 0-5 (default: all).")
@click.option(
    "--state", "state_dir", metavar="DIR", help="Live state directory (default: $REWIND_HOME/state)."
)
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
@json_option
@click.pass_context
def recover_cmd(
    ctx: click.Context, partitions: str | None, state_dir: str | None, no_progress: bool, as_json: bool
) -> None:
    """Recover the state: newest valid snapshot + replay of the log after it, validated, swapped in.

    Safe to run at any moment, again and again, including after it was itself killed. Corrupt
    snapshots are reported and skipped; a gap in the log (retention) is a data-loss error.
    """
    settings = settings_from(ctx, **{"state.dir": state_dir})
    chosen = parse_partitions(partitions, _partition_count(settings)) if partitions else None
    tune_gc_for_projection()
    tracker = RecoveryTracker()
    outcome: dict[str, object] = {}
    cause = classify(requested_by="cli", clean_marker=False, damage=noted_damage(settings.state_dir))
    recorder = RecoveryRecorder(settings, cause)

    def work() -> None:
        recorder.attempt()
        try:
            report = recover(settings, tracker, chosen, reason=cause.detail)
        except BaseException as exc:
            outcome["error"] = exc
            recorder.finish(tracker, error=exc)
            return
        outcome["report"] = report
        recorder.finish(tracker, report)

    worker = threading.Thread(target=work, name="recover", daemon=True)
    worker.start()
    if no_progress or as_json:
        worker.join()
    else:
        with click.progressbar(length=100, label="recovering", file=click.get_text_stream("stderr")) as bar:
            while worker.is_alive():
                worker.join(0.1)
                status = tracker.status()
                bar.label = f"recovering [{status['current_step'] or 'done'}]"
                bar.update(int(float(str(status["progress_percent"]))) - bar.pos)
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, RewindError):
            raise error
        raise RewindError(
            f"recovery failed: {error}", "see the message above; the live state was not changed"
        )
    report = outcome["report"]
    assert isinstance(report, RecoveryReport)
    if as_json:
        echo_json(report.as_dict() | {"recovery": tracker.status()})
        return
    for name, store in sorted(report.stores.items()):
        for reason in store.rejected_snapshots:
            click.secho(f"  {rejection_line(reason)}", fg="yellow", err=True)
        base = "log start" if store.snapshot_offset is None else f"snapshot @{store.snapshot_offset}"
        click.echo(f"{name}: {base} + {store.replayed} replayed -> offset {store.offset}")
    click.echo(
        f"recovered in {report.total_seconds:.3f}s (prepare {report.prepare_seconds:.3f}s, "
        f"restore {report.restore_seconds:.3f}s, replay {report.replay_seconds:.3f}s, "
        f"validate {report.validate_seconds:.3f}s, swap {report.swap_seconds:.3f}s); "
        f"digest {report.digest}"
    )


@click.command()
@click.option(
    "--at", "at_time", metavar="TIME", help="ISO-8601 time: the state as of the last event logged then."
)
@click.option(
    "--to", "to_points", metavar="P:OFFSET,...", help="Per partition, the first OFFSET events (0..OFFSET-1)."
)
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Empty directory to build the state in.")
@click.option("--partitions", metavar="LIST", help="With --at: only these partitions (default: all).")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
@json_option
@click.pass_context
def replay(
    ctx: click.Context,
    at_time: str | None,
    to_points: str | None,
    out_dir: str,
    partitions: str | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Time travel: build the state as it was at a time or offsets into DIR (live state untouched).

    Read it with `rewind state ... --state DIR`; compare with `rewind diff`.
    """
    if (at_time is None) == (to_points is None):
        raise click.UsageError("give exactly one of --at TIME or --to P:OFFSET[,P:OFFSET...]")
    settings = settings_from(ctx)
    count = _partition_count(settings)
    if to_points is not None:
        points = parse_points(to_points, count)
    else:
        assert at_time is not None
        chosen = parse_partitions(partitions, count) if partitions else range(count)
        points = points_at(settings, parse_time(at_time), stores_with_config(chosen))
    show_bar = not (no_progress or as_json)
    tune_gc_for_projection()
    with click.progressbar(
        length=max(1, sum(points.values())), label="replaying", file=click.get_text_stream("stderr")
    ) as bar:

        def on_batch(progress: ProjectionProgress) -> None:
            if show_bar:
                bar.update(progress.applied + progress.dead_letters - bar.pos)

        stores = build_state_at(settings, Path(out_dir), points, on_batch=on_batch)
    rows = [
        {
            "store": s.name,
            "events": s.events,
            "snapshot_offset": s.snapshot_offset,
            "rejected_snapshots": list(s.rejected_snapshots),
        }
        for s in stores
    ]
    if as_json:
        echo_json({"out": out_dir, "stores": rows})
        return
    for store in stores:
        for reason in store.rejected_snapshots:
            click.secho(f"  {rejection_line(reason)}", fg="yellow", err=True)
        base = "log start" if store.snapshot_offset is None else f"snapshot @{store.snapshot_offset}"
        click.echo(f"{store.name}: first {store.events} events (from {base})")
    click.echo(f"state written to {out_dir}; read it with `rewind state positions --state {out_dir}`")
