"""The remote snapshot store: any S3-compatible object storage (AWS S3, MinIO, Ceph, SeaweedFS, S3Proxy).

Layout: ``<prefix>/<store>/<offset, 20 digits>/data.mdb`` and ``.../MANIFEST.json``, the same names
as on disk. The data object is uploaded first (multipart above one part, bandwidth bounded), checked,
and only then the manifest: **a remote snapshot exists only once its manifest object does**, so a
data object without a manifest (an upload cut short) is never taken for a snapshot.

End to end checks: before the upload the local file is hashed against its manifest (xxh3) while the
MD5 of every part is computed; after it the object's ETag must equal the ETag S3 gives those parts
(``md5(part md5s)-N``). A store whose ETags are not MD5-based (AWS SSE-KMS, some gateways) gets a
re-read of the object instead, hashed with xxh3. A fetched snapshot is verified by
:func:`snapshotter.snapshot.verify` like a local one.

boto3 is the client: maintained by AWS, the reference every S3-compatible server is tested against,
and its transfer manager gives multipart, concurrency and a bandwidth bound in one
``TransferConfig``; botocore retries transient errors (``standard`` mode, with backoff). Credentials
come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ...).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import xxhash
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from s3transfer.utils import ChunksizeAdjuster

from projector.store import DATA_FILE
from rewind.ground.errors import ConfigError
from rewind.ground.settings import Settings
from snapshotter.retention import RetentionPolicy
from snapshotter.snapshot import (
    MANIFEST,
    Manifest,
    Snapshot,
    SnapshotInvalid,
    load_snapshot,
    snapshot_name,
    verify,
)
from snapshotter.snapshot_store import REMOTE, RemoteUnavailable, StoredSnapshot, prune_store

logging.getLogger("botocore").setLevel(logging.WARNING)  # not "Found credentials in ..." at every start
logging.getLogger("boto3").setLevel(logging.WARNING)
_READ_CHUNK = 4 << 20
_MB = 1 << 20
MANIFEST_READERS = 8
AWAY_SECONDS = 30.0
"""After a failure to reach the store, how long requests fail at once instead of being tried."""
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "403",
    "InvalidToken",
    "ExpiredToken",
}


class RemoteStoreRefused(ConfigError):
    """The remote store answered but refused: wrong credentials, a missing bucket. Needs a person."""


class S3SnapshotStore:
    """Snapshots in one bucket under one prefix."""

    location = REMOTE

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint: str | None,
        region: str,
        verify_tls: bool,
        part_bytes: int = 16 * _MB,
        bandwidth_bytes: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._away_until = 0.0
        self._away_reason = ""
        self.endpoint = endpoint
        self.part_bytes = part_bytes
        self.transfer = TransferConfig(
            multipart_threshold=part_bytes,
            multipart_chunksize=part_bytes,
            max_concurrency=4,
            max_bandwidth=bandwidth_bytes or None,
        )
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            verify=verify_tls,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=30,
                s3={"addressing_style": "path"},
            ),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3SnapshotStore:
        endpoint = str(settings["snapshots.remote.endpoint"]) or None
        if endpoint == "local":
            written = settings.home / "s3" / "endpoint"
            if not written.is_file():
                raise ConfigError(
                    f"snapshots.remote.endpoint is 'local' but {written} does not exist",
                    "start the local S3 server with `rewind s3 start`, or set snapshots.remote.endpoint "
                    "(REWIND_SNAPSHOTS_REMOTE_ENDPOINT) to the store's URL",
                )
            endpoint = written.read_text().strip()
        return cls(
            bucket=str(settings["snapshots.remote.bucket"]),
            prefix=str(settings["snapshots.remote.prefix"]),
            endpoint=endpoint,
            region=str(settings["snapshots.remote.region"]),
            verify_tls=bool(settings["snapshots.remote.verify_tls"]),
            part_bytes=int(settings["snapshots.remote.part_mb"]) * _MB,
            bandwidth_bytes=int(settings["snapshots.remote.bandwidth_mb"]) * _MB,
        )

    # Naming

    def _key(self, store: str, offset: int, name: str = "") -> str:
        base = f"{store}/{snapshot_name(offset)}/{name}"
        return f"{self.prefix}/{base}" if self.prefix else base

    def _store_prefix(self, store: str) -> str:
        return f"{self.prefix}/{store}/" if self.prefix else f"{store}/"

    def address(self, store: str, offset: int) -> str:
        return f"s3://{self.bucket}/{self._key(store, offset)}"

    # Errors

    def _where(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint or 'AWS S3'}"

    def _failure(self, exc: Exception, doing: str) -> Exception:
        """The rewind error for a client failure: refused (a person must act) or unavailable."""
        if isinstance(exc, NoCredentialsError):
            return RemoteStoreRefused(
                f"no S3 credentials to {doing} {self._where()}",
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for the bucket named "
                "by snapshots.remote.bucket (REWIND_SNAPSHOTS_REMOTE_BUCKET)",
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in _CREDENTIAL_CODES or status == 403:
                return RemoteStoreRefused(
                    f"the S3 store refused the credentials to {doing} {self._where()} ({code or status})",
                    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to keys allowed to read and write "
                    "the bucket named by snapshots.remote.bucket (REWIND_SNAPSHOTS_REMOTE_BUCKET)",
                )
            if code in ("404", "NoSuchKey", "NotFound") and doing != "open":
                return SnapshotInvalid(
                    f"{self._where()}: an object went missing while trying to {doing} (pruned meanwhile?)"
                )
            if code == "NoSuchBucket" or (code == "404" and doing == "open"):
                return RemoteStoreRefused(
                    f"{self._where()} does not exist (while trying to {doing})",
                    "create the bucket, or set snapshots.remote.bucket (REWIND_SNAPSHOTS_REMOTE_BUCKET) "
                    "to an existing one",
                )
            if status >= 500 or code in ("SlowDown", "RequestTimeout"):
                return RemoteUnavailable(
                    f"{self._where()} failed to {doing}: {code or status}", "it is retried by itself"
                )
            return RemoteStoreRefused(
                f"{self._where()} refused to {doing}: {code or status} {exc}",
                "check snapshots.remote.* and the bucket's policy",
            )
        if isinstance(exc, Boto3Error) and any(code in str(exc) for code in _CREDENTIAL_CODES):
            return RemoteStoreRefused(
                f"the S3 store refused the credentials to {doing} {self._where()} ({exc})",
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to keys allowed to read and write "
                "the bucket named by snapshots.remote.bucket (REWIND_SNAPSHOTS_REMOTE_BUCKET)",
            )
        self._away_until = time.monotonic() + AWAY_SECONDS
        self._away_reason = f"cannot reach {self._where()}: {exc}"
        return RemoteUnavailable(
            f"cannot reach {self._where()} to {doing}: {exc}",
            "start the store (`rewind s3 start` for the local one) or check snapshots.remote.endpoint; "
            "uploads are retried by themselves",
        )

    def _check_reachable(self, doing: str) -> None:
        """Fail at once, without a request, for :data:`AWAY_SECONDS` after the store could not be
        reached: one unreachable store costs one set of timeouts, not one per snapshot listed."""
        if time.monotonic() < self._away_until:
            raise RemoteUnavailable(
                f"{self._away_reason} (not tried again to {doing} for {AWAY_SECONDS:.0f} s)",
                "start the store or check snapshots.remote.endpoint",
            )

    def _call(self, doing: str, operation: str, **kwargs: Any) -> Any:
        self._check_reachable(doing)
        try:
            return getattr(self.client, operation)(**kwargs)
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise self._failure(exc, doing) from None

    # Listing

    def stores(self) -> list[str]:
        listed = (
            self._call(
                "list the stores in",
                "list_objects_v2",
                Bucket=self.bucket,
                Prefix=self._store_prefix(""),
                Delimiter="/",
            )
            if self.prefix
            else self._call("list the stores in", "list_objects_v2", Bucket=self.bucket, Delimiter="/")
        )
        names = [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in listed.get("CommonPrefixes", [])]
        return sorted(names)

    def _keys(self, prefix: str) -> list[tuple[str, int]]:
        keys: list[tuple[str, int]] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call(
                "list snapshots in", "list_objects_v2", Bucket=self.bucket, Prefix=prefix, **extra
            )
            keys += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page.get("NextContinuationToken")

    def list(self, store: str, manifests: bool = True) -> list[StoredSnapshot]:
        """Snapshots whose manifest object exists, newest first; data objects without one are an
        upload cut short and are not listed."""
        offsets = []
        for key, _size in self._keys(self._store_prefix(store)):
            parts = key.rsplit("/", 2)
            if len(parts) == 3 and parts[2] == MANIFEST and parts[1].isdigit():
                offsets.append(int(parts[1]))

        def row(offset: int) -> StoredSnapshot:
            manifest, error = None, None
            if manifests:
                try:
                    manifest = self._manifest(store, offset)
                except SnapshotInvalid as exc:
                    error = str(exc)
            return StoredSnapshot(REMOTE, store, offset, self.address(store, offset), manifest, error)

        newest_first = sorted(offsets, reverse=True)
        if not manifests or len(newest_first) < 2:
            return [row(offset) for offset in newest_first]
        with ThreadPoolExecutor(max_workers=MANIFEST_READERS, thread_name_prefix="s3-manifests") as pool:
            return list(pool.map(row, newest_first))  # one request each: latency, not bandwidth

    def _manifest(self, store: str, offset: int) -> Manifest:
        key = self._key(store, offset, MANIFEST)
        raw = self._call("read a manifest from", "get_object", Bucket=self.bucket, Key=key)["Body"].read()
        try:
            return Manifest.from_json(raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise SnapshotInvalid(f"s3://{self.bucket}/{key}: manifest unreadable ({exc})") from None

    # Reading

    def fetch(self, snapshot: StoredSnapshot, scratch: Path, deep: bool) -> Snapshot:
        """Download ``snapshot`` into ``scratch/<store>/<offset>/`` and verify it there. A damaged
        download is removed before :class:`SnapshotInvalid` is raised."""
        target = scratch / snapshot.store / snapshot_name(snapshot.offset)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        try:
            manifest = self._manifest(snapshot.store, snapshot.offset)
            (target / MANIFEST).write_bytes(manifest.to_json())
            key = self._key(snapshot.store, snapshot.offset, DATA_FILE)
            self._check_reachable("read a snapshot from")
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                    raise SnapshotInvalid(f"s3://{self.bucket}/{key}: data object missing") from None
                raise self._failure(exc, "read a snapshot from") from None
            except BotoCoreError as exc:
                raise self._failure(exc, "read a snapshot from") from None
            if int(head["ContentLength"]) != manifest.file_size:
                raise SnapshotInvalid(
                    f"s3://{self.bucket}/{key}: {head['ContentLength']} bytes, manifest says "
                    f"{manifest.file_size} (partial upload?)"
                )
            self._call(
                "download a snapshot from",
                "download_file",
                Bucket=self.bucket,
                Key=key,
                Filename=str(target / DATA_FILE),
                Config=self.transfer,
            )
            try:
                return verify(target, deep=deep)
            except SnapshotInvalid as exc:
                raise SnapshotInvalid(
                    str(exc).replace(
                        str(target), f"s3://{self.bucket}/{self._key(snapshot.store, snapshot.offset)}"
                    )
                ) from None
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    # Writing

    def exists(self, store: str, offset: int) -> bool:
        self._check_reachable("look for a snapshot in")
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(store, offset, MANIFEST))
            return True
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._failure(exc, "look for a snapshot in") from None
        except BotoCoreError as exc:
            raise self._failure(exc, "look for a snapshot in") from None

    def expected_etag(self, path: Path, manifest: Manifest) -> str:
        """The ETag S3 gives ``path`` uploaded with this store's part size, computed in the same pass
        that checks the file still hashes to its manifest (:class:`SnapshotInvalid` otherwise)."""
        size = path.stat().st_size
        if size != manifest.file_size:
            raise SnapshotInvalid(f"{path}: {size} bytes, manifest says {manifest.file_size}")
        multipart = size >= self.transfer.multipart_threshold
        part = ChunksizeAdjuster().adjust_chunksize(self.transfer.multipart_chunksize, size)
        hasher = xxhash.xxh3_128()
        parts: list[bytes] = []
        whole = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            while True:
                current = hashlib.md5(usedforsecurity=False)
                left = part
                while left > 0 and (chunk := handle.read(min(_READ_CHUNK, left))):
                    hasher.update(chunk)
                    current.update(chunk)
                    if not multipart:
                        whole.update(chunk)
                    left -= len(chunk)
                if left == part:
                    break
                parts.append(current.digest())
                if left > 0:
                    break
        if hasher.hexdigest() != manifest.file_xxh3_128:
            raise SnapshotInvalid(f"{path}: checksum differs from its manifest; not uploaded")
        if not multipart:
            return whole.hexdigest()
        return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"

    def _reread_xxh3(self, key: str) -> str:
        body = self._call("re-read an upload from", "get_object", Bucket=self.bucket, Key=key)["Body"]
        hasher = xxhash.xxh3_128()
        while chunk := body.read(_READ_CHUNK):
            hasher.update(chunk)
        return str(hasher.hexdigest())

    def put(self, snapshot: Snapshot) -> int:
        """Upload a local snapshot (data, check, then manifest); returns the bytes sent (0 when the
        bucket already holds it). Raises :class:`SnapshotInvalid` when the local copy or the upload
        does not match the manifest."""
        manifest = snapshot.manifest
        store, offset = manifest.partition, manifest.offset
        if self.exists(store, offset):
            return 0
        data = snapshot.path / DATA_FILE
        expected = self.expected_etag(data, manifest)
        key = self._key(store, offset, DATA_FILE)
        self._call(
            "upload a snapshot to",
            "upload_file",
            Filename=str(data),
            Bucket=self.bucket,
            Key=key,
            ExtraArgs={"Metadata": {"xxh3-128": manifest.file_xxh3_128}},
            Config=self.transfer,
        )
        head = self._call("check an upload in", "head_object", Bucket=self.bucket, Key=key)
        etag = str(head.get("ETag", "")).strip('"')
        if etag != expected and self._reread_xxh3(key) != manifest.file_xxh3_128:
            self._call("remove a damaged upload from", "delete_object", Bucket=self.bucket, Key=key)
            raise SnapshotInvalid(
                f"s3://{self.bucket}/{key}: the uploaded object differs from {data} "
                f"(ETag {etag}, expected {expected}); removed, to be uploaded again"
            )
        body = manifest.to_json()
        self._call(
            "upload a manifest to",
            "put_object",
            Bucket=self.bucket,
            Key=self._key(store, offset, MANIFEST),
            Body=body,
            ContentType="application/json",
        )
        return manifest.file_size + len(body)

    def delete(self, snapshot: StoredSnapshot) -> None:
        """Remove the manifest first (the snapshot stops existing), then the data."""
        for name in (MANIFEST, DATA_FILE):
            self._call(
                "delete a snapshot from",
                "delete_object",
                Bucket=self.bucket,
                Key=self._key(snapshot.store, snapshot.offset, name),
            )

    def check_access(self) -> None:
        """Raise the clear error now when the bucket cannot be used (credentials, name, endpoint)."""
        self._call("open", "head_bucket", Bucket=self.bucket)


def upload_snapshots(remote: S3SnapshotStore, paths: list[Path], policy: RetentionPolicy) -> dict[str, Any]:
    """Upload each local snapshot directory of ``paths`` (one already there is skipped), then prune
    the remote level of the stores touched. A local snapshot that is gone (pruned meanwhile) or fails
    its checksum is reported under ``invalid``; a store that fails raises its error."""
    uploaded: list[dict[str, Any]] = []
    invalid: list[dict[str, str]] = []
    for path in paths:
        started = time.monotonic()
        try:
            snapshot = load_snapshot(path)
            sent = remote.put(snapshot)
        except SnapshotInvalid as exc:
            invalid.append({"path": str(path), "error": str(exc)})
            continue
        uploaded.append(
            {
                "store": snapshot.manifest.partition,
                "offset": snapshot.offset,
                "bytes": sent,
                "created_at": snapshot.manifest.created_at,
                "seconds": round(time.monotonic() - started, 4),
                "address": remote.address(snapshot.manifest.partition, snapshot.offset),
            }
        )
    touched = sorted({str(row["store"]) for row in uploaded})
    pruned = prune_store(remote, policy, names=touched)
    return {
        "uploaded": uploaded,
        "invalid": invalid,
        "pruned": [snapshot.address for snapshot in pruned],
    }
