"""Configuration in one place: defaults, then ``rewind.toml``, then ``REWIND_*`` variables, then flags.

Each later source wins. Every setting has a dotted key (``projector.batch_events``), a TOML location
(the same path), an environment variable (``REWIND_PROJECTOR_BATCH_EVENTS``) and a type; a bad value
is refused with a message that names the key and the source it came from.

Kafka client settings are librdkafka properties passed through untouched: ``[kafka.properties]`` in
the TOML file, ``REWIND_KAFKA_<NAME>`` in the environment (``REWIND_KAFKA_SASL_PASSWORD`` sets
``sasl.password``) and ``-X name=value`` on the command line.
"""

from __future__ import annotations

import difflib
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewind.ground.errors import ConfigError

CONFIG_FILE_NAME = "rewind.toml"
BOOTSTRAP_FILE_NAME = "bootstrap"
ANOMALY_POLICIES = ("quarantine", "halt")
ClientConfig = dict[str, str | int | float | bool]
_SECRET_MARKERS = ("password", "secret", "token", "credentials")


def _positive_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a positive integer")
    if isinstance(value, str):
        value = value.strip().replace("_", "")
        if not value.isdigit():
            raise ValueError("must be a positive integer")
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(value: object) -> int:
    if isinstance(value, str) and value.strip() == "0":
        return 0
    if value == 0 and not isinstance(value, bool):
        return 0
    return _positive_int(value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _name(value: object) -> str:
    text = _text(value).strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError("must be a non-empty name without spaces")
    return text


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _policy(value: object) -> str:
    text = _text(value).strip().lower()
    if text not in ANOMALY_POLICIES:
        raise ValueError(f"must be one of {', '.join(ANOMALY_POLICIES)}")
    return text


GROUP_PROTOCOLS = ("classic", "consumer")


def _group_protocol(value: object) -> str:
    text = _text(value).strip().lower()
    if text not in GROUP_PROTOCOLS:
        raise ValueError(f"must be one of {', '.join(GROUP_PROTOCOLS)}")
    return text


def _port(value: object) -> int:
    port = _non_negative_int(value)
    if port > 65535:
        raise ValueError("must be a TCP port (0-65535; 0 picks a free one)")
    return port


def _non_negative_decimal(value: object) -> str:
    """A tolerance: a plain non-negative decimal, kept as its exact text (never a float)."""
    text = (str(value) if isinstance(value, int) and not isinstance(value, bool) else _text(value)).strip()
    whole, _dot, fraction = text.partition(".")
    if not (whole or fraction) or not (whole or "0").isdigit() or not (fraction or "0").isdigit():
        raise ValueError('must be a non-negative decimal number written as text, e.g. "0.01"')
    return text


def _column(value: object) -> str:
    """A statement's column name: any non-empty text (exports name columns "Net Qty")."""
    text = _text(value)
    if not text.strip():
        raise ValueError("must be a non-empty column name")
    return text


RECONCILE_FIELDS = ("quantity", "avg_price", "balance", "remaining")
"""The compared fields a tolerance can be given for (``reconcile.tolerance.*``)."""


def _instrument_tolerances(value: object) -> str:
    """Per-instrument tolerances, from a TOML table ``{SYMBOL = {field = "0.01"}}`` or the text form
    ``SYMBOL.field=0.01,EUR.balance=0.05``; kept as that text (sorted), so it passes to children."""
    pairs: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for instrument, fields in value.items():
            if not isinstance(fields, dict):
                raise ValueError(f'[{instrument}] must be a table of field = "tolerance"')
            pairs.extend((f"{instrument}.{name}", tolerance) for name, tolerance in fields.items())
    else:
        for part in _text(value).split(","):
            if part.strip():
                name, sep, tolerance = part.partition("=")
                if not sep:
                    raise ValueError(f"'{part.strip()}' is not INSTRUMENT.FIELD=TOLERANCE")
                pairs.append((name.strip(), tolerance.strip()))
    shown = []
    for name, tolerance in sorted(pairs):
        instrument, _dot, field_name = name.rpartition(".")
        if not instrument or any(c.isspace() or c in ",=" for c in instrument):
            raise ValueError(f"'{name}' does not name an instrument (a symbol or currency) and a field")
        if field_name not in RECONCILE_FIELDS:
            raise ValueError(f"'{name}': the field must be one of {', '.join(RECONCILE_FIELDS)}")
        shown.append(f"{name}={_non_negative_decimal(tolerance)}")
    return ",".join(shown)


@dataclass(frozen=True)
class Setting:
    """One configurable value: its dotted key, parser and default."""

    key: str
    parse: Callable[[object], Any]
    default: object
    help: str

    @property
    def env(self) -> str:
        return "REWIND_" + self.key.replace(".", "_").upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("home", _text, ".rewind", "directory for everything rewind keeps on disk"),
    Setting("kafka.bootstrap", _text, "", "bootstrap servers; empty: the local broker's address"),
    Setting(
        "broker.wait_seconds",
        _positive_int,
        30,
        "how long a command waits for the brokers to answer before it reports them unreachable",
    ),
    Setting(
        "broker.lost_after_seconds",
        _positive_int,
        30,
        "a running projector or service reports its brokers lost (log, /health, metrics) after this "
        "long without an answer; it keeps retrying",
    ),
    Setting("topics.events", _name, "rewind.events", "the events topic"),
    Setting("topics.config", _name, "rewind.config", "the config topic (one partition)"),
    Setting("topics.deadletter", _name, "rewind.deadletter", "the dead-letter topic"),
    Setting("topics.partitions", _positive_int, 12, "partitions of the events topic"),
    Setting("topics.replication_factor", _positive_int, 1, "replication factor of all topics"),
    Setting("state.dir", _text, "", "LMDB state directory; empty: $home/state"),
    Setting(
        "state.max_map_mb",
        _positive_int,
        64 << 10,
        "MiB one partition's LMDB store may grow to; a commit that needs more stops with an error",
    ),
    Setting("snapshots.dir", _text, "", "snapshot directory; empty: $home/snapshots"),
    Setting(
        "recovery.parallel_min_events",
        _non_negative_int,
        20_000,
        "recover in two processes when at least this many events are to be replayed (0: always)",
    ),
    Setting(
        "recovery.retry_max_seconds",
        _positive_int,
        30,
        "the service retries a recovery that failed for a passing reason (an unreachable broker) "
        "after 0.1 s, doubling up to this interval",
    ),
    Setting("snapshots.every_events", _non_negative_int, 100_000, "snapshot every N events (0: off)"),
    Setting("snapshots.every_seconds", _non_negative_int, 300, "snapshot every T seconds (0: off)"),
    Setting("snapshots.keep_last", _positive_int, 5, "newest snapshots always kept"),
    Setting("snapshots.keep_hourly", _non_negative_int, 24, "hourly snapshots kept beyond those"),
    Setting("snapshots.keep_daily", _non_negative_int, 7, "daily snapshots kept beyond those"),
    Setting(
        "snapshots.remote.bucket",
        _text,
        "",
        "bucket of the remote (S3-compatible) snapshot store; empty: snapshots stay on this host only",
    ),
    Setting("snapshots.remote.prefix", _text, "rewind", "key prefix of every snapshot object in the bucket"),
    Setting(
        "snapshots.remote.endpoint",
        _text,
        "",
        "S3 endpoint URL (MinIO, Ceph, SeaweedFS, S3Proxy); empty: AWS; 'local': the `rewind s3` server",
    ),
    Setting("snapshots.remote.region", _text, "us-east-1", "region the S3 requests are signed for"),
    Setting("snapshots.remote.verify_tls", _boolean, True, "check the endpoint's TLS certificate"),
    Setting(
        "snapshots.remote.bandwidth_mb",
        _non_negative_int,
        0,
        "upload and download bandwidth bound in MB/s per transfer (0: unbounded)",
    ),
    Setting("snapshots.remote.part_mb", _positive_int, 16, "multipart part size in MB"),
    Setting(
        "snapshots.remote.queue_max",
        _positive_int,
        4,
        "snapshots waiting for upload at most; past it the oldest waiting one is dropped",
    ),
    Setting(
        "snapshots.remote.retry_max_seconds",
        _positive_int,
        15,
        "longest wait between two attempts of a failed upload (doubling from 1 s)",
    ),
    Setting("snapshots.remote.keep_last", _positive_int, 2, "newest remote snapshots always kept"),
    Setting("snapshots.remote.keep_hourly", _non_negative_int, 24, "hourly remote snapshots kept"),
    Setting("snapshots.remote.keep_daily", _non_negative_int, 7, "daily remote snapshots kept"),
    Setting("s3.port", _port, 0, "port of the local S3 server (`rewind s3 start`); 0: a free one"),
    Setting("s3.access_key_id", _text, "rewind-local", "access key the local S3 server accepts"),
    Setting("s3.secret_access_key", _text, "rewind-local-secret", "secret key the local S3 server accepts"),
    Setting("projector.group", _name, "rewind-projector", "consumer group the projector commits to"),
    Setting("projector.batch_events", _positive_int, 5000, "most events per LMDB transaction"),
    Setting("projector.batch_ms", _positive_int, 100, "longest wait for a batch, milliseconds"),
    Setting("projector.anomaly_policy", _policy, "quarantine", "quarantine (record, go on) or halt"),
    Setting("projector.durable", _boolean, True, "fsync every LMDB commit"),
    Setting("http.host", _text, "127.0.0.1", "address the HTTP API binds to"),
    Setting("http.port", _port, 8080, "port of the HTTP API (0: a free one)"),
    Setting("http.token", _text, "", "bearer token required by mutating API calls"),
    Setting(
        "http.read_token",
        _text,
        "",
        "bearer token every API call needs when set (http.token is accepted too); required when "
        "http.host is not a loopback address",
    ),
    Setting(
        "http.header_timeout_seconds",
        _positive_int,
        10,
        "the HTTP API closes a connection that has not sent a whole request line and headers this "
        "long after it opened or started the request",
    ),
    Setting(
        "http.keepalive_seconds",
        _positive_int,
        75,
        "the HTTP API closes a keep-alive connection idle for this long",
    ),
    Setting(
        "http.readers",
        _non_negative_int,
        2,
        "processes that build the answers of the /state routes and /config beside the projector's "
        "interpreter (0: built on a thread of the service itself)",
    ),
    Setting(
        "http.front",
        _boolean,
        True,
        "serve the HTTP API from a front process of its own that answers /live, the state reads, "
        "/metrics and /lag itself and forwards the rest to the service (false: serve it from a thread "
        "of the service's process, where http.readers build the state answers)",
    ),
    Setting(
        "health.stall_seconds",
        _positive_int,
        60,
        "/health fails its projector check when the last lag evaluation saw lag and the projector "
        "applied nothing for this long (or has not run for this long)",
    ),
    Setting(
        "health.min_free_mb",
        _non_negative_int,
        512,
        "/health fails its disk check when the state or snapshot directory's file system has less "
        "free space than this, in MiB (0: never)",
    ),
    Setting(
        "health.snapshot_age_factor",
        _positive_int,
        3,
        "/health fails its snapshots check when the newest snapshot is older than this many times "
        "snapshots.every_seconds",
    ),
    Setting("lag.ready_max_seconds", _non_negative_int, 30, "/ready is false above this lag"),
    Setting("lag.window_seconds", _positive_int, 60, "sliding window for lag status"),
    Setting("reconcile.positions.account", _column, "account", "positions statement: the account column"),
    Setting("reconcile.positions.symbol", _column, "symbol", "positions statement: the symbol column"),
    Setting("reconcile.positions.quantity", _column, "quantity", "positions statement: the quantity column"),
    Setting(
        "reconcile.positions.avg_price",
        _column,
        "avg_price",
        "positions statement: the average price column (optional in a statement)",
    ),
    Setting(
        "reconcile.as_of_column",
        _column,
        "as_of",
        "any statement: the column (or JSON key) with the statement's time",
    ),
    Setting("reconcile.balances.account", _column, "account", "balances statement: the account column"),
    Setting("reconcile.balances.currency", _column, "currency", "balances statement: the currency column"),
    Setting("reconcile.balances.amount", _column, "amount", "balances statement: the amount column"),
    Setting("reconcile.orders.order_id", _column, "order_id", "open-orders statement: the order id column"),
    Setting(
        "reconcile.orders.remaining",
        _column,
        "remaining",
        "open-orders statement: the remaining (open) quantity column",
    ),
    Setting("reconcile.tolerance.quantity", _non_negative_decimal, "0", "position quantities may differ by"),
    Setting(
        "reconcile.tolerance.avg_price", _non_negative_decimal, "0.000001", "average prices may differ by"
    ),
    Setting("reconcile.tolerance.balance", _non_negative_decimal, "0.01", "balances may differ by"),
    Setting(
        "reconcile.tolerance.remaining", _non_negative_decimal, "0", "open orders' remaining may differ by"
    ),
    Setting(
        "reconcile.instruments",
        _instrument_tolerances,
        "",
        "tolerances per symbol or currency, overriding reconcile.tolerance.*: a table "
        '[reconcile.instruments.SYMBOL] field = "0.01", or SYMBOL.field=0.01,... in the environment',
    ),
    Setting(
        "reconcile.drop_dir",
        _text,
        "",
        "folder the service reconciles statements from; empty: $home/reconcile",
    ),
    Setting(
        "reconcile.every_seconds",
        _non_negative_int,
        0,
        "the service reconciles the newest statement of reconcile.drop_dir this often (0: off)",
    ),
    Setting("cluster.enabled", _boolean, False, "run as one member of a cluster (a Kafka consumer group)"),
    Setting("cluster.group", _name, "rewind-cluster", "consumer group the cluster's members join"),
    Setting(
        "cluster.session_timeout_ms",
        _positive_int,
        6000,
        "a member silent this long leaves the cluster (floor: the broker's group.min.session.timeout.ms)",
    ),
    Setting(
        "cluster.heartbeat_ms",
        _positive_int,
        250,
        "how often a member tells the group it is alive; also how soon it hears of a rebalance",
    ),
    Setting(
        "cluster.max_stall_ms",
        _positive_int,
        300000,
        "a member whose projector takes no batch for this long leaves the group, and its partitions "
        "move to live members (at least cluster.session_timeout_ms)",
    ),
    Setting(
        "cluster.group_protocol",
        _group_protocol,
        "classic",
        "classic (join and sync rounds, cooperative-sticky) or consumer (KIP-848: the coordinator "
        "assigns at the members' heartbeats)",
    ),
    Setting(
        "cluster.standby_replicas",
        _non_negative_int,
        1,
        "other members that keep a warm copy of each partition (used once there are 2 members or more)",
    ),
    Setting(
        "cluster.advertised_url",
        _text,
        "",
        "the URL other members send queries to; empty: this instance's own HTTP address",
    ),
    Setting(
        "recovery.require_reconciliation",
        _boolean,
        False,
        "after a recovery, /ready stays 503 until a reconciliation (POST /reconcile or the drop folder) "
        "finds no breaks",
    ),
)
_BY_KEY = {s.key: s for s in SETTINGS}


def setting(key: str) -> Setting:
    """The declaration of setting ``key``: its environment variable, default and help."""
    return _BY_KEY[key]


@dataclass(frozen=True)
class Settings:
    """The effective configuration, with where each value came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    kafka_properties: Mapping[str, str] = field(default_factory=dict)
    config_file: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def home(self) -> Path:
        return Path(self.values["home"]).expanduser()

    @property
    def state_dir(self) -> Path:
        return Path(self.values["state.dir"] or self.home / "state").expanduser()

    @property
    def snapshot_dir(self) -> Path:
        return Path(self.values["snapshots.dir"] or self.home / "snapshots").expanduser()

    @property
    def events_topic(self) -> str:
        return str(self.values["topics.events"])

    @property
    def config_topic(self) -> str:
        return str(self.values["topics.config"])

    @property
    def deadletter_topic(self) -> str:
        return str(self.values["topics.deadletter"])

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers: configured, or else the address the local broker wrote."""
        configured = str(self.values["kafka.bootstrap"])
        if configured:
            return configured
        written = self.home / BOOTSTRAP_FILE_NAME
        if written.is_file():
            return written.read_text().strip()
        raise ConfigError(
            f"no Kafka bootstrap address: kafka.bootstrap is not set and {written} does not exist",
            "start the local broker with `rewind kafka start`, or point rewind at a cluster with "
            "REWIND_BOOTSTRAP=host:port (or --bootstrap, or kafka.bootstrap in rewind.toml)",
        )

    def client_config(self, **overrides: str | int | float | bool) -> ClientConfig:
        """librdkafka configuration for a client: bootstrap, pass-through properties, overrides."""
        config: ClientConfig = {"bootstrap.servers": self.bootstrap}
        config.update(self.kafka_properties)
        config.update(overrides)
        return config

    def as_environ(self) -> dict[str, str]:
        """These settings as REWIND_* variables: what a child ``rewind`` command needs to see the
        same configuration (secrets included, so pass it only to children)."""
        env = {
            setting.env: str(self.values[setting.key]).lower()
            if isinstance(self.values[setting.key], bool)
            else str(self.values[setting.key])
            for setting in SETTINGS
        }
        env["REWIND_BOOTSTRAP"] = self.bootstrap
        for name, value in self.kafka_properties.items():
            env["REWIND_KAFKA_" + name.replace(".", "_").upper()] = value
        return env

    def child_environ(self) -> dict[str, str]:
        """The environment of a child process that must run on exactly these settings: this one's,
        with :meth:`as_environ` on top and no ``REWIND_CONFIG`` (the values are all there already)."""
        inherited = {k: v for k, v in os.environ.items() if k != "REWIND_CONFIG"}
        return inherited | self.as_environ()

    def masked(self) -> dict[str, object]:
        """Every effective value with its source, secrets masked: for `rewind config show`."""
        shown: dict[str, object] = {}
        for key, value in sorted(self.values.items()):
            shown[key] = {"value": _mask(key, value), "source": self.sources[key]}
        for name, value in sorted(self.kafka_properties.items()):
            shown[f"kafka.properties.{name}"] = {
                "value": _mask(name, value),
                "source": self.sources.get(f"kafka.properties.{name}", "?"),
            }
        return shown


def _mask(key: str, value: object) -> object:
    if value and any(marker in key.lower() for marker in _SECRET_MARKERS):
        return "********"
    return value


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if key in ("kafka.properties", "reconcile.instruments"):
            flat[key] = value
        elif isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


OTHER_VARIABLES = frozenset(
    {
        "REWIND_BOOTSTRAP",
        "REWIND_CONFIG",
        "REWIND_PURE_PYTHON",
        "REWIND_NATIVE",
        "REWIND_CRASHPOINT",
        "REWIND_CACHE",
        "REWIND_RUN_RATE",
        "REWIND_TEST_BOOTSTRAP",
    }
)
"""REWIND_* variables that are not settings: the bootstrap shorthand, the config file, the build
and test switches, and ``make run``'s simulated rate (docs/runbook.md)."""


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for every REWIND_* variable rewind does not read, naming the closest one it does.

    A misspelled variable would otherwise be ignored without a word. ``REWIND_KAFKA_*`` variables
    are librdkafka properties, checked by the Kafka client itself.
    """
    known = {s.env for s in SETTINGS} | OTHER_VARIABLES
    warnings = []
    for name in sorted(environ):
        if not name.startswith("REWIND_") or name in known or name.startswith("REWIND_KAFKA_"):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else "; `rewind config show` lists the settings"
        warnings.append(f"warning: {name} is not a rewind variable and is ignored{hint}")
    return warnings


def _closest(key: str) -> str:
    candidates = [k for k in _BY_KEY if k.split(".")[-1] == key.split(".")[-1]]
    return f" (did you mean {candidates[0]}?)" if candidates else ""


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return _flatten(tomllib.load(handle))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", "fix the syntax at that line") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", "check the path") from exc


def _find_config_file(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if environ.get("REWIND_CONFIG"):
        return Path(environ["REWIND_CONFIG"])
    default = Path(CONFIG_FILE_NAME)
    return default if default.is_file() else None


def _parse_property(text: str, origin: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"{origin}: '{text}' is not a librdkafka property", "write it as name=value")
    return name.strip(), value


def load_settings(
    flags: Mapping[str, object] | None = None,
    kafka_flags: tuple[str, ...] = (),
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the TOML file, the environment and flags, validating every value.

    ``flags`` maps dotted keys to values given on the command line (``None`` means not given).
    ``kafka_flags`` are ``name=value`` librdkafka properties from ``-X``.
    """
    env = os.environ if environ is None else environ
    if environ is None:
        for warning in unknown_variables(env):
            print(warning, file=sys.stderr)
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    sources: dict[str, str] = {s.key: "default" for s in SETTINGS}
    properties: dict[str, str] = {}

    path = _find_config_file(config_file, env)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", "create it or drop --config")
        for key, raw in _read_file(path).items():
            if key == "kafka.properties":
                if not isinstance(raw, dict):
                    raise ConfigError(f"{path}: [kafka.properties] must be a table of name = value")
                for name, value in raw.items():
                    properties[name] = str(value).lower() if isinstance(value, bool) else str(value)
                    sources[f"kafka.properties.{name}"] = str(path)
                continue
            _set(values, sources, key, raw, str(path))

    for name, raw in sorted(env.items()):
        if name == "REWIND_BOOTSTRAP":
            _set(values, sources, "kafka.bootstrap", raw, "env REWIND_BOOTSTRAP")
        elif name.startswith("REWIND_KAFKA_") and name != "REWIND_KAFKA_BOOTSTRAP":
            if name in ("REWIND_KAFKA_VERSION",):
                continue
            prop = name.removeprefix("REWIND_KAFKA_").lower().replace("_", ".")
            properties[prop] = raw
            sources[f"kafka.properties.{prop}"] = f"env {name}"
    for setting in SETTINGS:
        if setting.env in env:
            _set(values, sources, setting.key, env[setting.env], f"env {setting.env}")

    for key, raw in (flags or {}).items():
        if raw is not None:
            _set(values, sources, key, raw, "flag")
    for text in kafka_flags:
        name, value = _parse_property(text, "-X")
        properties[name] = value
        sources[f"kafka.properties.{name}"] = "flag -X"

    return Settings(values=values, sources=sources, kafka_properties=properties, config_file=path)


def _set(values: dict[str, Any], sources: dict[str, str], key: str, raw: object, origin: str) -> None:
    setting = _BY_KEY.get(key)
    if setting is None:
        raise ConfigError(
            f"{origin}: unknown setting '{key}'{_closest(key)}",
            "see `rewind config show` for every setting",
        )
    try:
        values[key] = setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{origin}: {key} {exc}, got {raw!r}", f"set {key} to a valid value ({setting.help})"
        ) from exc
    sources[key] = origin
