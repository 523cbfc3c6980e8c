"""The replication client's receive buffer (agent/sources/mysqlwire.py): packets read straight into one
buffer and copied out once must come out whole and in order however the bytes arrive — cut anywhere
between reads, one large event in several 16 MB packets, a buffer that moves its unread bytes to the front
and one that grows for a large event and shrinks again after it."""

from __future__ import annotations

import socket
import threading

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sources import mysqlwire
from agent.sources.mysqlwire import MAX_PACKET, Connection


def _packets(payload: bytes, seq: int = 0) -> bytes:
    out = b""
    while True:
        chunk, payload = payload[:MAX_PACKET], payload[MAX_PACKET:]
        out += len(chunk).to_bytes(3, "little") + bytes([seq & 0xFF]) + chunk
        seq += 1
        if len(chunk) < MAX_PACKET:
            return out


def _connection(data: bytes, cuts: list[int]) -> Connection:
    """A Connection whose socket delivers `data` in pieces ending at `cuts`."""
    a, b = socket.socketpair()
    conn = Connection("/test", 0, "u", "", connect_timeout=5)
    conn.sock = a

    def feed():
        last = 0
        try:
            for c in [*sorted(set(cuts)), len(data)]:
                if c > last:             # an empty send after the reader closed would fail with EPIPE
                    b.sendall(data[last:c])
                last = c
        except (BrokenPipeError, ConnectionResetError):
            pass                         # the reader closed early: its own assertion says why
        finally:
            b.close()

    threading.Thread(target=feed, daemon=True).start()
    return conn


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=30), st.data())
def test_events_come_out_whole_however_the_bytes_arrive(events, data):
    stream = b"".join(_packets(b"\x00" + e, i) for i, e in enumerate(events))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    conn = _connection(stream, cuts)
    try:
        assert [conn.read_event(5) for _ in events] == events
    finally:
        conn.close()


def test_a_large_event_in_several_packets_then_small_ones(monkeypatch):
    monkeypatch.setattr(mysqlwire, "BUFFER_SIZE", 1 << 16)      # small: the buffer moves and grows often
    monkeypatch.setattr(mysqlwire, "READ_SIZE", 1 << 12)
    big = bytes(range(256)) * (MAX_PACKET // 256 + 300)          # more than one 16 MB packet
    small = [bytes([i]) * (i * 37 % 5000 + 1) for i in range(200)]
    stream = _packets(b"\x00" + big) + b"".join(_packets(b"\x00" + s, 1) for s in small)
    conn = _connection(stream, list(range(0, len(stream), 1_000_003)))
    try:
        assert conn.read_event(5) == big
        assert [conn.read_event(5) for _ in small] == small
        assert len(conn._rbuf) <= 2 * (1 << 16) + 5000          # back to its usual size after the large event
        with pytest.raises(mysqlwire.WireError, match="closed by the server"):
            conn.read_event(5)
    finally:
        conn.close()
