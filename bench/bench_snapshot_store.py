"""The remote snapshot store, each measurement beside its baseline in one run.

(a) upload: every store's snapshot of a state of about ``--orders`` orders shipped as the service
    ships it (:meth:`S3SnapshotStore.put`: local checksum + part MD5s, multipart upload, ETag check,
    manifest), beside a raw ``upload_file`` of the same bytes through the same client and config.
(b) restore: each snapshot fetched as recovery fetches it (download + size/checksum verification),
    beside a raw ``download_file``; then ``rewind recover`` from local snapshots and, after removing
    them (host loss), from the bucket.
(c) outage: ``rewind serve`` snapshotting every ``--cadence`` seconds under a steady flow, the object
    store stopped for ``--outage-seconds`` in the middle: projector batches (count, mean, p99 bucket of
    ``rewind_batch_apply_seconds``) in the outage window beside the same window without one, and how
    long after the window a snapshot taken after it is in the bucket (the uploads caught up).

The S3 server is S3Proxy (``rewind s3``) in the scratch directory unless ``--endpoint`` is given
(with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for it, and an existing ``--bucket``).

    .venv/bin/python -m bench.bench_snapshot_store --orders 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.harness import bench_broker, bench_topics, produce
from projector import queries
from projector.runner import Projector
from projector.store import DATA_FILE
from rewind.ground.settings import Settings, load_settings
from rewind.s3_local import LocalS3
from rewind.service import REWIND
from snapshotter.s3_store import S3SnapshotStore
from snapshotter.snapshot import Snapshot, take_snapshot
from snapshotter.snapshot_store import StoredSnapshot

RESULTS = Path(__file__).parent / "results"
EVENTS_PER_ORDER = 3.5
"""The simulator's mix: about 3.5 events (orders, fills, cancels, balances) per order."""


def _mb_s(size: int, seconds: float) -> float:
    return round(size / 1e6 / seconds, 1) if seconds > 0 else 0.0


def build_state(settings: Settings, args: argparse.Namespace) -> list[Snapshot]:
    produce(settings, int(args.orders * EVENTS_PER_ORDER), seed=1, accounts=args.accounts)
    projector = Projector(settings, range(args.partitions))
    try:
        projector.run(until_caught_up=True)
        directory = projector.directory
        print(f"  {len(queries.orders(directory)):,} orders projected", flush=True)
        taken = [take_snapshot(directory.store(n), settings.snapshot_dir, n) for n in directory.store_names()]
    finally:
        projector.close()
    return [s for s in taken if s is not None]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _warm_up(store: S3SnapshotStore, snapshots: list[Snapshot], scratch: Path) -> None:
    """One untimed raw round trip of the largest snapshot: the server's JIT and the client's
    connections are warm before either side is timed."""
    largest = max(snapshots, key=lambda s: s.manifest.file_size)
    store.client.upload_file(str(largest.path / DATA_FILE), store.bucket, "warm-up", Config=store.transfer)
    store.client.download_file(store.bucket, "warm-up", str(scratch / "warm-up"), Config=store.transfer)
    (scratch / "warm-up").unlink()


def measure_upload(
    store: S3SnapshotStore, snapshots: list[Snapshot], rounds: int, scratch: Path
) -> dict[str, Any]:
    """``rounds`` of each side, alternated (rewind, raw, rewind, raw, ...); medians. Each round of
    either side writes new keys under a prefix of its own: a snapshot already in the bucket is not
    sent again, and both sides then create objects rather than overwrite them."""
    size = sum(s.manifest.file_size for s in snapshots)
    prefix = store.prefix
    _warm_up(store, snapshots, scratch)
    rewind_times: list[float] = []
    raw_times: list[float] = []
    for round_ in range(rounds):
        store.prefix = f"{prefix}-round{round_}"
        started = time.perf_counter()
        for snapshot in snapshots:
            store.put(snapshot)
        rewind_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        for snapshot in snapshots:
            store.client.upload_file(
                str(snapshot.path / DATA_FILE),
                store.bucket,
                f"raw-copy-round{round_}/{snapshot.manifest.partition}/{snapshot.offset}/{DATA_FILE}",
                Config=store.transfer,
            )
        raw_times.append(time.perf_counter() - started)
    store.prefix = f"{prefix}-round0"
    result = {
        "bytes": size,
        "rounds": rounds,
        "rewind_seconds": round(_median(rewind_times), 3),
        "rewind_mb_s": _mb_s(size, _median(rewind_times)),
        "raw_seconds": round(_median(raw_times), 3),
        "raw_mb_s": _mb_s(size, _median(raw_times)),
    }
    print(f"(a) upload {size / 1e6:.1f} MB: {result}", flush=True)
    return result


def measure_fetch(
    store: S3SnapshotStore, snapshots: list[Snapshot], rounds: int, scratch: Path
) -> dict[str, Any]:
    """As :func:`measure_upload`, for the way back: fetch + verify beside a raw download."""
    size = sum(s.manifest.file_size for s in snapshots)
    target = scratch / "fetched"
    rewind_times: list[float] = []
    raw_times: list[float] = []
    for _round in range(rounds):
        started = time.perf_counter()
        for snapshot in snapshots:
            name, offset = snapshot.manifest.partition, snapshot.offset
            stored = StoredSnapshot("remote", name, offset, store.address(name, offset))
            store.fetch(stored, target, deep=False)
        rewind_times.append(time.perf_counter() - started)
        shutil.rmtree(target)
        target.mkdir()
        started = time.perf_counter()
        for snapshot in snapshots:
            store.client.download_file(
                store.bucket,
                f"raw-copy-round0/{snapshot.manifest.partition}/{snapshot.offset}/{DATA_FILE}",
                str(target / snapshot.manifest.partition),
                Config=store.transfer,
            )
        raw_times.append(time.perf_counter() - started)
        shutil.rmtree(target)
    result = {
        "bytes": size,
        "rounds": rounds,
        "rewind_seconds": round(_median(rewind_times), 3),
        "rewind_mb_s": _mb_s(size, _median(rewind_times)),
        "raw_seconds": round(_median(raw_times), 3),
        "raw_mb_s": _mb_s(size, _median(raw_times)),
    }
    print(f"(b) fetch {size / 1e6:.1f} MB: {result}", flush=True)
    return result


def recover_timed(settings: Settings, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [REWIND, "recover", "--json", "--no-progress"],
        capture_output=True,
        text=True,
        env=settings.child_environ() | env,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"rewind recover failed: {done.stderr}")
    report = json.loads(done.stdout)
    locations = sorted({str(s["snapshot_location"]) for s in report["stores"].values()})
    return {
        "command_seconds": round(seconds, 3),
        "restore_seconds": report["timings_seconds"]["restore"],
        "total_seconds": report["timings_seconds"]["total"],
        "locations": locations,
        "digest": report["digest"],
    }


def measure_recover(settings: Settings, env: dict[str, str]) -> dict[str, Any]:
    local = recover_timed(settings, env)
    shutil.rmtree(settings.snapshot_dir)
    shutil.rmtree(settings.state_dir)
    remote = recover_timed(settings, env)
    if remote["locations"] != ["remote"]:
        raise SystemExit(f"after host loss the snapshots came from {remote['locations']}, not the bucket")
    if remote["digest"] != local["digest"]:
        raise SystemExit(f"digests differ: local {local['digest']}, remote {remote['digest']}")
    result = {"local": local, "remote_after_host_loss": remote}
    print(f"(b) rewind recover: {result}", flush=True)
    return result


def _histogram(url: str, name: str) -> list[tuple[float, float]]:
    """The cumulative buckets of histogram ``name``, then ``(nan, sum)``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == name:
            buckets = [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
            total = sum(s.value for s in family.samples if s.name.endswith("_sum"))
            return [*buckets, (float("nan"), total)]
    return []


def _window(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> dict[str, Any]:
    """Batches between two scrapes: how many, their mean, and the bucket bound of their p99."""
    count = after[-2][1] - before[-2][1]
    seconds = after[-1][1] - before[-1][1]
    return {
        "batches": int(count),
        "mean_seconds": round(seconds / count, 4) if count else None,
        "p99_le_seconds": _p99(before[:-1], after[:-1]),
    }


def _p99(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float | None:
    """The 99th percentile bucket bound of the observations between two scrapes."""
    counts = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1] if counts else 0
    if total <= 0:
        return None
    for le, count in counts:
        if count >= 0.99 * total:
            return le
    return None


def _serve_window(
    settings: Settings, env: dict[str, str], server: LocalS3, args: argparse.Namespace, outage: bool
) -> dict[str, Any]:
    port = 18000 + os.getpid() % 1000
    url = f"http://127.0.0.1:{port}"
    full = settings.child_environ() | env | {"REWIND_SNAPSHOTS_EVERY_SECONDS": str(args.cadence)}
    service = subprocess.Popen([REWIND, "serve", "--port", str(port)], env=full, stdout=subprocess.DEVNULL)
    flow = subprocess.Popen(
        [REWIND, "simulate", "--events", "1000000000", "--rate", str(args.rate), "--seed", "9"],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/ready", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        time.sleep(args.cadence * 2)
        before = _histogram(url, "rewind_batch_apply_seconds")
        if outage:
            server.stop()
        time.sleep(args.outage_seconds)
        after = _histogram(url, "rewind_batch_apply_seconds")
        if outage:
            server.start()
        resumed_at = time.time()
        caught_up = None
        while time.time() - resumed_at < 120:
            values = {
                f.name: sum(s.value for s in f.samples)
                for f in text_string_to_metric_families(
                    urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
                )
            }
            if values.get("rewind_snapshot_upload_newest_remote_timestamp_seconds", 0) >= resumed_at:
                caught_up = round(time.time() - resumed_at, 1)
                break
            time.sleep(0.5)
        return {"batches": _window(before, after), "newer_snapshot_in_bucket_after_seconds": caught_up}
    finally:
        flow.send_signal(signal.SIGTERM)
        flow.wait(30)
        service.send_signal(signal.SIGTERM)
        service.wait(60)


def measure_outage(settings: Settings, env: dict[str, str], server: LocalS3, args: argparse.Namespace) -> Any:
    result = {
        "without_outage": _serve_window(settings, env, server, args, outage=False),
        "with_outage": _serve_window(settings, env, server, args, outage=True),
    }
    print(
        f"(c) serve, {args.outage_seconds} s window, snapshots every {args.cadence} s: {result}", flush=True
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--endpoint", help="an S3 endpoint (default: S3Proxy started here)")
    parser.add_argument("--bucket", default="rewind-bench")
    parser.add_argument("--part-mb", type=int, default=16)
    parser.add_argument("--cadence", type=int, default=10, help="(c): snapshots.every_seconds")
    parser.add_argument("--outage-seconds", type=int, default=60)
    parser.add_argument("--rate", type=int, default=2000, help="(c): events/s of the flow")
    parser.add_argument("--rounds", type=int, default=3, help="(a), (b): alternated rounds of each side")
    parser.add_argument("--only", default="abc")
    args = parser.parse_args()
    with bench_broker(args.bootstrap) as (bootstrap, scratch):
        server = None
        endpoint = args.endpoint
        if endpoint is None:
            home = scratch / "s3home"
            server = LocalS3(load_settings(environ={"REWIND_HOME": str(home)}))
            endpoint = server.start().endpoint
            (server.data / args.bucket).mkdir(exist_ok=True)
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "rewind-local")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "rewind-local-secret")
        env = {
            "REWIND_SNAPSHOTS_REMOTE_BUCKET": args.bucket,
            "REWIND_SNAPSHOTS_REMOTE_ENDPOINT": str(endpoint),
            "REWIND_SNAPSHOTS_REMOTE_PART_MB": str(args.part_mb),
        }
        try:
            with bench_topics(bootstrap, scratch, args.partitions, **env) as settings:
                run(args, settings, env, scratch, server)
        finally:
            if server is not None:
                server.stop()


def run(
    args: argparse.Namespace, settings: Settings, env: dict[str, str], scratch: Path, server: LocalS3 | None
) -> None:
    result: dict[str, Any] = {"orders": args.orders, "partitions": args.partitions, "part_mb": args.part_mb}
    store = S3SnapshotStore.from_settings(settings)
    snapshots = build_state(settings, args)
    if "a" in args.only:
        result["upload"] = measure_upload(store, snapshots, args.rounds, scratch)
    if "b" in args.only:
        if "a" not in args.only:
            measure_upload(store, snapshots, 1, scratch)
        result["fetch"] = measure_fetch(store, snapshots, args.rounds, scratch)
        result["recover"] = measure_recover(settings, env | {"REWIND_SNAPSHOTS_REMOTE_PREFIX": store.prefix})
    if "c" in args.only and server is not None:
        result["outage"] = measure_outage(settings, env, server, args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"snapshot_store-{args.orders}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}", flush=True)


if __name__ == "__main__":
    main()
