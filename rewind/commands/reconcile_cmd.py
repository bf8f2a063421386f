"""``rewind reconcile``: rewind's positions, balances and open orders against an external statement.

Exit codes: 0 no breaks (or the corrections were applied), 1 breaks found (a finding, like
``diff(1)``) or a failure (an ``error:`` line says which), 2 bad usage.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from producers.builders import now_micros
from producers.event_producer import EventProducer
from replayer.corrections import events_of_document, proposal_document, propose
from replayer.reconcile_report import CSV_COLUMNS, ReconcileReport, csv_rows, reconcile_files
from replayer.reconcile_state import LAST_EVENTS
from rewind.commands.context import echo_json, json_option, settings_from
from rewind.ground.errors import RewindError

_FILE = click.Path(dir_okay=False, path_type=Path)


def _write(path: Path, text: str) -> None:
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise RewindError(f"cannot write {path}: {exc.strerror or exc}", "choose a writable path") from exc


def _csv_text(report: ReconcileReport) -> str:
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(report))
    return out.getvalue()


def _after(state: dict[str, Any], entity: str, key: str) -> str:
    """The entity's value right after an event, for the text report."""
    if entity == "position" and state.get("position"):
        return f" -> quantity {state['position']['quantity']}"
    if entity == "balance":
        for balance in state.get("balances", []):
            if balance.get("currency") == key:
                return f" -> amount {balance['amount']}"
    if entity == "order" and state.get("order"):
        return f" -> {state['order']['status']}"
    return ""


def _print(report: ReconcileReport) -> None:
    statement = report.statement
    click.echo(f"statement {statement.name} (sha256 {statement.checksum[:16]}...)")
    click.echo(f"compared with {report.side.source}")
    outcome = report.outcome
    for kind, compared in outcome.compared.items():
        click.echo(f"  {kind:<10} {compared:>9,} compared, {outcome.matches[kind]:>9,} match")
    if outcome.clean:
        click.echo("no breaks")
        return
    counts = ", ".join(f"{kind} {n}" for kind, n in outcome.counts().items() if n)
    click.echo(f"{len(outcome.breaks)} breaks: {counts}")
    header = ("KIND", "ENTITY", "ACCOUNT", "KEY", "STATEMENT", "REWIND", "DIFFERENCE")
    rows = [
        (b.kind, b.entity, b.account or "-", b.key, b.statement or "-", b.rewind or "-", b.difference or "-")
        for b in outcome.breaks
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for item, row in zip(outcome.breaks, rows, strict=True):
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        for event in report.events.get(item.entity_key, []):
            shown = event.as_dict()
            fields = " ".join(f"{k}={v}" for k, v in sorted(event.fields.items()))
            where = f"p{event.partition} o{event.offset}"
            after = _after(event.state, item.entity, item.key)
            click.echo(f"    last: {shown['logged_at']} {event.event_type} [{where}] {fields}{after}")


def _apply(ctx: click.Context, path: Path, yes: bool, as_json: bool) -> None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RewindError(f"cannot read {path}: {exc.strerror or exc}", "check the path") from exc
    except json.JSONDecodeError as exc:
        raise RewindError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})", "pass a proposal file") from exc
    checksum, source, events = events_of_document(document, str(path))
    settings = settings_from(ctx)
    if not events:
        if as_json:
            echo_json({"applied": 0, "source": source, "events": []})
        else:
            click.echo("nothing to apply: the proposal holds no events")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(
                "--apply emits events: confirm with --yes when no one can answer the prompt"
            )
        click.echo(f"{len(events)} corrections from {source} to {settings.events_topic}:", err=True)
        for event in events:
            what = event.get("symbol") or event.get("currency")
            amount = event.get("quantity", event.get("amount"))
            click.echo(f"  {event['event_type']} {event['account_id']} {what} {amount}", err=True)
        if not click.confirm("emit them?", err=True):
            raise RewindError(
                "not applied: the confirmation was declined", "run again and answer y, or pass --yes"
            )
    producer = EventProducer(
        settings.client_config(), events_topic=settings.events_topic, config_topic=settings.config_topic
    )
    applied: list[dict[str, Any]] = []
    for event in events:
        partition, offset = producer.emit(event)
        applied.append(
            {
                "event_id": event["event_id"],
                "event_type": event["event_type"],
                "partition": partition,
                "offset": offset,
            }
        )
    if as_json:
        echo_json(
            {"applied": len(applied), "source": source, "statement_checksum": checksum, "events": applied}
        )
        return
    click.echo(
        f"emitted {len(applied)} corrections ({source}); an id the projector already applied is dropped, "
        "so applying again changes nothing"
    )


@click.command()
@click.option("--positions", "positions", type=_FILE, help="Positions statement (CSV or JSON).")
@click.option("--balances", "balances", type=_FILE, help="Balances statement (CSV or JSON).")
@click.option("--orders", "orders", type=_FILE, help="Open-orders statement (CSV or JSON).")
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME",
    help="Compare with rewind as of TIME (ISO 8601, time travel), 'now' (the log's end) or 'live' "
    "(the live state). Default: the statement's own time, else the live state.",
)
@click.option(
    "--csv", "csv_out", type=_FILE, help="Also write the breaks as CSV to this file (for operations)."
)
@click.option(
    "--propose", "propose_out", type=_FILE, help="Write the correcting events to this file for review."
)
@click.option(
    "--apply", "apply_file", type=_FILE, help="Emit the corrections of a --propose file (asks first)."
)
@click.option("--yes", is_flag=True, help="With --apply: emit without asking (for scripts).")
@click.option(
    "--history",
    type=click.IntRange(0, 100),
    default=LAST_EVENTS,
    show_default=True,
    help="Events shown per break: the last ones that touched it (0: none, faster).",
)
@click.option(
    "--statement-accounts",
    is_flag=True,
    help="Compare only the accounts the statement names (a broker that holds some of the desk's).",
)
@json_option
@click.pass_context
def reconcile(
    ctx: click.Context,
    positions: Path | None,
    balances: Path | None,
    orders: Path | None,
    as_of: str | None,
    csv_out: Path | None,
    propose_out: Path | None,
    apply_file: Path | None,
    yes: bool,
    history: int,
    statement_accounts: bool,
    as_json: bool,
) -> None:
    """Compare rewind with an external statement (positions, balances, open orders) as of its time.

    Reports matches and breaks by kind (missing in rewind, missing in the statement, quantity, average
    price, balance, open-order remaining), each with the events that last touched it. Tolerances and
    the statement's column names are set in rewind.toml ([reconcile.*]).

    --propose writes PositionAdjusted / BalanceChanged corrections for review; --apply FILE emits them
    after a confirmation (--yes in scripts). Exits 0 with no breaks, 1 with breaks, 2 on bad usage.
    """
    if apply_file is not None:
        if positions or balances or orders or propose_out or csv_out or as_of:
            raise click.UsageError("--apply takes only the proposal file (and --yes, --json)")
        _apply(ctx, apply_file, yes, as_json)
        return
    if positions is None:
        raise click.UsageError("pass --positions FILE (and optionally --balances, --orders), or --apply FILE")
    if yes:
        raise click.UsageError("--yes confirms --apply; there is nothing to confirm here")
    files = {"positions": positions}
    if balances is not None:
        files["balances"] = balances
    if orders is not None:
        files["orders"] = orders
    for kind, path in files.items():
        if not path.is_file():
            raise RewindError(f"the {kind} statement {path} does not exist", "check the path")
    settings = settings_from(ctx)
    report = reconcile_files(settings, files, as_of, history, statement_accounts)
    if csv_out is not None:
        _write(csv_out, _csv_text(report))
    proposed = None
    if propose_out is not None:
        proposal = propose(report.statement, report.side.rows, report.outcome.breaks, now_micros())
        document = proposal_document(report.statement, report.as_of_text, proposal)
        _write(propose_out, json.dumps(document, indent=2, sort_keys=True) + "\n")
        proposed = {
            "file": str(propose_out),
            "events": len(proposal.events),
            "uncorrected": len(proposal.uncorrected),
        }
    if as_json:
        document = report.as_dict()
        if proposed is not None:
            document["proposal"] = proposed
        echo_json(document)
    else:
        _print(report)
        if proposed is not None:
            click.echo(
                f"proposed {proposed['events']} corrections in {propose_out}"
                + (f" ({proposed['uncorrected']} breaks need a person)" if proposed["uncorrected"] else "")
                + f"; review, then: rewind reconcile --apply {propose_out}"
            )
    ctx.exit(0 if report.outcome.clean else 1)
