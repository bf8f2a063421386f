"""The digest's C framing loop (``projector/_digest_frames.c``) hashes exactly the documented frames.

The reference is the framing written out here from the docstring of :mod:`projector.digest`: three
4-byte big-endian lengths (table, key, value), then the three byte strings, all after the domain.
Every value is a sealed row, and both loops refuse one whose CRC-32 (zlib's) does not match.
``tests/test_native.py`` also compares whole-state digests of the native and the interpreted build.
"""

from __future__ import annotations

import struct
import zlib

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from projector import digest, encoding
from projector.digest import DIGEST_DOMAIN, RecordOrderError, digest_rows, new_hasher
from projector.encoding import CorruptRow, seal
from tests.test_native import native_build


def _reference(table: str, rows: list[tuple[bytes, bytes]]) -> str:
    hasher = xxhash.xxh3_128(DIGEST_DOMAIN)
    name = table.encode()
    for key, value in rows:
        hasher.update(struct.pack(">III", len(name), len(key), len(value)) + name + key + value)
    return str(hasher.hexdigest())


def _digest(table: str, rows: object) -> str:
    hasher = new_hasher()
    digest_rows(hasher, table, rows)  # type: ignore[arg-type]
    return str(hasher.hexdigest())


@native_build
def test_the_native_build_hashes_with_the_c_loop() -> None:
    assert digest._FEED is not None


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.binary(max_size=40), st.binary(max_size=300), max_size=60), st.text(max_size=12))
def test_any_sorted_rows_hash_as_the_documented_frames(table: dict[bytes, bytes], name: str) -> None:
    rows = sorted((key, seal(key, payload)) for key, payload in table.items())
    assert _digest(name, iter(rows)) == _reference(name, rows)


def test_rows_spanning_several_flushes_and_empty_parts() -> None:
    big = b"\xab" * 700_000  # frames cross the 1 MiB hand-off to the hasher more than once
    payloads = [(b"", b""), (b"\x00", big), (b"\x00\x00", b""), (b"a", big), (b"b", b"x" * 3_000_000)]
    rows = [(key, seal(key, payload)) for key, payload in payloads]
    assert _digest("orders", rows) == _reference("orders", rows)
    assert _digest("orders", []) == _reference("orders", [])


@pytest.fixture(params=["native", "interpreted"])
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test taking it runs with the C loop (when built) and with the Python loop."""
    if request.param == "interpreted":
        monkeypatch.setattr(digest, "_FEED", None)
    elif digest._FEED is None:
        pytest.skip("the native build is not in use")
    return str(request.param)


@settings(max_examples=100, deadline=None)
@given(key=st.binary(max_size=40), payload=st.binary(min_size=1, max_size=300), data=st.data())
def test_the_checksum_is_zlibs_crc32_of_key_and_payload(
    key: bytes, payload: bytes, data: st.DataObject
) -> None:
    sealed = seal(key, payload)
    assert sealed == payload + zlib.crc32(key + payload).to_bytes(4, "big")
    assert encoding._python_seal(key, payload) == sealed  # the C seal, when built, and Python's agree
    assert encoding.unseal("orders", key, sealed) == encoding._python_unseal(key, sealed) == payload
    where = data.draw(st.integers(0, len(sealed) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(sealed)
    damaged[where] ^= 1 << bit
    for feed in (digest._FEED, None):
        original = digest._FEED
        digest._FEED = feed
        try:
            _digest("orders", [(key, sealed)])
            with pytest.raises(CorruptRow):
                _digest("orders", [(key, bytes(damaged))])
            with pytest.raises(CorruptRow):
                encoding.unseal("orders", key, bytes(damaged))
            assert encoding._python_unseal(key, bytes(damaged)) is None
        finally:
            digest._FEED = original


@pytest.mark.parametrize(
    "rows",
    [
        [(b"a", b"123")],
        [(b"a", b"")],
        [(b"a", seal(b"a", b"[1,5]")), (b"b", seal(b"a", b"[1,5]"))],
        [(b"a", seal(b"a", b"[1,5]")), (b"b", seal(b"b", b"[1,5]")[:-1] + b"\x00")],
        [(b"a", seal(b"a", b"[1,5]")), (b"b", b"[1,6]" + seal(b"b", b"[1,5]")[-4:])],
    ],
    ids=["too-short", "empty", "moved-to-another-key", "checksum-byte", "payload-digit"],
)
def test_a_damaged_row_is_refused_and_named(rows: list[tuple[bytes, bytes]], loop: str) -> None:
    with pytest.raises(CorruptRow, match=r"the positions row with key b'(a|b)' is damaged"):
        _digest("positions", rows)


@pytest.mark.parametrize(
    ("rows", "named"),
    [
        ([(b"b", b"1"), (b"b", b"2")], "b'b' does not follow b'b'"),
        ([(b"b", b"1"), (b"a", b"2")], "b'a' does not follow b'b'"),
        ([(b"ab", b"1"), (b"a", b"2")], "b'a' does not follow b'ab'"),
        ([(b"a", b""), (b"c", b""), (b"\x00", b"")], "b'\\\\x00' does not follow b'c'"),
    ],
)
def test_a_key_out_of_order_is_refused_and_named(rows: list[tuple[bytes, bytes]], named: str) -> None:
    with pytest.raises(RecordOrderError, match=f"positions: key {named}"):
        _digest("positions", [(key, seal(key, value)) for key, value in rows])


@native_build
@pytest.mark.parametrize("row", [(b"a",), ("a", b"1"), (b"a", "1"), [b"a", b"1"], b"ab"])
def test_rows_that_are_not_pairs_of_bytes_raise_type_error(row: object) -> None:
    with pytest.raises(TypeError, match="bytes"):
        _digest("orders", [row])
