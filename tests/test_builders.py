"""Builders refuse every invalid field by name; human decimals convert exactly."""

from __future__ import annotations

import copy
import inspect
import pickle
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers import builders
from producers.acceptance import ACCEPT
from producers.fixed_point import format_decimal, parse_decimal, to_fixed
from producers.simulator import SimulationParams, simulate
from schemas.codec import decode, default_codec, encode

T0 = 1_767_225_600_000_000
VALID: dict[str, tuple[Callable[..., dict[str, Any]], dict[str, Any]]] = {
    "OrderSubmitted": (
        builders.order_submitted,
        {
            "account_id": "ACC-1",
            "order_id": "O-1",
            "client_order_id": "C-1",
            "symbol": "AAPL",
            "side": "BUY",
            "order_type": "LIMIT",
            "limit_price": "189.5",
            "quantity": 100 * 10**8,
            "time_in_force": "DAY",
            "source": "oms",
        },
    ),
    "OrderAccepted": (
        builders.order_accepted,
        {"account_id": "ACC-1", "order_id": "O-1", "occurred_at": T0, "source": "exchange:XNAS"},
    ),
    "OrderRejected": (
        builders.order_rejected,
        {"account_id": "ACC-1", "order_id": "O-1", "reason": "no", "occurred_at": T0, "source": "oms"},
    ),
    "OrderReplaced": (
        builders.order_replaced,
        {"account_id": "ACC-1", "order_id": "O-1", "new_quantity": "5", "occurred_at": T0, "source": "oms"},
    ),
    "OrderCanceled": (
        builders.order_canceled,
        {"account_id": "ACC-1", "order_id": "O-1", "occurred_at": T0, "source": "oms"},
    ),
    "OrderExpired": (
        builders.order_expired,
        {"account_id": "ACC-1", "order_id": "O-1", "occurred_at": T0, "source": "oms"},
    ),
    "Fill": (
        builders.fill,
        {
            "account_id": "ACC-1",
            "exec_id": "E-1",
            "order_id": "O-1",
            "quantity": "10",
            "price": "189.49",
            "fee": "0.01",
            "liquidity": "TAKER",
            "venue": "XNAS",
            "occurred_at": T0,
            "source": "exchange:XNAS",
        },
    ),
    "PositionAdjusted": (
        builders.position_adjusted,
        {
            "account_id": "ACC-1",
            "symbol": "AAPL",
            "mode": "SET",
            "quantity": "-20",
            "price": "100",
            "reason": "START_OF_DAY",
            "source": "operator:alice",
        },
    ),
    "BalanceChanged": (
        builders.balance_changed,
        {"account_id": "ACC-1", "currency": "USD", "amount": "-5.25", "reason": "FEE", "source": "oms"},
    ),
    "ConfigChanged": (
        builders.config_changed,
        {
            "key": "risk.max_gross",
            "value_type": "DECIMAL",
            "value": "1000000.5",
            "version": 1,
            "changed_by": "operator:alice",
            "source": "operator:alice",
        },
    ),
}


@pytest.mark.parametrize("type_name", sorted(VALID))
def test_valid_events_encode_and_revalidate(type_name: str) -> None:
    build, kwargs = VALID[type_name]
    event = build(**kwargs)
    assert event["event_type"] == type_name
    assert decode(encode(event)) == event
    assert builders.validate_event(event) == event


@pytest.mark.parametrize("type_name", sorted(VALID))
def test_a_built_event_is_read_only_and_copies_are_plain_dicts(type_name: str) -> None:
    """The producer trusts a BuiltEvent without re-checking it, so nothing may change one."""
    build, kwargs = VALID[type_name]
    event = build(**kwargs)
    assert type(event) is builders.BuiltEvent
    before = dict(event)
    attempts: list[Callable[[], object]] = [
        lambda: event.__setitem__("account_id", "*"),
        lambda: event.__delitem__("event_id"),
        lambda: event.update(account_id="*"),
        lambda: event.setdefault("extra", 1),
        lambda: event.pop("event_id"),
        lambda: event.popitem(),
        lambda: event.clear(),
        lambda: event.__ior__({"account_id": "*"}),
    ]
    for attempt in attempts:
        with pytest.raises(TypeError, match=f"a built {type_name} is read-only; to change a field"):
            attempt()
    assert event == before
    assert builders.validate_event(event) is event
    for copied in (
        dict(event),
        {**event},
        event | {},
        copy.copy(event),
        copy.deepcopy(event),
        pickle.loads(pickle.dumps(event)),
    ):
        assert type(copied) is dict and copied == event
    changed = dict(event)
    changed["occurred_at"] = 0
    with pytest.raises(ValueError, match=f"{type_name}.occurred_at"):
        builders.validate_event(changed)


def test_human_decimals_become_scale_8_integers() -> None:
    build, kwargs = VALID["Fill"]
    event = build(**kwargs)
    assert (event["quantity"], event["price"], event["fee"]) == (10 * 10**8, 18_949_000_000, 1_000_000)


INVALID = [
    ("Fill", {"quantity": 0}, "Fill.quantity must be > 0 (scale-8 integer), got 0"),
    ("Fill", {"price": -1}, "Fill.price must be > 0 (scale-8 integer), got -1"),
    ("Fill", {"fee": "-0.01"}, "Fill.fee must be >= 0"),
    ("Fill", {"price": 12.5}, "Fill.price must be a scale-8 integer or a decimal string, got float"),
    ("Fill", {"quantity": "1.000000001"}, "Fill.quantity has more than 8 decimal places"),
    ("Fill", {"quantity": True}, "Fill.quantity must be a scale-8 integer"),
    ("Fill", {"liquidity": "maker"}, "Fill.liquidity must be one of MAKER, TAKER, got 'maker'"),
    ("Fill", {"exec_id": ""}, "Fill.exec_id must be a non-empty string"),
    ("Fill", {"order_id": " O-1"}, "Fill.order_id must not start or end with whitespace"),
    ("Fill", {"occurred_at": T0 // 1000}, "Fill.occurred_at must be microseconds"),
    ("Fill", {"occurred_at": None}, "Fill.occurred_at is required"),
    ("Fill", {"venue": "xnas"}, "Fill.venue must be an ISO 10383 MIC"),
    ("Fill", {"event_id": "not-a-uuid"}, "Fill.event_id must be a lowercase canonical UUID"),
    ("Fill", {"account_id": "*"}, "Fill.account_id '*' is reserved"),
    ("Fill", {"source": ""}, "Fill.source must be a non-empty string"),
    ("OrderSubmitted", {"limit_price": None}, "OrderSubmitted.limit_price is required for a LIMIT order"),
    ("OrderSubmitted", {"order_type": "MARKET"}, "OrderSubmitted.limit_price must be None for a MARKET"),
    ("OrderSubmitted", {"side": "HOLD"}, "OrderSubmitted.side must be one of BUY, SELL"),
    ("OrderSubmitted", {"time_in_force": "GTD"}, "OrderSubmitted.time_in_force must be one of"),
    ("OrderSubmitted", {"symbol": "A B"}, "OrderSubmitted.symbol must not contain whitespace"),
    ("OrderReplaced", {"new_quantity": None}, "OrderReplaced.new_limit_price or OrderReplaced.new_quantity"),
    ("OrderReplaced", {"new_quantity": "0"}, "OrderReplaced.new_quantity must be > 0"),
    ("OrderRejected", {"reason": ""}, "OrderRejected.reason must be a non-empty string"),
    ("PositionAdjusted", {"mode": "DELTA", "quantity": 0}, "PositionAdjusted.quantity must be non-zero"),
    ("PositionAdjusted", {"reason": "GIFT"}, "PositionAdjusted.reason must be one of"),
    ("BalanceChanged", {"currency": "usd"}, "BalanceChanged.currency must be 3 upper-case letters"),
    ("BalanceChanged", {"amount": 0}, "BalanceChanged.amount must be non-zero"),
    ("ConfigChanged", {"value_type": "BOOLEAN", "value": 1}, "ConfigChanged.value must be true or false"),
    ("ConfigChanged", {"value_type": "INTEGER", "value": "5"}, "ConfigChanged.value must be a 64-bit"),
    ("ConfigChanged", {"value_type": "STRING", "value": 5}, "ConfigChanged.value must be a string"),
    ("ConfigChanged", {"version": 0}, "ConfigChanged.version must be an integer > 0"),
    ("ConfigChanged", {"account_id": "ACC-1"}, "ConfigChanged.account_id must be '*'"),
    ("ConfigChanged", {"key": "a key"}, "ConfigChanged.key must not contain whitespace"),
]


@pytest.mark.parametrize(("type_name", "change", "message"), INVALID)
def test_builders_refuse_invalid_fields_by_name(type_name: str, change: dict[str, Any], message: str) -> None:
    build, kwargs = VALID[type_name]
    with pytest.raises(ValueError) as caught:
        build(**(kwargs | change))
    assert str(caught.value).startswith(message), str(caught.value)


def test_position_set_to_flat_is_allowed() -> None:
    build, kwargs = VALID["PositionAdjusted"]
    assert build(**(kwargs | {"quantity": 0}))["quantity"] == 0


def test_config_values_by_type() -> None:
    build, kwargs = VALID["ConfigChanged"]
    assert build(**(kwargs | {"value_type": "BOOLEAN", "value": False}))["value"] is False
    assert build(**(kwargs | {"value_type": "INTEGER", "value": -3}))["value"] == -3
    assert build(**(kwargs | {"value_type": "STRING", "value": "halt"}))["value"] == "halt"
    assert build(**kwargs)["value"] == 100_000_050_000_000


def test_defaults_only_where_sensible() -> None:
    build, kwargs = VALID["OrderSubmitted"]
    first, second = build(**kwargs), build(**kwargs)
    assert first["event_id"] != second["event_id"]
    assert first["occurred_at"] > 10**15
    with pytest.raises(TypeError):
        builders.fill(**{k: v for k, v in VALID["Fill"][1].items() if k != "fee"})


def test_validate_event_requires_identity_and_refuses_unknown_fields() -> None:
    event = VALID["OrderAccepted"][0](**VALID["OrderAccepted"][1])
    with pytest.raises(ValueError, match=r"^OrderAccepted has no field 'extra'"):
        builders.validate_event(event | {"extra": 1})
    with pytest.raises(ValueError, match=r"^OrderAccepted\.event_id is required"):
        builders.validate_event({k: v for k, v in event.items() if k != "event_id"})
    with pytest.raises(ValueError, match=r"^OrderAccepted\.order_id is required"):
        builders.validate_event({k: v for k, v in event.items() if k != "order_id"})
    with pytest.raises(ValueError, match=r"^event_type must be one of"):
        builders.validate_event(event | {"event_type": "Trade"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12.50", 1_250_000_000),
        ("0.00000001", 1),
        ("-3", -300_000_000),
        ("1_000", 100_000_000_000),
        ("7.000000000", 700_000_000),
        (Decimal("1E+2"), 10_000_000_000),
    ],
)
def test_parse_decimal(text: str | Decimal, value: int) -> None:
    assert parse_decimal(text, field="x") == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.123456789", "more than 8 decimal places"),
        ("1e3", "must be a decimal number"),
        ("", "must be a decimal number"),
        ("12,5", "must be a decimal number"),
        ("92233720368.54775808", "out of range"),
        (Decimal("NaN"), "finite"),
    ],
)
def test_parse_decimal_refuses(text: str | Decimal, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_decimal(text, field="Fill.price")


@given(st.integers(-(2**63), 2**63 - 1))
def test_format_and_parse_are_inverse(value: int) -> None:
    assert parse_decimal(format_decimal(value), field="x") == value
    assert to_fixed(value, field="x") == value


# The producer's fused path: ACCEPT inside the codec's generated encoder (Codec.compiled_encoder)
# must only ever accept events the builders return unchanged, and must encode them as encode() does.
CODEC = default_codec()
CHECKED = {name: CODEC.compiled_encoder(name, accept) for name, accept in ACCEPT.items()}
SYMBOLS = {
    ("OrderSubmitted", "side"): builders.SIDES,
    ("OrderSubmitted", "order_type"): builders.ORDER_TYPES,
    ("OrderSubmitted", "time_in_force"): builders.TIMES_IN_FORCE,
    ("Fill", "liquidity"): builders.LIQUIDITY,
    ("PositionAdjusted", "mode"): builders.ADJUST_MODES,
    ("PositionAdjusted", "reason"): builders.ADJUST_REASONS,
    ("BalanceChanged", "reason"): builders.BALANCE_REASONS,
    ("ConfigChanged", "value_type"): builders.CONFIG_VALUE_TYPES,
}


def _typed(event: dict[str, Any]) -> list[tuple[str, type, Any]]:
    return sorted((name, type(value), value) for name, value in event.items())


def test_accept_covers_every_type_field_and_builder_parameter() -> None:
    assert set(ACCEPT) == set(builders.BUILDERS) == set(CODEC.catalog.type_names())
    for name, accept in ACCEPT.items():
        fields = CODEC.catalog.current(name).field_names()
        assert tuple(inspect.signature(accept).parameters) == fields
        assert set(inspect.signature(builders.BUILDERS[name]).parameters) == set(fields) - {"event_type"}
        assert CHECKED[name] is not None


def test_builder_symbols_are_the_schema_enums() -> None:
    """The checked encoder leaves enum fields to the schema: its symbols must be the builders'."""
    enums = {
        (version.type_name, field["name"]): tuple(field["type"]["symbols"])
        for version in CODEC.catalog
        for field in version.schema["fields"]
        if isinstance(field["type"], dict) and field["type"]["type"] == "enum"
    }
    assert enums == SYMBOLS


def test_every_simulated_event_takes_the_checked_path() -> None:
    for event in simulate(SimulationParams(events=5000, seed=3, anomaly_rate=0.05)):
        encoder = CHECKED[event["event_type"]]
        assert encoder is not None
        assert encoder(event) == encode(event), event


class _Text(str):
    pass


class _Number(int):
    pass


TRICKY_VALUES: list[Any] = [
    "",
    " ",
    "a b",
    "a\tb",
    "x\n",
    "\u00a0x",
    "x\u2028",
    "\x1cx",
    "x\x00",
    "*",
    "ACC-1",
    "O 1",
    "XNAS",
    "XNAS\n",
    "xnas",
    "XNA",
    "USD",
    "usd",
    "US",
    "USD\n",
    "12.5",
    "0",
    "reason ",
    "1C0F0A52-34B6-4D8E-9A51-0C3F4F6B7A01",
    "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a01",
    "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a011",
    "1c0f0a5234b64d8e9a510c3f4f6b7a01",
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    builders.MIN_OCCURRED_AT - 1,
    builders.MIN_OCCURRED_AT,
    builders.MAX_OCCURRED_AT - 1,
    builders.MAX_OCCURRED_AT,
    T0,
    True,
    False,
    None,
    1.5,
    Decimal("1"),
    "MAKER",
    "TAKER",
    "LIMIT",
    "MARKET",
    "DELTA",
    "SET",
    "BOOLEAN",
    "INTEGER",
    "DECIMAL",
    "STRING",
    "Fill",
    "OrderSubmitted",
    "ConfigChanged",
    _Text("x"),
    _Number(5),
]
TRICKY = st.one_of(st.sampled_from(TRICKY_VALUES), st.text(max_size=6), st.integers(-(2**64), 2**64))


def _base_events() -> list[dict[str, Any]]:
    built = [build(**kwargs) for build, kwargs in VALID.values()]
    simulated = list(simulate(SimulationParams(events=400, seed=5, anomaly_rate=0.1)))
    build, kwargs = VALID["OrderSubmitted"]
    market = build(**(kwargs | {"order_type": "MARKET", "limit_price": None}))
    return [*built, *simulated, market]


BASE_EVENTS = _base_events()


@st.composite
def _near_valid(draw: st.DrawFn) -> dict[str, Any]:
    event = dict(draw(st.sampled_from(BASE_EVENTS)))
    names = list(event)
    for name in draw(st.lists(st.sampled_from(names), max_size=3)):
        event[name] = draw(TRICKY)
    if draw(st.integers(0, 9)) == 0:
        event.pop(draw(st.sampled_from(names)))
    if draw(st.integers(0, 9)) == 0:
        event[draw(st.sampled_from(["extra", "venue", "reject_code", "limit_price"]))] = draw(TRICKY)
    return event


def _check_against_builder(event: dict[str, Any]) -> None:
    try:
        encoder = CHECKED[event["event_type"]]
    except (KeyError, TypeError):
        return  # EventProducer sends such an event to validate_event, which refuses it
    assert encoder is not None
    try:
        value = encoder(event)
    except UnicodeEncodeError:
        value = None
    try:
        checked = builders.validate_event(event)
    except ValueError:
        assert value is None, event
        return
    if value is not None:
        assert _typed(checked) == _typed(event | {k: None for k in set(checked) - set(event)})
        assert value == encode(checked)


def test_the_checked_path_accepts_only_what_the_builder_returns_unchanged() -> None:
    """Every field of one event per type (both kinds of order), set to every tricky value in turn."""
    bases = [build(**kwargs) for build, kwargs in VALID.values()]
    build, kwargs = VALID["OrderSubmitted"]
    bases.append(build(**(kwargs | {"order_type": "MARKET", "limit_price": None})))
    for base in bases:
        for name in base:
            for value in TRICKY_VALUES:
                _check_against_builder(base | {name: value})
            _check_against_builder({k: v for k, v in base.items() if k != name})


@settings(max_examples=2000, deadline=None)
@given(_near_valid())
def test_the_checked_path_with_several_odd_fields(event: dict[str, Any]) -> None:
    _check_against_builder(event)
