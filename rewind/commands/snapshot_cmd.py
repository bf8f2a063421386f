"""``rewind snapshot`` and ``rewind snapshots list|verify|prune``."""

from __future__ import annotations

import time

import click

from projector.state_directory import StateDirectory
from rewind.commands.context import echo_json, json_option, settings_from
from rewind.ground.settings import Settings
from snapshotter import retention
from snapshotter.snapshot import SnapshotInvalid, list_snapshots, load_snapshot, take_snapshot, verify


def _store_names(settings: Settings) -> list[str]:
    root = settings.snapshot_dir
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


@click.command()
@click.option("--state", "state_dir", metavar="DIR", help="State directory (default: live state).")
@json_option
@click.pass_context
def snapshot(ctx: click.Context, state_dir: str | None, as_json: bool) -> None:
    """Take a snapshot of every partition now (the projector may keep running)."""
    settings = settings_from(ctx, **{"state.dir": state_dir})
    rows = []
    with StateDirectory.open_readonly(settings.state_dir) as directory:
        for name in directory.store_names():
            started = time.monotonic()
            taken = take_snapshot(directory.store(name), settings.snapshot_dir, name)
            if taken is not None:
                rows.append(
                    {
                        "store": name,
                        "offset": taken.offset,
                        "path": str(taken.path),
                        "bytes": taken.manifest.file_size,
                        "seconds": round(time.monotonic() - started, 4),
                    }
                )
    if as_json:
        echo_json(rows)
    else:
        for row in rows:
            click.echo(f"{row['store']}: snapshot @{row['offset']} ({row['bytes']} bytes) -> {row['path']}")


@click.group()
def snapshots() -> None:
    """List, verify and prune snapshots."""


@snapshots.command("list")
@json_option
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every snapshot, newest first per partition, with its manifest."""
    settings = settings_from(ctx)
    rows = []
    for name in _store_names(settings):
        for path in list_snapshots(settings.snapshot_dir, name):
            try:
                manifest = load_snapshot(path).manifest
                rows.append(
                    {
                        "store": name,
                        "offset": manifest.offset,
                        "events": manifest.event_count,
                        "bytes": manifest.file_size,
                        "created_at": manifest.created_at,
                        "digest": manifest.state_digest,
                        "path": str(path),
                    }
                )
            except SnapshotInvalid as exc:
                rows.append({"store": name, "offset": int(path.name), "error": str(exc), "path": str(path)})
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        detail = row.get("error") or f"{row['events']} events, {row['bytes']} bytes"
        click.echo(f"{row['store']}\t@{row['offset']}\t{detail}")


@snapshots.command("verify")
@click.option("--deep/--shallow", default=True, help="Also recompute offset and state digest from the copy.")
@json_option
@click.pass_context
def verify_cmd(ctx: click.Context, deep: bool, as_json: bool) -> None:
    """Check every snapshot's manifest, size and checksum (and content). Exits 1 if any is corrupt."""
    settings = settings_from(ctx)
    rows = []
    for name in _store_names(settings):
        for path in list_snapshots(settings.snapshot_dir, name):
            try:
                verify(path, deep=deep)
                rows.append({"path": str(path), "ok": True})
            except SnapshotInvalid as exc:
                rows.append({"path": str(path), "ok": False, "error": str(exc)})
    if as_json:
        echo_json(rows)
    else:
        for row in rows:
            click.echo(f"ok      {row['path']}" if row["ok"] else f"CORRUPT {row['error']}")
    ctx.exit(0 if all(r["ok"] for r in rows) else 1)


@snapshots.command("prune")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@json_option
@click.pass_context
def prune(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Delete snapshots the retention policy no longer keeps (newest few + hourly + daily)."""
    settings = settings_from(ctx)
    deleted = retention.prune(
        settings.snapshot_dir, retention.RetentionPolicy.from_settings(settings), dry_run=dry_run
    )
    if as_json:
        echo_json({"deleted": deleted, "dry_run": dry_run})
    else:
        for path in deleted:
            click.echo(("would delete " if dry_run else "deleted ") + path)
