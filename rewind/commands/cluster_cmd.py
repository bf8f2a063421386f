"""``rewind cluster status``: the members of the cluster's consumer group, their partitions and lag.

Read from the brokers (the group coordinator's description and the group's committed offsets), so it
answers whichever members are up, and with none.
"""

from __future__ import annotations

import click

from rewind.cluster_membership import cluster_report
from rewind.commands.context import echo_json, json_option, settings_from


@click.group()
def cluster() -> None:
    """rewind as a cluster: the members of one Kafka consumer group share the events partitions."""


@cluster.command("status")
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Members (member id, client id, host, URL), the partitions each projects, and lag per partition."""
    settings = settings_from(ctx)
    report = cluster_report(settings)
    if as_json:
        echo_json(report)
        return
    click.echo(f"group {report['group']}: {report['state']}, {len(report['members'])} members")
    for member in report["members"]:
        partitions = ",".join(map(str, member["partitions"])) or "-"
        click.echo(
            f"  {member['url'] or member['client_id']}  partitions {partitions}  ({member['member_id']})"
        )
    if report["unassigned_partitions"]:
        click.echo(f"  moving (no owner now): {report['unassigned_partitions']}")
    click.echo("partition  log_end  committed  lag")
    for partition, row in report["lag"].items():
        committed = "-" if row["committed"] is None else row["committed"]
        lag = "-" if row["lag_messages"] is None else row["lag_messages"]
        click.echo(f"{partition:>9}  {row['log_end']:>7}  {committed:>9}  {lag:>3}")
