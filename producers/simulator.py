"""A deterministic trading day: realistic event flow for demos, tests and benchmarks.

:func:`simulate` is a pure generator of event dicts. Everything in it, ``event_id`` included, comes
from one ``random.Random`` seeded by ``seed`` and ``start_time``, and a simulated clock that starts
at ``start_time`` (microseconds) and only moves forward, so the same parameters always give the same
events, byte for byte, on every run and machine (of the same Python version). No wall clock, no
``uuid4``, no set iteration.

The flow: at the start of day every account gets a cash deposit and ``START_OF_DAY`` positions; then
orders are submitted and live their lifecycles (accepted, partially and fully filled, replaced,
canceled, rejected, expired; fills may overtake the acknowledgement), with occasional balance
changes, reconciliation adjustments and desk-wide ``ConfigChanged`` events. Without anomalies every
event is valid for the fold's state machine (``docs/state.md``). With ``anomaly_rate`` > 0, that
fraction of the events after the start of day are deliberate anomalies: duplicated fills (same
``exec_id``), duplicated orders (same ``order_id`` and content), fills for unknown orders, and
overfills. Anomalies never change the simulator's own view of the orders, just as the fold ignores
them.

:func:`run_simulation` sends the events through an :class:`EventProducer` (``emit_async``), optionally
paced to a rate; pacing decides only *when* an event is sent, never *what* it contains.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from producers import builders
from producers.event_producer import EventProducer

Event = dict[str, Any]

DEFAULT_START_TIME: Final = 1_767_254_400_000_000  # 2026-01-01T08:00:00Z
SOURCE: Final = "simulator"
LOT: Final = 10 * 10**8  # 10 shares, scale 8
TICK: Final = 1_000_000  # 0.01, scale 8
VENUES: Final = ("XNAS", "XNYS", "ARCX", "BATS")
_TICKERS: Final = (
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "BRK.B", "JPM", "V",
    "XOM", "UNH", "JNJ", "WMT", "MA", "PG", "HD", "CVX", "MRK", "ABBV",
    "KO", "PEP", "COST", "AVGO", "ADBE", "CSCO", "CRM", "MCD", "TMO", "ACN",
    "NFLX", "AMD", "INTC", "QCOM", "TXN", "ORCL", "IBM", "NKE", "DIS", "BA",
)  # fmt: skip
_CONFIG_KEYS: Final = (
    ("risk.max_gross_exposure", "DECIMAL"),
    ("risk.max_order_quantity", "INTEGER"),
    ("trading.enabled", "BOOLEAN"),
    ("desk.note", "STRING"),
)
_NOTES: Final = ("normal session", "fomc at 14:00", "reduce risk into close", "holiday hours")
_ANOMALIES: Final = ("duplicate_fill", "duplicate_order", "unknown_order_fill", "overfill")
_MAX_OPEN_PER_ACCOUNT: Final = 8
_RECENT: Final = 64


@dataclass(frozen=True)
class SimulationParams:
    """What to simulate. ``start_time`` is microseconds since the epoch; ``anomaly_rate`` in [0, 1]."""

    events: int
    accounts: int = 10
    symbols: int = 20
    seed: int = 0
    start_time: int = DEFAULT_START_TIME
    anomaly_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ValueError(f"events must be >= 0, got {self.events}")
        if not 1 <= self.accounts <= 100_000:
            raise ValueError(f"accounts must be between 1 and 100000, got {self.accounts}")
        if not 1 <= self.symbols <= 10_000:
            raise ValueError(f"symbols must be between 1 and 10000, got {self.symbols}")
        if not 0.0 <= self.anomaly_rate <= 1.0:
            raise ValueError(f"anomaly_rate must be between 0 and 1, got {self.anomaly_rate}")
        if not builders.MIN_OCCURRED_AT <= self.start_time < builders.MAX_OCCURRED_AT - 10**12:
            raise ValueError(
                "start_time must be microseconds since the epoch between 1973 and 2100, "
                f"got {self.start_time}"
            )


class _Order:
    __slots__ = ("account", "filled", "limit_price", "quantity", "side", "status", "submitted", "symbol")

    def __init__(self, submitted: Event) -> None:
        self.submitted = submitted
        self.account: str = submitted["account_id"]
        self.symbol: str = submitted["symbol"]
        self.side: str = submitted["side"]
        self.limit_price: int | None = submitted["limit_price"]
        self.quantity: int = submitted["quantity"]
        self.filled = 0
        self.status = "NEW"

    @property
    def order_id(self) -> str:
        return str(self.submitted["order_id"])

    @property
    def leaves(self) -> int:
        return self.quantity - self.filled


class _Day:
    """The simulator's own view of the market and of every open order."""

    def __init__(self, params: SimulationParams, config_versions: Mapping[str, int]) -> None:
        self.params = params
        # Seeded by both: two days with one seed but different start times get different ids.
        self.rng = random.Random(f"rewind-simulator:{params.seed}:{params.start_time}")
        self.clock = params.start_time
        self.tag = f"{self.rng.getrandbits(32):08x}"
        self.accounts = [f"ACC-{i:04d}" for i in range(1, params.accounts + 1)]
        self.symbols = [_TICKERS[i] if i < len(_TICKERS) else f"SYM{i:04d}" for i in range(params.symbols)]
        self.prices = {s: self.rng.randint(500, 50_000) * TICK for s in self.symbols}
        self.open: list[_Order] = []
        self.recent_fills: list[Event] = []
        self.recent_submits: list[Event] = []
        self.config_versions = dict(config_versions)
        self.counter = itertools.count(1)

    def event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def tick(self) -> int:
        self.clock += self.rng.randint(100, 20_000)
        return self.clock

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{self.tag}-{next(self.counter):07d}"

    def common(self, account: str) -> dict[str, Any]:
        return {
            "account_id": account,
            "event_id": self.event_id(),
            "occurred_at": self.tick(),
            "source": SOURCE,
        }

    # -- start of day ---------------------------------------------------------------------------

    def start_of_day(self) -> Iterator[Event]:
        for account in self.accounts:
            yield builders.balance_changed(
                **self.common(account),
                currency="USD",
                amount=self.rng.randint(100, 1_000) * 10_000 * 10**8,
                reason="DEPOSIT",
            )
            for symbol in self.rng.sample(self.symbols, min(3, len(self.symbols))):
                yield builders.position_adjusted(
                    **self.common(account),
                    symbol=symbol,
                    mode="SET",
                    quantity=self.rng.choice((1, -1)) * self.rng.randint(1, 100) * LOT,
                    price=self.prices[symbol],
                    reason="START_OF_DAY",
                )

    # -- intraday flow --------------------------------------------------------------------------

    def intraday(self) -> Iterator[Event]:
        rng = self.rng
        while True:
            if self.params.anomaly_rate and rng.random() < self.params.anomaly_rate:
                yield self.anomaly()
                continue
            cap = _MAX_OPEN_PER_ACCOUNT * len(self.accounts)
            if not self.open or rng.random() < (0.3 if len(self.open) < cap else 0.02):
                yield self.submit()
                continue
            roll = rng.random()
            if roll < 0.02:
                yield self.balance_change()
            elif roll < 0.025:
                yield self.config_change()
            elif roll < 0.028:
                yield self.reconciliation()
            else:
                yield self.advance(self.open[rng.randrange(len(self.open))])

    def move_price(self, symbol: str) -> int:
        price = max(TICK, self.prices[symbol] + self.rng.randint(-3, 3) * TICK)
        self.prices[symbol] = price
        return price

    def submit(self) -> Event:
        rng = self.rng
        symbol = rng.choice(self.symbols)
        side = rng.choice(("BUY", "SELL"))
        order_type = "LIMIT" if rng.random() < 0.85 else "MARKET"
        price = self.move_price(symbol)
        limit = None
        if order_type == "LIMIT":
            offset = rng.randint(0, 5) * TICK
            limit = price - offset if side == "BUY" else price + offset
            limit = max(TICK, limit)
        tif = rng.choices(("DAY", "GTC", "IOC", "FOK"), weights=(70, 15, 10, 5))[0]
        event = builders.order_submitted(
            **self.common(rng.choice(self.accounts)),
            order_id=self.next_id("ORD"),
            client_order_id=self.next_id("CL"),
            symbol=symbol,
            side=side,
            order_type=order_type,
            limit_price=limit,
            quantity=rng.randint(1, 50) * LOT,
            time_in_force="DAY" if order_type == "MARKET" else tif,
        )
        self.open.append(_Order(event))
        self.remember(self.recent_submits, event)
        return event

    def advance(self, order: _Order) -> Event:
        rng = self.rng
        roll = rng.random()
        tif = order.submitted["time_in_force"]
        if order.status == "NEW":
            if roll < 0.85:
                order.status = "ACCEPTED"
                return self.lifecycle(builders.order_accepted, order)
            if roll < 0.90:
                return self.close(order, self.reject(order, "price band"))
            if roll < 0.95:
                return self.fill(order)
            return self.close(order, self.lifecycle(builders.order_canceled, order, reason="user request"))
        if tif in ("IOC", "FOK"):
            if order.filled == 0 and roll < 0.7:
                return self.fill(order, full=tif == "FOK")
            reason = "IOC remainder" if tif == "IOC" else "FOK not fillable"
            return self.close(order, self.lifecycle(builders.order_canceled, order, reason=reason))
        if roll < 0.60:
            return self.fill(order)
        if roll < 0.72:
            return self.replace(order)
        if roll < 0.85:
            return self.close(order, self.lifecycle(builders.order_canceled, order, reason=None))
        if roll < 0.88 and order.status == "ACCEPTED":
            return self.close(order, self.reject(order, "risk check"))
        if roll < 0.93:
            return self.close(order, self.lifecycle(builders.order_expired, order))
        return self.fill(order)

    def lifecycle(self, build: Callable[..., Event], order: _Order, **fields: Any) -> Event:
        return build(**self.common(order.account), order_id=order.order_id, **fields)

    def reject(self, order: _Order, reason: str) -> Event:
        code = self.rng.choice(("0", "3", "99", None))
        return self.lifecycle(builders.order_rejected, order, reason=reason, reject_code=code)

    def close(self, order: _Order, event: Event) -> Event:
        self.open.remove(order)
        return event

    def fill_price(self, order: _Order) -> int:
        ticks = self.rng.randint(0, 2) * TICK
        if order.limit_price is None:
            return max(TICK, self.move_price(order.symbol) + self.rng.choice((-1, 1)) * ticks)
        price = order.limit_price - ticks if order.side == "BUY" else order.limit_price + ticks
        return max(TICK, price)

    def fill(self, order: _Order, *, full: bool = False) -> Event:
        rng = self.rng
        lots = order.leaves // LOT
        whole = full or lots <= 1 or rng.random() < 0.4
        quantity = order.leaves if whole else rng.randint(1, lots - 1) * LOT
        event = self.make_fill(order.account, order.order_id, quantity, self.fill_price(order))
        order.filled += quantity
        if order.filled == order.quantity:
            self.open.remove(order)
        else:
            order.status = "PARTIALLY_FILLED"
        self.remember(self.recent_fills, event)
        return event

    def make_fill(self, account: str, order_id: str, quantity: int, price: int) -> Event:
        maker = self.rng.random() < 0.4
        return builders.fill(
            **self.common(account),
            exec_id=self.next_id("EX"),
            order_id=order_id,
            quantity=quantity,
            price=price,
            fee=0 if maker else quantity * 3 // 1000,
            liquidity="MAKER" if maker else "TAKER",
            venue=self.rng.choice(VENUES),
        )

    def replace(self, order: _Order) -> Event:
        rng = self.rng
        new_quantity = None
        new_limit = None
        if order.limit_price is None or rng.random() < 0.5:
            new_quantity = order.filled + rng.randint(1, 30) * LOT
        if order.limit_price is not None and (new_quantity is None or rng.random() < 0.5):
            new_limit = max(TICK, order.limit_price + rng.randint(-3, 3) * TICK)
        event = self.lifecycle(
            builders.order_replaced, order, new_limit_price=new_limit, new_quantity=new_quantity
        )
        if new_quantity is not None:
            order.quantity = new_quantity
        if new_limit is not None:
            order.limit_price = new_limit
        return event

    def balance_change(self) -> Event:
        rng = self.rng
        reason = rng.choice(("DEPOSIT", "WITHDRAWAL", "FEE", "INTEREST", "ADJUSTMENT"))
        amount = rng.randint(1, 100_000) * 10**6
        if reason in ("WITHDRAWAL", "FEE") or (reason == "ADJUSTMENT" and rng.random() < 0.5):
            amount = -amount
        currency = "USD" if rng.random() < 0.9 else "EUR"
        return builders.balance_changed(
            **self.common(rng.choice(self.accounts)), currency=currency, amount=amount, reason=reason
        )

    def config_change(self) -> Event:
        rng = self.rng
        key, value_type = rng.choice(_CONFIG_KEYS)
        version = self.config_versions.get(key, 0) + 1
        self.config_versions[key] = version
        value: bool | int | str = {
            "DECIMAL": rng.randint(1, 50) * 1_000_000 * 10**8,
            "INTEGER": rng.randint(100, 10_000),
            "BOOLEAN": rng.random() < 0.9,
            "STRING": rng.choice(_NOTES),
        }[value_type]
        return builders.config_changed(
            **self.common(builders.DESK_WIDE),
            key=key,
            value_type=value_type,
            value=value,
            version=version,
            changed_by=SOURCE,
        )

    def reconciliation(self) -> Event:
        rng = self.rng
        symbol = rng.choice(self.symbols)
        return builders.position_adjusted(
            **self.common(rng.choice(self.accounts)),
            symbol=symbol,
            mode="DELTA",
            quantity=rng.choice((1, -1)) * rng.randint(1, 10) * LOT,
            price=self.prices[symbol],
            reason="RECONCILIATION",
        )

    def anomaly(self) -> Event:
        rng = self.rng
        kind = rng.choice(_ANOMALIES)
        if kind == "duplicate_fill" and self.recent_fills:
            original = rng.choice(self.recent_fills)
            return original | {"event_id": self.event_id(), "occurred_at": self.tick()}
        if kind == "duplicate_order" and self.recent_submits:
            original = rng.choice(self.recent_submits)
            return original | {"event_id": self.event_id(), "occurred_at": self.tick()}
        if kind == "overfill" and self.open:
            order = self.open[rng.randrange(len(self.open))]
            return self.make_fill(order.account, order.order_id, order.leaves + LOT, self.fill_price(order))
        account = rng.choice(self.accounts)
        return self.make_fill(
            account, self.next_id("ORD-UNKNOWN"), LOT, self.prices[rng.choice(self.symbols)]
        )

    def remember(self, recent: list[Event], event: Event) -> None:
        recent.append(event)
        if len(recent) > _RECENT:
            del recent[0]


def simulate(params: SimulationParams, config_versions: Mapping[str, int] | None = None) -> Iterator[Event]:
    """Exactly ``params.events`` events of a simulated trading day, deterministically.

    ``config_versions`` are the versions config keys already have (e.g. read from the config topic),
    so the day's ``ConfigChanged`` events continue from them instead of being stale.
    """
    day = _Day(params, config_versions or {})
    return itertools.islice(itertools.chain(day.start_of_day(), day.intraday()), params.events)


@dataclass
class SimulationSummary:
    """What :func:`run_simulation` sent: counts by type and the last offset of every partition."""

    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    last_offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "by_type": dict(sorted(self.by_type.items())),
            "last_offsets": {
                t: {str(p): o for p, o in sorted(ps.items())} for t, ps in self.last_offsets.items()
            },
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events / self.seconds) if self.seconds > 0 else None,
        }


def run_simulation(
    params: SimulationParams,
    producer: EventProducer,
    *,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 1000,
    config_versions: Mapping[str, int] | None = None,
) -> SimulationSummary:
    """Produce :func:`simulate`'s events with ``emit_async``, flush, and summarize.

    ``rate`` (events per second) paces the sending; ``None`` sends as fast as possible.
    ``progress`` is called with the number of events sent so far every ``progress_every`` events
    and once at the end. ``config_versions`` as for :func:`simulate`. Raises like
    :meth:`EventProducer.flush` if any event was not delivered.
    """
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0 events per second, got {rate}")
    summary = SimulationSummary()
    started = time.monotonic()
    offsets_before = dict(producer.last_offsets)
    for index, event in enumerate(simulate(params, config_versions)):
        if rate is not None:
            while (ahead := started + index / rate - time.monotonic()) > 0:
                producer.poll(min(ahead, 0.1))
        producer.emit_async(event)
        summary.by_type[event["event_type"]] = summary.by_type.get(event["event_type"], 0) + 1
        summary.events += 1
        if progress is not None and summary.events % progress_every == 0:
            progress(summary.events)
    producer.flush()
    summary.seconds = time.monotonic() - started
    if progress is not None:
        progress(summary.events)
    for (topic, partition), offset in producer.last_offsets.items():
        if offsets_before.get((topic, partition)) != offset:
            summary.last_offsets.setdefault(topic, {})[partition] = offset
    return summary
