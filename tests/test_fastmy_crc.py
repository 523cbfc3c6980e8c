"""The extension's CRC-32 of binlog events (agent/fastmy_crc.c: 64-byte PCLMULQDQ folds for the bulk, a
byte table for the rest) against zlib.crc32, the reference the pure path uses: generated data of every
length around the fold and block sizes, at every alignment, with any start value; and the event checksum
check on both paths, accepting the same events and refusing the same damaged ones."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import fastmy
from agent.binlog import BinlogError, BinlogParser
from tests.plugins import property_examples

pytestmark = pytest.mark.skipif(not fastmy.compiled(), reason="agent._fastmy is not built (no C compiler)")

# lengths straddling the table-only limit (80), the 64-byte lanes and the 16-byte blocks
LENGTHS = st.one_of(st.integers(0, 300), st.integers(60, 100), st.integers(1000, 20000))


@given(data=st.data(), start=st.integers(0, 2**32 - 1), offset=st.integers(0, 15))
@settings(max_examples=property_examples(300), deadline=None)
def test_crc32_is_zlibs(data, start, offset):
    from agent import _fastmy
    n = data.draw(LENGTHS)
    raw = data.draw(st.binary(min_size=n + offset, max_size=n + offset))
    piece = memoryview(raw)[offset:]                 # any alignment of the first byte
    assert _fastmy.crc32(piece) == zlib.crc32(piece)
    assert _fastmy.crc32(piece, start) == zlib.crc32(piece, start)
    # a CRC carried over two pieces is the CRC of the whole
    cut = data.draw(st.integers(0, len(piece)))
    assert _fastmy.crc32(piece[cut:], _fastmy.crc32(piece[:cut])) == zlib.crc32(piece)


def test_crc32_edge_values():
    from agent import _fastmy
    for raw in (b"", b"\x00" * 4096, b"\xff" * 4096, bytes(range(256)) * 33):
        for start in (0, 1, 0xFFFFFFFF, 2**40 + 5):      # as zlib: only the low 32 bits of the start count
            assert _fastmy.crc32(raw, start) == zlib.crc32(raw, start & 0xFFFFFFFF)


@given(body=st.binary(min_size=0, max_size=9000), flip=st.integers(0, 2**20), bit=st.integers(0, 7))
@settings(max_examples=property_examples(200), deadline=None)
def test_checksum_check_on_both_paths(body, flip, bit):
    """An event with its checksum passes on both paths; with one bit flipped anywhere (body or trailer)
    both refuse it."""
    ev = body + zlib.crc32(body).to_bytes(4, "little")
    compiled, pure = fastmy.checksum_checker(force_pure=False), fastmy.checksum_checker(force_pure=True)
    assert compiled is not pure
    assert compiled(ev) and pure(ev)
    bad = bytearray(ev)
    bad[flip % len(bad)] ^= 1 << bit
    assert not compiled(bytes(bad)) and not pure(bytes(bad))
    assert compiled(ev[:3]) == pure(ev[:3]) is False      # shorter than a trailer


def test_parser_refuses_a_damaged_event_on_both_paths(monkeypatch):
    from tests.test_binlog import event, fde
    for pure in ("1", "0"):
        monkeypatch.setenv(fastmy.PURE_ENV, pure)
        p = BinlogParser()
        p.parse(fde())
        good = event(4, b"\x04\x00\x00\x00\x00\x00\x00\x00mysql-bin.000002")   # ROTATE
        p.parse(good)
        bad = bytearray(good)
        bad[25] ^= 0x20
        with pytest.raises(BinlogError, match="checksum"):
            p.parse(bytes(bad))
