"""``rewind lag``: consumer lag and status of a group, once or continuously (``--watch``)."""

from __future__ import annotations

import json
import time

import click

from projector.encoding import NO_OFFSET
from projector.runner import store_source
from projector.state_directory import StateDirectory
from rewind.commands.context import echo_json, json_option, settings_from
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings
from rewind.lag import LagMonitor, LagReport, Status

_COLUMNS = (
    ("TOPIC", "<"),
    ("PART", ">"),
    ("LOG START", ">"),
    ("LOG END", ">"),
    ("COMMITTED", ">"),
    ("LAG", ">"),
    ("LAG SECONDS", ">"),
    ("RATE/S", ">"),
    ("LAST COMMIT", ">"),
    ("STATUS", "<"),
)


@click.command()
@click.option(
    "--group", "-g", metavar="GROUP", help="Consumer group (default: the projector's, projector.group)."
)
@click.option(
    "--topic",
    "-t",
    metavar="TOPIC",
    help="Only this topic (default: the events topic without --group, every topic of the group with it).",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    metavar="SECONDS",
    help="Sliding window the status is judged over (default: lag.window_seconds).",
)
@json_option
@click.option("--watch", is_flag=True, help="Keep sampling and redraw; every sample feeds the window.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between samples with --watch.",
)
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="With --watch: stop after N samples.")
@click.option(
    "--state",
    "state_dir",
    metavar="DIR",
    help="Without --group: the projector's state directory, whose stored offsets are measured.",
)
@click.pass_context
def lag(
    ctx: click.Context,
    group: str | None,
    topic: str | None,
    window: int | None,
    as_json: bool,
    watch: bool,
    interval: float,
    count: int | None,
    state_dir: str | None,
) -> None:
    """Show consumer lag per partition: offsets, lag in messages and seconds, and a status.

    Without --group: the projector's own lag on the events topic, from the offsets stored with
    its state (LMDB, --state) and the time of each commit; stores that have applied nothing yet are
    left out. Without a state directory there, the offsets the projector commits to its consumer
    group (projector.group) in Kafka. With --group: any consumer group's committed offsets.

    Statuses (worst last): OK, WARNING (falling behind), REWOUND (offset moved back), STALLED
    (committing without moving), STOPPED (not committing), DATA_LOSS (retention deleted unread
    events), OFFSET_BEYOND_LOG_END (committed offset past the log end: the topic was re-created or
    truncated). See docs/lag.md. With --watch, every sample feeds the sliding window; --json then
    prints one JSON document per line and sample, each partition with its reason and fix.
    """
    for name in ("interval", "count"):
        if not watch and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"--{name} needs --watch")
    settings = settings_from(ctx, **{"lag.window_seconds": window, "state.dir": state_dir})
    use_state = group is None and (settings.state_dir / "LAYOUT").is_file()
    if group is None:
        group = str(settings["projector.group"])
        topic = topic or settings.events_topic
    with LagMonitor.from_settings(settings) as monitor:

        def evaluate() -> LagReport:
            assert group is not None
            if use_state:
                offsets, commit_times = stored_offsets(settings, topic)
                return monitor.evaluate_offsets(offsets, name=group, commit_times=commit_times)
            return monitor.evaluate_group(group, topic)

        if not watch:
            report = evaluate()
            if not report.partitions:
                raise _no_offsets(group, topic, settings if use_state else None)
            if as_json:
                echo_json(report.to_json())
            else:
                click.echo(render_table(report))
            return
        taken = 0
        while count is None or taken < count:
            if taken:
                time.sleep(interval)
            report = evaluate()
            taken += 1
            if as_json:
                click.echo(json.dumps(report.to_json(), sort_keys=True))
            else:
                click.clear()
                click.echo(render_table(report))
                if not report.partitions:
                    click.echo(f"(no committed offsets yet; sampling every {interval:g}s)")


def stored_offsets(
    settings: Settings, topic: str | None
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], float]]:
    """The projector's next offsets (stored offset + 1) and commit times, read from its state
    directory. A store that has applied no event yet has committed nothing and is left out, as
    ``rewind lag --group`` leaves out partitions a group never committed."""
    offsets: dict[tuple[str, int], int] = {}
    commit_times: dict[tuple[str, int], float] = {}
    with StateDirectory.open_readonly(settings.state_dir) as directory:
        for name in directory.store_names():
            store = directory.store(name)
            key = store_source(settings, name)
            if topic is not None and key[0] != topic:
                continue
            stored = store.offset()
            if stored == NO_OFFSET:
                continue
            offsets[key] = stored + 1
            committed = store.committed_at()
            if committed is not None:
                commit_times[key] = committed
    return offsets, commit_times


def _no_offsets(group: str, topic: str | None, state_of: Settings | None) -> RewindError:
    where = f" on topic {topic}" if topic else ""
    if state_of is not None:
        return RewindError(
            f"the projector's state in {state_of.state_dir} has no stored offsets{where}",
            "the projector stores an offset once it has applied an event: run `rewind project` or "
            "`rewind serve`, or give --group to measure a consumer group instead",
        )
    return RewindError(
        f"consumer group {group} has no committed offsets{where}",
        "check the group and topic names (--group, --topic); a group appears once it commits",
    )


def _ago(now: float, then: float | None) -> str:
    return "-" if then is None else f"{max(0.0, now - then):.0f}s ago"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(report: LagReport) -> str:
    """The report as an aligned text table, with a header line and notes on lost or missing data."""
    header = (
        f"group {report.group}  topic {report.topic or '(all)'}  status {report.status.name}  "
        f"window {report.window_seconds:g}s  commit times: {report.commit_timestamps}"
    )
    rows = [
        (
            p.topic,
            str(p.partition),
            str(p.log_start_offset),
            str(p.log_end_offset),
            str(p.committed_offset),
            str(p.lag_messages),
            _number(p.lag_seconds, 1),
            _number(p.consume_rate, 2),
            _ago(report.evaluated_at, p.last_commit_at),
            p.status.name,
        )
        for p in report.partitions
    ]
    titles = tuple(title for title, _ in _COLUMNS)
    widths = [max(len(cell) for cell in column) for column in zip(titles, *rows, strict=False)]
    lines = [header, ""]
    for row in (titles, *rows):
        cells = [
            f"{cell:{align}{width}}" for cell, (_, align), width in zip(row, _COLUMNS, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    max_seconds = report.max_lag_seconds
    lines.append("")
    lines.append(
        f"total lag {report.total_lag_messages} messages, oldest unconsumed "
        f"{_number(max_seconds, 1)}s; evaluated in {report.evaluation_seconds * 1000:.0f} ms"
    )
    for p in report.partitions:
        if p.lost_range is not None:
            first, end = p.lost_range
            lines.append(
                f"DATA LOSS {p.topic}[{p.partition}]: offsets {first}..{end - 1} "
                f"({p.lost_messages} messages) were deleted before being consumed"
            )
        if p.status is Status.OFFSET_BEYOND_LOG_END:
            lines.append(f"OFFSET BEYOND LOG END {p.topic}[{p.partition}]: {p.reason}")
            lines.append(f"  fix: {p.fix}")
    for where, why in report.unavailable.items():
        lines.append(f"not evaluated {where}: {why}")
    return "\n".join(lines)
