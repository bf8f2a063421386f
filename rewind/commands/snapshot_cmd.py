"""``rewind snapshot`` and ``rewind snapshots list|verify|prune``."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import click

from projector.state_directory import StateDirectory
from rewind.commands.context import echo_json, json_option, settings_from
from rewind.ground.errors import ConfigError
from rewind.ground.settings import Settings
from snapshotter import retention
from snapshotter.snapshot import SnapshotInvalid, take_snapshot
from snapshotter.snapshot_store import (
    LOCAL,
    REMOTE,
    StoredSnapshot,
    all_stores,
    prune_store,
    remote_policy,
    remote_store,
)


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


def _stored_row(stored: StoredSnapshot) -> dict[str, object]:
    row: dict[str, object] = {"location": stored.location, "store": stored.store, "offset": stored.offset}
    if stored.manifest is not None:
        manifest = stored.manifest
        row |= {
            "events": manifest.event_count,
            "bytes": manifest.file_size,
            "created_at": manifest.created_at,
            "digest": manifest.state_digest,
        }
    if stored.error is not None:
        row["error"] = stored.error
    return row | {"path": stored.address}


@snapshots.command("list")
@json_option
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every snapshot, local and remote, newest first per partition, with its manifest."""
    settings = settings_from(ctx)
    rows = []
    for store in all_stores(settings):
        for name in store.stores():
            rows += [_stored_row(stored) for stored in store.list(name)]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        detail = row.get("error") or f"{row['events']} events, {row['bytes']} bytes"
        click.echo(f"{row['location']}\t{row['store']}\t@{row['offset']}\t{detail}\t{row['path']}")


@snapshots.command("verify")
@click.option("--deep/--shallow", default=True, help="Also recompute offset and state digest from the copy.")
@json_option
@click.pass_context
def verify_cmd(ctx: click.Context, deep: bool, as_json: bool) -> None:
    """Check every snapshot's manifest, size and checksum (and content), local and remote (a remote one
    is downloaded to be checked). Exits 1 if any is corrupt."""
    settings = settings_from(ctx)
    rows = []
    scratch = settings.home / f".verify-{uuid.uuid4().hex}"
    try:
        for store in all_stores(settings):
            for name in store.stores():
                for stored in store.list(name, manifests=False):
                    row: dict[str, object] = {"location": stored.location, "path": stored.address}
                    try:
                        store.fetch(stored, scratch, deep)
                        rows.append(row | {"ok": True})
                    except SnapshotInvalid as exc:
                        rows.append(row | {"ok": False, "error": str(exc)})
                    finally:
                        shutil.rmtree(scratch, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if as_json:
        echo_json(rows)
    else:
        for row in rows:
            click.echo(
                f"ok      {row['location']}\t{row['path']}"
                if row["ok"]
                else f"CORRUPT {row['location']}\t{row['error']}"
            )
    ctx.exit(0 if all(r["ok"] for r in rows) else 1)


@snapshots.command("prune")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@json_option
@click.pass_context
def prune(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Delete snapshots the retention policies no longer keep: locally the newest few + hourly + daily
    (snapshots.keep_*), remotely the archive's (snapshots.remote.keep_*)."""
    settings = settings_from(ctx)
    policies = {
        LOCAL: retention.RetentionPolicy.from_settings(settings),
        REMOTE: remote_policy(settings),
    }
    deleted = [
        {"location": stored.location, "path": stored.address}
        for store in all_stores(settings)
        for stored in prune_store(store, policies[store.location], dry_run=dry_run)
    ]
    if as_json:
        echo_json({"deleted": [row["path"] for row in deleted], "snapshots": deleted, "dry_run": dry_run})
    else:
        for row in deleted:
            click.echo(("would delete " if dry_run else "deleted ") + f"{row['location']}\t{row['path']}")


@snapshots.command("upload")
@click.argument("paths", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@json_option
@click.pass_context
def upload_cmd(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Copy local snapshot directories to the remote store (data, check, then manifest), then prune
    the remote level. The service runs this in the background after every snapshot."""
    from snapshotter.s3_store import S3SnapshotStore, upload_snapshots

    settings = settings_from(ctx)
    remote = remote_store(settings)
    if remote is None or not isinstance(remote, S3SnapshotStore):
        raise ConfigError(
            "no remote snapshot store is configured (snapshots.remote.bucket is empty)",
            "set snapshots.remote.bucket (REWIND_SNAPSHOTS_REMOTE_BUCKET) and snapshots.remote.endpoint",
        )
    document = upload_snapshots(remote, list(paths), remote_policy(settings))
    if as_json:
        echo_json(document)
    else:
        for row in document["uploaded"]:
            click.echo(f"uploaded {row['store']} @{row['offset']} ({row['bytes']} bytes, {row['seconds']} s)")
        for row in document["invalid"]:
            click.echo(f"error: not uploaded: {row['error']}", err=True)
    ctx.exit(1 if document["invalid"] else 0)
